//! The `tern` command: `tern serve` runs the server; the other subcommands administer a running
//! one through its admin API.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use tern::admin::client::{self, encode_segment};
use tern::config::{Config, LogFormat};

#[derive(Parser)]
#[command(name = "tern", version, about = "Tern: a POP3 + SMTP mail server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded store under ./tern-data unless configured otherwise).
    Serve(ServeArgs),
    /// Manage the domains a running server accepts mail for.
    Domain {
        #[command(subcommand)]
        action: DomainAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Manage users (named by their full address, user@domain).
    User {
        #[command(subcommand)]
        action: UserAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Aliases: other addresses of a user (`tern alias add info@example.com alice@example.com`).
    Alias {
        #[command(subcommand)]
        action: RewriteAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Forwards: a user's mail goes (also) to other addresses; name the user itself as a
    /// target to keep a copy.
    Forward {
        #[command(subcommand)]
        action: RewriteAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Groups: a virtual address whose mail goes to every member.
    Group {
        #[command(subcommand)]
        action: RewriteAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The outgoing queue of a running server (mail for other domains).
    Queue {
        #[command(subcommand)]
        action: QueueAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Copies mailboxes onto a running server, keeping their UIDLs (POP3 clients that leave
    /// mail on the server download nothing again). Idempotent: a second run copies nothing.
    Import {
        #[command(subcommand)]
        source: ImportSource,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Load generator for any SMTP/LMTP and POP3 server (Tern, Dovecot, ...).
    Bench {
        #[command(subcommand)]
        action: BenchAction,
    },
    /// Certificates.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// DKIM keys.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
    },
    /// Cassandra tools.
    Cassandra {
        #[command(subcommand)]
        action: CassandraAction,
    },
    /// Check a configuration file and print the effective configuration errors, if any.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "TERN_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the embedded store.
    #[arg(long, env = "TERN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    smtp_listen: Option<SocketAddr>,
    #[arg(long)]
    pop3_listen: Option<SocketAddr>,
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Log one JSON object per line.
    #[arg(long)]
    log_json: bool,
}

#[derive(clap::Args)]
struct AdminArgs {
    /// Base URL of the admin API.
    #[arg(
        long,
        env = "TERN_ADMIN_URL",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    admin_url: String,
    /// Bearer token of the admin API (admin.token), if it has one.
    #[arg(long, env = "TERN_ADMIN_TOKEN", global = true, hide_env_values = true)]
    admin_token: Option<String>,
}

#[derive(clap::Args, Clone)]
struct BenchUsers {
    /// Number of bench users: {prefix}{0..users}@{domain}.
    #[arg(long, default_value_t = 100)]
    users: usize,
    #[arg(long, default_value = "bench")]
    prefix: String,
    #[arg(long, default_value = "bench.test")]
    domain: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
}

#[derive(Subcommand)]
enum BenchAction {
    /// Create the bench domain and users on a running Tern (admin API).
    Setup {
        #[command(flatten)]
        users: BenchUsers,
        #[arg(long, env = "TERN_ADMIN_URL", default_value = "http://127.0.0.1:8000")]
        admin_url: String,
    },
    /// Deliver messages over SMTP (or LMTP) and measure.
    Deliver {
        #[arg(long, default_value = "127.0.0.1:2525")]
        server: SocketAddr,
        #[arg(long)]
        lmtp: bool,
        #[arg(long, default_value_t = 10_000)]
        messages: u64,
        /// Message size in octets.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Reuse connections (default: one connection per message).
        #[arg(long)]
        reuse: bool,
        /// Pipeline MAIL, RCPT and DATA.
        #[arg(long)]
        pipeline: bool,
        #[command(flatten)]
        users: BenchUsers,
    },
    /// Submit messages to a relay (Tern, Postfix...) for a domain it routes to a sink this
    /// command runs, and measure until the sink has them all.
    Relay {
        /// The relay's SMTP listener.
        #[arg(long, default_value = "127.0.0.1:2525")]
        server: SocketAddr,
        /// Where the sink listens: the relay must route --domain here.
        #[arg(long, default_value = "127.0.0.1:2626")]
        sink: SocketAddr,
        #[arg(long, default_value = "sink.test")]
        domain: String,
        #[arg(long, default_value_t = 10_000)]
        messages: u64,
        #[arg(long, default_value_t = 4096)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long)]
        reuse: bool,
        #[arg(long)]
        pipeline: bool,
        /// Seconds to wait for the last message at the sink.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Open many connections, read their greetings and hold them idle (to measure the server's
    /// memory per idle connection from outside).
    Idle {
        #[arg(long, default_value = "127.0.0.1:1110")]
        server: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Seconds to hold them.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
    },
    /// Forward TCP connections with a fixed delay added in each direction (a WAN between
    /// datacenters on one machine); runs until stopped.
    DelayProxy {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
        /// Milliseconds added to each direction.
        #[arg(long, default_value_t = 25)]
        delay_ms: u64,
    },
    /// Run POP3 sessions back to back for a duration and measure.
    Pop3 {
        #[arg(long, default_value = "127.0.0.1:1110")]
        server: SocketAddr,
        #[arg(long, value_enum, default_value = "stat")]
        mode: tern_bench::Pop3Mode,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[command(flatten)]
        users: BenchUsers,
    },
}

#[derive(Subcommand)]
enum CertAction {
    /// Write a self-signed certificate (cert.pem) and its key (key.pem) for development.
    SelfSigned {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum CassandraAction {
    /// Print the CQL that creates the schema (keyspace and replication from the config), for
    /// operators who apply it by hand with `cassandra.create_schema = false`.
    Schema {
        #[arg(long, env = "TERN_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DomainAction {
    Add { domain: String },
    Remove { domain: String },
    List,
}

/// `tern alias|forward|group`: SOURCE is the alias, the forwarding user or the group; TARGET is
/// the user, the forward destination or the member.
#[derive(Subcommand)]
enum RewriteAction {
    Add {
        source: String,
        target: String,
    },
    Remove {
        source: String,
        target: String,
    },
    /// Every source, or the targets of one.
    List {
        source: Option<String>,
    },
}

#[derive(Subcommand)]
enum DkimAction {
    /// Make a signing key, write it to DIR/DOMAIN.SELECTOR.pem and print the DNS TXT record
    /// to publish and the configuration to add.
    Keygen {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: tern::outbound::dkim::KeyAlgorithm,
        /// Directory of the key file.
        #[arg(long, default_value = "dkim")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ImportSource {
    /// From another POP3 server. ACCOUNTS: one account per line, `user password [target]`
    /// (whitespace-separated; the target Tern user defaults to the same address), or, with
    /// --master-user, `user [target]`.
    Pop3 {
        /// The source server, host:port.
        #[arg(long)]
        server: String,
        /// TLS from the first byte (POP3S), the server's certificate checked against --ca-file.
        #[arg(long, requires = "ca_file")]
        tls: bool,
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// A master user of the source server (Dovecot's), who opens every account; its
        /// password is read from TERN_IMPORT_MASTER_PASSWORD.
        #[arg(long)]
        master_user: Option<String>,
        /// What the source puts between the account and the master user's name.
        #[arg(long, default_value = "*")]
        master_separator: String,
        /// The accounts file.
        accounts: PathBuf,
    },
    /// From Maildir folders on the server's machine, with Dovecot's dovecot-uidlist.
    /// ACCOUNTS: one per line, `maildir-path target-user`.
    Maildir { accounts: PathBuf },
}

#[derive(Subcommand)]
enum QueueAction {
    /// One line per queued mail: id, next attempt, attempts, sender, recipients, last error.
    List {
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Make every queued mail due now.
    Flush,
    /// Delete queued mails: all of them, or those matching one selector.
    Delete {
        /// Every mail.
        #[arg(long, conflicts_with_all = ["sender", "recipient", "id"])]
        all: bool,
        /// Mails from this sender.
        #[arg(long, conflicts_with_all = ["recipient", "id"])]
        sender: Option<String>,
        /// This recipient (other recipients of the same mail stay queued).
        #[arg(long, conflicts_with = "id")]
        recipient: Option<String>,
        /// The mail with this id (as `tern queue list` shows it).
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user (an error if it exists); the password is read from standard input.
    Add {
        user: String,
    },
    /// Change a user's password (or create the user); the password is read from standard input.
    Password {
        user: String,
    },
    Remove {
        user: String,
    },
    List,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        quiet_on_closed_stdout();
    }
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Domain { action, admin } => domain(action, &admin),
        Command::User { action, admin } => user(action, &admin),
        Command::Queue { action, admin } => queue(action, &admin),
        Command::Import { source, admin } => import(source, &admin),
        Command::Alias { action, admin } => rewrite(RewriteKind::Alias, action, &admin),
        Command::Forward { action, admin } => rewrite(RewriteKind::Forward, action, &admin),
        Command::Group { action, admin } => rewrite(RewriteKind::Group, action, &admin),
        Command::Bench { action } => bench(action),
        Command::Cert {
            action: CertAction::SelfSigned { domain, out },
        } => {
            let (cert, key) = tern::tls::write_self_signed(&domain, &out)?;
            println!("wrote {} and {}", cert.display(), key.display());
            println!(
                "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
                cert.display(),
                key.display()
            );
            Ok(())
        }
        Command::Dkim {
            action:
                DkimAction::Keygen {
                    domain,
                    selector,
                    algorithm,
                    out,
                },
        } => {
            let (path, record) = tern::outbound::dkim::keygen(&domain, &selector, algorithm, &out)?;
            println!("wrote {}", path.display());
            println!("\nPublish this DNS record:\n{record}");
            println!(
                "\nAnd add to the configuration:\n[[outbound.dkim]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nprivate_key_file = \"{}\"",
                path.display()
            );
            Ok(())
        }
        Command::Cassandra {
            action: CassandraAction::Schema { config },
        } => {
            let config = match config {
                Some(path) => Config::from_file(&path)?,
                None => Config::default(),
            };
            let o = config.cassandra.options();
            print!(
                "{}",
                tern_store::cassandra::schema::script(&o.keyspace, &o.replication)
            );
            Ok(())
        }
        Command::CheckConfig { config: path } => {
            // Parsing stops at the first syntax or type error; past that, every check `serve`
            // makes without a socket runs and every problem is listed.
            let config = Config::from_toml_unchecked_file(&path)?;
            let problems = tern::server::preflight(&config);
            if problems.is_empty() {
                println!("{}: ok", path.display());
                return Ok(());
            }
            for p in &problems {
                eprintln!("{}: {p}", path.display());
            }
            bail!("{}: {} problem(s)", path.display(), problems.len());
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Values are checked after the command line has had its say, all at once (preflight).
    let mut config = match &args.config {
        Some(path) => Config::from_toml_unchecked_file(path)?,
        None => Config::default(),
    };
    if let Some(d) = args.data_dir {
        config.server.data_dir = d;
    }
    if let Some(a) = args.smtp_listen {
        config.smtp.listen = a;
    }
    if let Some(a) = args.pop3_listen {
        config.pop3.listen = a;
    }
    if let Some(a) = args.admin_listen {
        config.admin.listen = a;
    }
    if args.log_json {
        config.log.format = LogFormat::Json;
    }
    let problems = tern::server::preflight(&config);
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    tern::logging::init(&config.log);
    return_large_allocations_to_the_system();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        // Registered before anything is announced, so that a stop requested the moment the
        // server says it is ready is a graceful stop, not the signal's default death.
        let stop = stop_signal()?;
        let server = tern::server::Server::start(config).await?;
        // Under systemd (Type=notify): ready once every listener is bound. Elsewhere there is
        // no NOTIFY_SOCKET and this does nothing.
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %e, "could not tell systemd the server is ready");
        }
        server
            .run_until(async {
                stop.await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            })
            .await;
        Ok(())
    })
}

/// Argon2 allocates its whole memory cost (19 MiB by default) for every hash. glibc's malloc
/// raises its mmap threshold after the first such block is freed, after which these blocks come
/// from per-thread heaps that keep the memory: measured, hundreds of MiB resident after a burst
/// of first logins. A fixed threshold makes every large block an mmap returned on free.
fn return_large_allocations_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator tunable; it is called before any other thread
    // exists and takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

/// The administration and bench commands end quietly when their output is cut short
/// (`tern user list | head`), as Unix tools do, instead of panicking on a write to a closed
/// pipe (Rust ignores SIGPIPE, so `println!` meets EPIPE). Not for `serve`, which must outlive
/// any peer that goes away.
fn quiet_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// SIGINT or SIGTERM, listened for from now on.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn bench(action: BenchAction) -> anyhow::Result<()> {
    use std::time::Duration;
    use tern_bench::{run_deliver, run_pop3, DeliverArgs, Pop3Args};
    let timeout = Duration::from_secs(60);
    let runtime = tokio::runtime::Runtime::new()?;
    let report = match action {
        BenchAction::Setup { users, admin_url } => {
            tern::admin::client::create_numbered_users(
                &admin_url,
                &users.domain,
                &users.prefix,
                users.users,
                &users.password,
            )?;
            println!(
                "created {} users {}N@{}",
                users.users, users.prefix, users.domain
            );
            return Ok(());
        }
        BenchAction::DelayProxy {
            listen,
            to,
            delay_ms,
        } => {
            return runtime.block_on(tern_bench::run_delay_proxy(
                listen,
                to,
                Duration::from_millis(delay_ms),
            ));
        }
        BenchAction::Idle {
            server,
            connections,
            hold,
        } => {
            let held = runtime.block_on(tern_bench::hold_idle(
                server,
                connections,
                Duration::from_secs_f64(hold),
            ))?;
            println!("held {held} connections");
            return Ok(());
        }
        BenchAction::Relay {
            server,
            sink,
            domain,
            messages,
            size,
            concurrency,
            reuse,
            pipeline,
            timeout,
        } => {
            let report = runtime.block_on(tern_bench::run_relay(tern_bench::RelayArgs {
                server,
                sink,
                domain,
                messages,
                size,
                concurrency,
                reuse,
                pipeline,
                timeout: Duration::from_secs(timeout),
            }))?;
            report.print();
            if report.relayed < report.messages {
                bail!(
                    "{} of {} messages reached the sink",
                    report.relayed,
                    report.messages
                );
            }
            return Ok(());
        }
        BenchAction::Deliver {
            server,
            lmtp,
            messages,
            size,
            concurrency,
            reuse,
            pipeline,
            users,
        } => runtime.block_on(run_deliver(DeliverArgs {
            server,
            lmtp,
            messages,
            size,
            users: users.users,
            prefix: users.prefix,
            domain: users.domain,
            concurrency,
            reuse,
            pipeline,
            timeout,
        })),
        BenchAction::Pop3 {
            server,
            mode,
            concurrency,
            duration,
            users,
        } => runtime.block_on(run_pop3(Pop3Args {
            server,
            users: users.users,
            prefix: users.prefix,
            domain: users.domain,
            password: users.password,
            concurrency,
            duration: Duration::from_secs_f64(duration.max(0.1)),
            mode,
            timeout,
        })),
    };
    report.print();
    if report.operations == 0 {
        bail!("no operation succeeded");
    }
    Ok(())
}

/// Runs one admin call and turns a non-2xx answer into an error carrying the API's message.
fn call(base: &AdminArgs, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<String> {
    let r = client::request_with_token(
        &base.admin_url,
        base.admin_token.as_deref(),
        method,
        path,
        body,
    )?;
    if !(200..300).contains(&r.status) {
        let message = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or(r.body);
        bail!("{method} {path}: HTTP {}: {message}", r.status);
    }
    Ok(r.body)
}

fn domain(action: DomainAction, base: &AdminArgs) -> anyhow::Result<()> {
    match action {
        DomainAction::Add { domain } => {
            call(
                base,
                "PUT",
                &format!("/domains/{}", encode_segment(&domain)),
                None,
            )?;
            println!("domain {domain} added");
        }
        DomainAction::Remove { domain } => {
            call(
                base,
                "DELETE",
                &format!("/domains/{}", encode_segment(&domain)),
                None,
            )?;
            println!("domain {domain} removed");
        }
        DomainAction::List => {
            let body = call(base, "GET", "/domains", None)?;
            let domains: Vec<String> = serde_json::from_str(&body).context("unexpected answer")?;
            for d in domains {
                println!("{d}");
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum RewriteKind {
    Alias,
    Forward,
    Group,
}

/// James's routes for each kind: aliases are listed by user (`/address/aliases/{user}` gives
/// the aliases of a user), forwards and groups by source.
fn rewrite(kind: RewriteKind, action: RewriteAction, base: &AdminArgs) -> anyhow::Result<()> {
    let e = |s: &str| encode_segment(s);
    let entry = |source: &str, target: &str| match kind {
        RewriteKind::Alias => format!("/address/aliases/{}/sources/{}", e(target), e(source)),
        RewriteKind::Forward => format!("/address/forwards/{}/targets/{}", e(source), e(target)),
        RewriteKind::Group => format!("/address/groups/{}/{}", e(source), e(target)),
    };
    match action {
        RewriteAction::Add { source, target } => {
            call(base, "PUT", &entry(&source, &target), None)?;
            println!("{source} -> {target} added");
        }
        RewriteAction::Remove { source, target } => {
            call(base, "DELETE", &entry(&source, &target), None)?;
            println!("{source} -> {target} removed");
        }
        RewriteAction::List { source } => {
            let lines: Vec<String> = match (kind, source) {
                (RewriteKind::Alias, None) => {
                    // Every alias with its user, from the whole table.
                    let body = call(base, "GET", "/mappings", None)?;
                    let all: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(&body).context("unexpected answer")?;
                    all.iter()
                        .flat_map(|(src, ms)| {
                            ms.as_array()
                                .into_iter()
                                .flatten()
                                .filter(|m| m["type"] == "Alias")
                                .map(move |m| {
                                    format!("{src} -> {}", m["mapping"].as_str().unwrap_or(""))
                                })
                        })
                        .collect()
                }
                (RewriteKind::Alias, Some(user)) => {
                    let body = call(base, "GET", &format!("/address/aliases/{}", e(&user)), None)?;
                    let v: Vec<serde_json::Value> =
                        serde_json::from_str(&body).context("unexpected answer")?;
                    v.iter()
                        .map(|a| format!("{} -> {user}", a["source"].as_str().unwrap_or("")))
                        .collect()
                }
                (k, None) => {
                    let path = match k {
                        RewriteKind::Forward => "/address/forwards",
                        _ => "/address/groups",
                    };
                    let body = call(base, "GET", path, None)?;
                    serde_json::from_str(&body).context("unexpected answer")?
                }
                (k, Some(src)) => {
                    let (path, field) = match k {
                        RewriteKind::Forward => {
                            (format!("/address/forwards/{}", e(&src)), "mailAddress")
                        }
                        _ => (format!("/address/groups/{}", e(&src)), ""),
                    };
                    let body = call(base, "GET", &path, None)?;
                    let v: Vec<serde_json::Value> =
                        serde_json::from_str(&body).context("unexpected answer")?;
                    v.iter()
                        .map(|t| {
                            let t = if field.is_empty() { t } else { &t[field] };
                            format!("{src} -> {}", t.as_str().unwrap_or(""))
                        })
                        .collect()
                }
            };
            for l in lines {
                println!("{l}");
            }
        }
    }
    Ok(())
}

/// Submits an import and follows it with a progress bar until it ends; prints a summary.
fn import(source: ImportSource, base: &AdminArgs) -> anyhow::Result<()> {
    let read_lines = |path: &std::path::Path| -> anyhow::Result<Vec<Vec<String>>> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect())
    };
    let request = match source {
        ImportSource::Pop3 {
            server,
            tls,
            ca_file,
            master_user,
            master_separator,
            accounts,
        } => {
            let master = match master_user {
                Some(user) => {
                    let password = std::env::var("TERN_IMPORT_MASTER_PASSWORD")
                        .context("--master-user needs TERN_IMPORT_MASTER_PASSWORD")?;
                    serde_json::json!({"user": user, "password": password, "separator": master_separator})
                }
                None => serde_json::Value::Null,
            };
            let mut list = Vec::new();
            for (i, f) in read_lines(&accounts)?.into_iter().enumerate() {
                let account = match (f.as_slice(), master.is_null()) {
                    ([user, password], true) => {
                        serde_json::json!({"user": user, "password": password})
                    }
                    ([user, password, target], true) => {
                        serde_json::json!({"user": user, "password": password, "target": target})
                    }
                    ([user], false) => serde_json::json!({ "user": user }),
                    ([user, target], false) => serde_json::json!({"user": user, "target": target}),
                    (_, with_passwords) => bail!(
                        "{} line {}: {}",
                        accounts.display(),
                        i + 1,
                        if with_passwords {
                            "`user password [target]`"
                        } else {
                            "`user [target]` (the master user opens it)"
                        }
                    ),
                };
                list.push(account);
            }
            serde_json::json!({"source": "pop3", "server": server, "tls": tls, "ca_file": ca_file, "master": master, "accounts": list})
        }
        ImportSource::Maildir { accounts } => {
            let mut list = Vec::new();
            for (i, f) in read_lines(&accounts)?.into_iter().enumerate() {
                match f.as_slice() {
                    [path, target] => {
                        list.push(serde_json::json!({"path": path, "target": target}))
                    }
                    _ => bail!(
                        "{} line {}: `maildir-path target-user`",
                        accounts.display(),
                        i + 1
                    ),
                }
            }
            serde_json::json!({"source": "maildir", "accounts": list})
        }
    };
    let total = request["accounts"].as_array().map_or(0, Vec::len) as u64;
    let body = call(base, "POST", "/imports", Some(&request.to_string()))?;
    let task: serde_json::Value = serde_json::from_str(&body).context("unexpected answer")?;
    let id = task["taskId"]
        .as_str()
        .context("no task id in the answer")?
        .to_string();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} accounts  {msg}")
            .context("progress bar")?,
    );
    let done = loop {
        let t: serde_json::Value =
            serde_json::from_str(&call(base, "GET", &format!("/tasks/{id}"), None)?)
                .context("unexpected answer")?;
        let info = &t["additionalInformation"];
        bar.set_position(info["accountsDone"].as_u64().unwrap_or(0));
        bar.set_message(format!(
            "{} messages copied, {} already there",
            info["messagesImported"], info["messagesSkipped"]
        ));
        if matches!(
            t["status"].as_str(),
            Some("completed" | "failed" | "canceled")
        ) {
            break t;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    bar.finish_and_clear();
    let info = &done["additionalInformation"];
    println!(
        "import {}: {} accounts, {} messages copied ({} octets), {} already there",
        done["status"].as_str().unwrap_or("?"),
        info["accountsDone"],
        info["messagesImported"],
        info["bytesImported"],
        info["messagesSkipped"]
    );
    let failed = info["failedAccounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for f in &failed {
        println!(
            "failed: {} -> {}: {}",
            f["account"].as_str().unwrap_or(""),
            f["target"].as_str().unwrap_or(""),
            f["error"].as_str().unwrap_or("")
        );
    }
    if done["status"] != "completed" || !failed.is_empty() {
        bail!("the import did not complete for every account");
    }
    Ok(())
}

fn queue(action: QueueAction, base: &AdminArgs) -> anyhow::Result<()> {
    match action {
        QueueAction::List { limit } => {
            let path = match limit {
                Some(n) => format!("/mailQueues/outgoing/mails?limit={n}"),
                None => "/mailQueues/outgoing/mails".to_string(),
            };
            let body = call(base, "GET", &path, None)?;
            let mails: Vec<serde_json::Value> =
                serde_json::from_str(&body).context("unexpected answer")?;
            for m in &mails {
                let field = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("");
                let recipients: Vec<&str> = m
                    .get("recipients")
                    .and_then(|v| v.as_array())
                    .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
                    .unwrap_or_default();
                let sender = match field("sender") {
                    "" => "<>",
                    s => s,
                };
                println!(
                    "{}  next {}  attempts {}  from {}  to {}  {}",
                    field("name"),
                    field("nextDelivery"),
                    m.get("attempts").and_then(|v| v.as_u64()).unwrap_or(0),
                    sender,
                    recipients.join(","),
                    field("lastError")
                );
            }
            eprintln!("{} queued", mails.len());
        }
        QueueAction::Flush => {
            call(
                base,
                "PATCH",
                "/mailQueues/outgoing?delayed=true",
                Some(r#"{"delayed": false}"#),
            )?;
            println!("queue flushed: every mail is due now");
        }
        QueueAction::Delete {
            all,
            sender,
            recipient,
            id,
        } => {
            let query = match (all, sender, recipient, id) {
                (true, None, None, None) => String::new(),
                (false, Some(s), None, None) => format!("?sender={}", encode_segment(&s)),
                (false, None, Some(r), None) => format!("?recipient={}", encode_segment(&r)),
                (false, None, None, Some(i)) => format!("?name={}", encode_segment(&i)),
                _ => bail!("give --all, or one of --sender, --recipient, --id"),
            };
            let body = call(
                base,
                "DELETE",
                &format!("/mailQueues/outgoing/mails{query}"),
                None,
            )?;
            let task: serde_json::Value =
                serde_json::from_str(&body).context("unexpected answer")?;
            let id = task
                .get("taskId")
                .and_then(|v| v.as_str())
                .context("no task id in the answer")?;
            let done = call(base, "GET", &format!("/tasks/{id}/await"), None)?;
            let done: serde_json::Value =
                serde_json::from_str(&done).context("unexpected answer")?;
            let info = &done["additionalInformation"];
            println!(
                "{}: {} of {} queued mails deleted",
                done["status"].as_str().unwrap_or("?"),
                info["initialCount"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(info["remainingCount"].as_u64().unwrap_or(0)),
                info["initialCount"].as_u64().unwrap_or(0)
            );
        }
    }
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (shown as typed): ");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("no password given on standard input");
    }
    Ok(password)
}

fn user(action: UserAction, base: &AdminArgs) -> anyhow::Result<()> {
    match action {
        UserAction::Add { user } => {
            let password = read_password()?;
            let body = serde_json::json!({ "password": password }).to_string();
            call(
                base,
                "PUT",
                &format!("/users/{}", encode_segment(&user)),
                Some(&body),
            )?;
            println!("user {user} created");
        }
        UserAction::Password { user } => {
            let password = read_password()?;
            let body = serde_json::json!({ "password": password }).to_string();
            call(
                base,
                "PUT",
                &format!("/users/{}?force", encode_segment(&user)),
                Some(&body),
            )?;
            println!("password of {user} set");
        }
        UserAction::Remove { user } => {
            call(
                base,
                "DELETE",
                &format!("/users/{}", encode_segment(&user)),
                None,
            )?;
            println!("user {user} removed (its mailbox is kept)");
        }
        UserAction::List => {
            let body = call(base, "GET", "/users", None)?;
            let users: Vec<serde_json::Value> =
                serde_json::from_str(&body).context("unexpected answer")?;
            for u in users {
                println!(
                    "{}",
                    u.get("username")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
