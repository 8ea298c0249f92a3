//! Mail client autoconfiguration (Thunderbird's "autoconfig", also read by other clients): the
//! `clientConfig` XML at `/mail/config-v1.1.xml` and `/.well-known/autoconfig/mail/
//! config-v1.1.xml`, on an optional public HTTP listener (`autoconfig.listen`), so that a user
//! types only an address and a password. It offers what this server's listeners offer: POP3
//! over TLS, POP3 with STARTTLS, submission over TLS and with STARTTLS (or plain, without a
//! certificate), always with the full address as the user name.

use crate::config::Config;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;
use tern_store::Directory;

/// What the XML says, taken from the configuration once.
pub struct Autoconfig {
    /// The name clients connect to.
    hostname: String,
    /// (port, socketType) of the POP3 offers, most secure first.
    pop3: Vec<(u16, &'static str)>,
    /// (port, socketType) of the submission offers.
    smtp: Vec<(u16, &'static str)>,
    directory: Arc<dyn Directory>,
}

/// The listeners a client may use, as bound.
pub struct Listeners {
    pub pop3: u16,
    pub pop3s: Option<u16>,
    pub submission: Option<u16>,
    pub submissions: Option<u16>,
}

impl Listeners {
    /// The ports the configuration asks for.
    pub fn configured(config: &Config) -> Self {
        Self {
            pop3: config.pop3.listen.port(),
            pop3s: config.pop3.tls_listen.map(|a| a.port()),
            submission: config.smtp.submission_listen.map(|a| a.port()),
            submissions: config.smtp.submissions_listen.map(|a| a.port()),
        }
    }
}

impl Autoconfig {
    pub fn new(config: &Config, listeners: &Listeners, directory: Arc<dyn Directory>) -> Self {
        let starttls = if config.tls.enabled() {
            "STARTTLS"
        } else {
            "plain"
        };
        let mut pop3 = Vec::new();
        if let Some(port) = listeners.pop3s {
            pop3.push((port, "SSL"));
        }
        pop3.push((listeners.pop3, starttls));
        let mut smtp = Vec::new();
        if let Some(port) = listeners.submissions {
            smtp.push((port, "SSL"));
        }
        if let Some(port) = listeners.submission {
            smtp.push((port, starttls));
        }
        Self {
            hostname: config
                .autoconfig
                .hostname
                .clone()
                .unwrap_or_else(|| config.server.hostname.clone()),
            pop3,
            smtp,
            directory,
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/mail/config-v1.1.xml", get(config_xml))
            .route(
                "/.well-known/autoconfig/mail/config-v1.1.xml",
                get(config_xml),
            )
            .with_state(self)
    }

    /// The XML for an address of `domain`.
    fn xml(&self, domain: &str) -> String {
        let server = |kind: &str, tag: &str, port: u16, socket: &str| {
            format!(
                "    <{tag} type=\"{kind}\">\n      <hostname>{}</hostname>\n      <port>{port}</port>\n      \
                 <socketType>{socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      \
                 <username>%EMAILADDRESS%</username>\n    </{tag}>\n",
                xml_escape(&self.hostname)
            )
        };
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  \
             <emailProvider id=\"{d}\">\n    <domain>{d}</domain>\n    <displayName>{d}</displayName>\n    \
             <displayShortName>{d}</displayShortName>\n",
            d = xml_escape(domain)
        );
        for (port, socket) in &self.pop3 {
            out.push_str(&server("pop3", "incomingServer", *port, socket));
        }
        for (port, socket) in &self.smtp {
            out.push_str(&server("smtp", "outgoingServer", *port, socket));
        }
        out.push_str("  </emailProvider>\n</clientConfig>\n");
        out
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `?emailaddress=user@domain` (Thunderbird sends it): the domain must be one this server
/// serves; without the parameter, the first served domain in alphabetical order.
async fn config_xml(
    State(a): State<Arc<Autoconfig>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let domain = match q.get("emailaddress") {
        Some(address) => match address.rsplit_once('@') {
            Some((_, d)) if crate::names::valid_domain(&d.to_ascii_lowercase()) => {
                d.to_ascii_lowercase()
            }
            _ => {
                return (StatusCode::BAD_REQUEST, "emailaddress is not an address\n")
                    .into_response()
            }
        },
        None => match a.directory.list_domains().await {
            Ok(mut d) => {
                d.sort();
                match d.into_iter().next() {
                    Some(d) => d,
                    None => return StatusCode::NOT_FOUND.into_response(),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "autoconfig: domains could not be read");
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        },
    };
    match a.directory.domain_exists(&domain).await {
        Ok(true) => {}
        Ok(false) => return (StatusCode::NOT_FOUND, "no such domain here\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "autoconfig: domain lookup failed");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        a.xml(&domain),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_follow_the_listeners() {
        let mut c = Config::default();
        c.server.hostname = "mx.example.com".into();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Directory> = Arc::new(
            tern_store::embedded::EmbeddedStore::open(dir.path(), Default::default()).unwrap(),
        );
        let a = Autoconfig::new(&c, &Listeners::configured(&c), store.clone());
        let xml = a.xml("example.com");
        assert!(xml.contains("<hostname>mx.example.com</hostname>"), "{xml}");
        assert!(
            xml.contains("<port>1110</port>\n      <socketType>plain</socketType>"),
            "{xml}"
        );
        assert!(
            !xml.contains("outgoingServer"),
            "no submission listener: {xml}"
        );
        c.tls.cert_file = Some("c.pem".into());
        c.tls.key_file = Some("k.pem".into());
        c.pop3.tls_listen = Some("0.0.0.0:995".parse().unwrap());
        c.smtp.submission_listen = Some("0.0.0.0:587".parse().unwrap());
        c.autoconfig.hostname = Some("mail.example.com".into());
        let xml = Autoconfig::new(&c, &Listeners::configured(&c), store).xml("a&b");
        let ssl = xml
            .find("<port>995</port>\n      <socketType>SSL</socketType>")
            .unwrap();
        let starttls = xml.find("<socketType>STARTTLS</socketType>").unwrap();
        assert!(ssl < starttls, "the most secure first: {xml}");
        assert!(
            xml.contains("<port>587</port>") && xml.contains("a&amp;b"),
            "{xml}"
        );
    }
}
