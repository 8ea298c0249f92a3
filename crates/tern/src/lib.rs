//! The `tern` mail server: configuration, listeners, the admin API and the CLI's pieces.
//! Protocol rules live in `tern-proto`, storage in `tern-store`; this crate wires them to
//! sockets.

pub mod admin;
pub mod auth;
pub mod autoconfig;
pub mod channels;
pub mod config;
pub mod driver;
pub mod import;
mod io;
pub mod listing;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod outbound;
pub mod pop3;
pub mod proxy;
pub mod quota;
pub mod repository;
pub mod rewrite;
pub mod server;
pub mod smtp;
pub mod srs;
pub mod tasks;
pub mod throttle;
pub mod tls;
