//! Configuration: built-in defaults, then an optional TOML file, then environment and command
//! line. Every key is documented in the README's configuration reference; unknown keys and bad
//! values stop start-up with a message naming the key.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub smtp: SmtpSection,
    pub pop3: Pop3Section,
    pub admin: AdminSection,
    pub store: StoreSection,
    pub cassandra: CassandraSection,
    pub auth: AuthSection,
    pub tls: TlsSection,
    pub log: LogSection,
    pub outbound: OutboundSection,
    pub lmtp: LmtpSection,
    pub inbound_auth: InboundAuthSection,
    pub autoconfig: AutoconfigSection,
    pub bodies: BodiesSection,
}

/// Where bodies too large to sit beside their metadata go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BodiesSection {
    /// `store`: the store's own place (the embedded store's files, Cassandra's chunk rows);
    /// `s3`: an S3-compatible bucket, `[bodies.s3]`.
    pub location: BodiesLocation,
    pub s3: S3Section,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BodiesLocation {
    #[default]
    Store,
    S3,
}

/// An S3-compatible bucket for bodies (`bodies.location = "s3"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    /// `http(s)://host:port` of an S3-compatible server; none for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// The bucket, which must exist.
    pub bucket: String,
    /// Keys start with this (`tern/bodies`).
    pub prefix: String,
    /// Static credentials (both or neither); none takes `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` from the environment, or the instance's role.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub virtual_hosted_style: bool,
    /// Parts of a multipart upload (S3's minimum is 5 MiB).
    pub part_size_mib: usize,
    pub max_retries: usize,
    pub retry_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub request_timeout_secs: u64,
}

/// The defaults are the blob store's own (`S3Options::default()`): one definition of each.
impl Default for S3Section {
    fn default() -> Self {
        let o = tern_store::blob_store::s3::S3Options::default();
        Self {
            endpoint: o.endpoint,
            region: o.region,
            bucket: o.bucket,
            prefix: o.prefix,
            access_key_id: None,
            secret_access_key: None,
            virtual_hosted_style: o.virtual_hosted_style,
            part_size_mib: o.part_size / (1024 * 1024),
            max_retries: o.max_retries,
            retry_timeout_secs: o.retry_timeout.as_secs(),
            connect_timeout_secs: o.connect_timeout.as_secs(),
            request_timeout_secs: o.request_timeout.as_secs(),
        }
    }
}

impl S3Section {
    pub fn options(&self) -> tern_store::blob_store::s3::S3Options {
        use std::time::Duration;
        tern_store::blob_store::s3::S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            credentials: self
                .access_key_id
                .clone()
                .zip(self.secret_access_key.clone()),
            virtual_hosted_style: self.virtual_hosted_style,
            part_size: self.part_size_mib * 1024 * 1024,
            max_retries: self.max_retries,
            retry_timeout: Duration::from_secs(self.retry_timeout_secs),
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
        }
    }
}

impl BodiesSection {
    fn check(&self, p: &mut Problems) {
        if self.location != BodiesLocation::S3 {
            return;
        }
        let s3 = &self.s3;
        p.check(
            !s3.bucket.is_empty(),
            "bodies.s3.bucket",
            "is needed with bodies.location = \"s3\"",
        );
        p.check(
            s3.access_key_id.is_some() == s3.secret_access_key.is_some(),
            "bodies.s3.secret_access_key",
            "set both bodies.s3.access_key_id and bodies.s3.secret_access_key, or neither",
        );
        p.check(
            (5..=5 * 1024).contains(&s3.part_size_mib),
            "bodies.s3.part_size_mib",
            "must be from 5 (S3's smallest part) to 5120",
        );
        p.check(
            s3.endpoint
                .as_deref()
                .is_none_or(|e| e.starts_with("http://") || e.starts_with("https://")),
            "bodies.s3.endpoint",
            "must start with http:// or https://",
        );
        p.positive(s3.retry_timeout_secs, "bodies.s3.retry_timeout_secs");
        p.positive(s3.connect_timeout_secs, "bodies.s3.connect_timeout_secs");
        p.positive(s3.request_timeout_secs, "bodies.s3.request_timeout_secs");
    }
}

/// Mail client autoconfiguration over HTTP (Thunderbird's `config-v1.1.xml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoconfigSection {
    /// Where it listens (public: `autoconfig.<domain>` points here, port 80); off when unset.
    pub listen: Option<SocketAddr>,
    /// The server name clients are told to connect to; `server.hostname` when unset.
    pub hostname: Option<String>,
}

/// Sender authentication of mail arriving on the port-25 listener: SPF, DKIM, ARC and DMARC,
/// recorded in an Authentication-Results header on each local copy. DNS goes to
/// `outbound.dns_servers` (the system's resolvers when empty).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundAuthSection {
    /// Check mail from clients that are neither authenticated nor in `smtp.relay_networks`.
    pub enabled: bool,
    /// Refuse (550 5.7.1, at the end of DATA) mail that fails DMARC for a From domain whose
    /// policy is `p=reject`. When false, such mail is delivered with its result recorded.
    pub reject_dmarc_failures: bool,
    /// Messages up to this size are held in memory to check their DKIM signatures and ARC
    /// chain; larger ones get SPF (and DMARC on SPF alone) only.
    pub max_verified_size: u64,
}

impl Default for InboundAuthSection {
    fn default() -> Self {
        Self {
            enabled: false,
            reject_dmarc_failures: true,
            max_verified_size: 16 * 1024 * 1024,
        }
    }
}

impl InboundAuthSection {
    fn check(&self, p: &mut Problems) {
        p.check(
            self.max_verified_size <= 256 * 1024 * 1024,
            "inbound_auth.max_verified_size",
            "at most 268435456 (256 MiB): each message checked is held in memory",
        );
    }
}

/// The LMTP listener (RFC 2033), for final delivery behind another MTA.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmtpSection {
    /// Where it listens; off when unset.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Name used in greetings and Received headers.
    pub hostname: String,
    pub data_dir: PathBuf,
    /// How long a stopping server waits for transactions in flight.
    pub shutdown_grace_secs: u64,
    /// Connections accepted at once over all listeners.
    pub max_connections: usize,
    /// Connections at once from one client address (loopback is not capped).
    pub max_connections_per_ip: usize,
    /// Peers (load balancers) that must open every SMTP and POP3 connection with a PROXY
    /// protocol header (v1 or v2) naming the real client. Nobody else may send one.
    pub proxy_trusted_networks: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSection {
    pub listen: SocketAddr,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_errors: u32,
    /// Time allowed for a whole command line to arrive, from when the server starts waiting
    /// for it (RFC 5321 section 4.5.3.2 suggests 5 minutes). A deadline, not a per-read
    /// timeout: trickling a byte at a time does not extend it.
    pub command_timeout_secs: u64,
    /// Idle time allowed between data blocks inside DATA (RFC 5321: 3 to 10 minutes).
    pub data_timeout_secs: u64,
    /// Time allowed for a whole DATA, from 354 to the final dot.
    pub data_deadline_secs: u64,
    /// The message submission listener (RFC 6409, the port-587 role): STARTTLS, then AUTH,
    /// before any mail.
    pub submission_listen: Option<SocketAddr>,
    /// Message submission over TLS from the first byte (RFC 8314, the port-465 role).
    pub submissions_listen: Option<SocketAddr>,
    /// Accept AUTH before TLS on non-loopback submission connections.
    pub allow_plaintext_auth: bool,
    /// Treat loopback submission connections as secure for that rule.
    pub loopback_is_secure: bool,
    /// Clients in these networks may relay through the port-25 listener without AUTH
    /// (application servers; James's SMTPIsAuthNetwork).
    pub relay_networks: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboundTls {
    /// STARTTLS when offered, clear text otherwise.
    Opportunistic,
    /// Never send in clear.
    Required,
}

/// Remote delivery of mail for other domains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundSection {
    /// Per-domain routes, as Postfix's transport(5): `"example.org" = "host:port"`. A route
    /// wins over the relay host and over MX records.
    pub transport: std::collections::BTreeMap<String, String>,
    /// A smart host ("host:port") that takes all remote mail not routed by `transport`.
    pub relayhost: Option<String>,
    /// Credentials for the relay host (AUTH PLAIN, only ever sent inside TLS).
    pub relayhost_username: Option<String>,
    pub relayhost_password: Option<String>,
    /// The relay host speaks TLS from the first byte (port 465) instead of STARTTLS.
    pub relayhost_implicit_tls: bool,
    /// PEM file of the CAs that vouch for the relay host's certificate: when set, TLS to the
    /// relay host is required and its certificate is checked against its name.
    pub relayhost_ca_file: Option<PathBuf>,
    /// DNS resolvers ("ip" or "ip:port"); the system's (/etc/resolv.conf) when empty.
    pub dns_servers: Vec<String>,
    /// The port of the servers found through MX records (Postfix's smtp_tcp_port).
    pub smtp_port: u16,
    /// STARTTLS policy towards remote servers.
    pub tls: OutboundTls,
    /// Waits between attempts after a temporary failure; the last one repeats.
    pub retry_delays_secs: Vec<u64>,
    /// A message not delivered after this long is bounced (Postfix: 5 days).
    pub max_queue_lifetime_secs: u64,
    /// Messages being delivered at once by one node.
    pub concurrency: usize,
    /// Connections at once to one destination.
    pub max_connections_per_destination: usize,
    /// Time allowed to connect to a remote server.
    pub connect_timeout_secs: u64,
    /// Time allowed for each reply of a remote server (RFC 5321: 5 minutes; 10 after the data).
    pub command_timeout_secs: u64,
    /// DKIM keys: mail from these domains is signed when it leaves for other domains.
    pub dkim: Vec<DkimKey>,
    /// The secret of the Sender Rewriting Scheme (the same on every node): mail that a
    /// forward or a group sends to another domain leaves with an SRS sender of `srs_domain`.
    /// Unset: forwarded mail keeps its original sender.
    pub srs_secret: Option<String>,
    /// The domain of SRS addresses (its MX must be Tern); the server's host name by default.
    pub srs_domain: Option<String>,
}

/// One DKIM signing key (`[[outbound.dkim]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    /// The sender domain whose mail is signed (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is published at `{selector}._domainkey.{domain}`.
    pub selector: String,
    /// PEM file of the private key (RSA, PKCS#1 or PKCS#8; or Ed25519, PKCS#8), as written by
    /// `tern dkim keygen`.
    pub private_key_file: PathBuf,
}

impl Default for OutboundSection {
    fn default() -> Self {
        Self {
            transport: Default::default(),
            relayhost: None,
            relayhost_username: None,
            relayhost_password: None,
            relayhost_implicit_tls: false,
            relayhost_ca_file: None,
            dns_servers: Vec::new(),
            smtp_port: 25,
            tls: OutboundTls::Opportunistic,
            retry_delays_secs: vec![300, 900, 1800, 3600, 7200, 14400],
            max_queue_lifetime_secs: 5 * 24 * 3600,
            concurrency: 64,
            max_connections_per_destination: 20,
            connect_timeout_secs: 30,
            command_timeout_secs: 300,
            dkim: Vec::new(),
            srs_secret: None,
            srs_domain: None,
        }
    }
}

/// A "host:port" destination: the host is a name or an IP address (IPv6 in brackets).
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let valid = !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    valid.then(|| (host.to_ascii_lowercase(), port))
}

/// A DNS server: "ip" (port 53) or "ip:port" ("[v6]:port").
pub fn parse_dns_server(s: &str) -> Option<SocketAddr> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    s.parse().ok()
}

impl OutboundSection {
    fn check(&self, p: &mut Problems) {
        for (domain, route) in &self.transport {
            p.check(
                !domain.is_empty() && !domain.contains(char::is_whitespace),
                "outbound.transport",
                &format!("{domain:?} is not a domain"),
            );
            p.check(
                parse_host_port(route).is_some(),
                "outbound.transport",
                &format!("{domain} = {route:?}: use \"host:port\""),
            );
        }
        if let Some(r) = &self.relayhost {
            p.check(
                parse_host_port(r).is_some(),
                "outbound.relayhost",
                &format!("{r:?}: use \"host:port\""),
            );
        }
        p.check(
            self.relayhost_username.is_some() == self.relayhost_password.is_some(),
            "outbound.relayhost_password",
            "set both outbound.relayhost_username and outbound.relayhost_password, or neither",
        );
        p.check(
            self.relayhost_username.is_none() || self.relayhost.is_some(),
            "outbound.relayhost_username",
            "needs outbound.relayhost",
        );
        for d in &self.dns_servers {
            p.check(
                parse_dns_server(d).is_some(),
                "outbound.dns_servers",
                &format!("{d:?}: use an IP address, optionally with :port"),
            );
        }
        p.check(
            !self.retry_delays_secs.is_empty() && self.retry_delays_secs.iter().all(|d| *d > 0),
            "outbound.retry_delays_secs",
            "must list at least one delay, each at least 1",
        );
        p.positive(self.smtp_port.into(), "outbound.smtp_port");
        p.positive(
            self.max_queue_lifetime_secs,
            "outbound.max_queue_lifetime_secs",
        );
        p.positive(self.concurrency as u64, "outbound.concurrency");
        p.positive(
            self.max_connections_per_destination as u64,
            "outbound.max_connections_per_destination",
        );
        p.positive(self.connect_timeout_secs, "outbound.connect_timeout_secs");
        p.check(
            self.srs_secret.as_ref().is_none_or(|s| s.len() >= 16),
            "outbound.srs_secret",
            "must be at least 16 characters",
        );
        p.check(
            self.srs_domain
                .as_ref()
                .is_none_or(|d| crate::names::valid_domain(&d.to_ascii_lowercase())),
            "outbound.srs_domain",
            "must be a domain",
        );
        for k in &self.dkim {
            p.check(
                crate::names::valid_domain(&k.domain.to_ascii_lowercase()),
                "outbound.dkim.domain",
                &format!("{:?} is not a domain", k.domain),
            );
            p.check(
                !k.selector.is_empty()
                    && k.selector
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
                "outbound.dkim.selector",
                &format!("{:?}: letters, digits, - and . only", k.selector),
            );
        }
        p.positive(self.command_timeout_secs, "outbound.command_timeout_secs");
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3Section {
    pub listen: SocketAddr,
    /// RFC 1939 section 3: an autologout timer of at least 10 minutes. It bounds the wait for
    /// a whole command, so trickling bytes does not extend it.
    pub idle_timeout_secs: u64,
    pub max_auth_failures: u32,
    pub max_errors: u32,
    /// A second POP3 listener speaking TLS from the first byte (the port-995 role).
    pub tls_listen: Option<SocketAddr>,
    /// Accept USER/PASS and AUTH before TLS on non-loopback connections.
    pub allow_plaintext_auth: bool,
    /// How POP3 numbers messages: by message id (default, no coordination) or by classic UID.
    pub listing: Pop3ListingMode,
    /// Treat loopback connections as secure for the plaintext-auth rule (a local proxy that
    /// terminates TLS, local tools); set false when a local proxy forwards plaintext.
    pub loopback_is_secure: bool,
    /// Messages older than this many days are deleted by the daily retention run, and CAPA
    /// says so (RFC 2449 EXPIRE); none keeps mail forever (`EXPIRE NEVER`).
    pub expire_days: Option<u32>,
    /// Per-domain retention, in days, overriding `expire_days` for the users of a domain.
    pub expire_days_per_domain: std::collections::BTreeMap<String, u32>,
}

impl Pop3Section {
    /// The retention of a user's mail, in days; `None` for never.
    pub fn expire_days_of(&self, user: &str) -> Option<u32> {
        let domain = user.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.expire_days_per_domain
            .get(&domain.to_ascii_lowercase())
            .copied()
            .or(self.expire_days)
    }

    /// Whether any retention is configured (the daily run has work).
    pub fn expires_anything(&self) -> bool {
        self.expire_days.is_some() || !self.expire_days_per_domain.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pop3ListingMode {
    MessageId,
    Uid,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: SocketAddr,
    /// When set, every route but the health checks requires `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Time allowed to send a request's headers (slow clients are dropped).
    pub header_timeout_secs: u64,
    /// Time allowed to send the body and get the answer (the await route waits as asked).
    pub request_timeout_secs: u64,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Longest password accepted by `PUT /users`, in octets.
    pub max_password_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackend {
    Embedded,
    Cassandra,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub backend: StoreBackend,
    /// Embedded store: bodies up to this size live in the database, larger ones in files.
    pub inline_max_bytes: usize,
    /// Embedded store: memory for redb's page cache, in MiB.
    pub cache_mib: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyLevel {
    One,
    Two,
    Three,
    Quorum,
    All,
    LocalQuorum,
    EachQuorum,
    LocalOne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialConsistencyLevel {
    Serial,
    LocalSerial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationStrategy {
    Simple,
    NetworkTopology,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CassandraSection {
    /// `host:port` of nodes to contact first.
    pub contact_points: Vec<String>,
    /// Datacenter this node talks to; requests never fail over to remote ones.
    pub local_datacenter: Option<String>,
    pub keyspace: String,
    pub replication_strategy: ReplicationStrategy,
    /// With `simple`.
    pub replication_factor: u32,
    /// With `network-topology`: datacenter name -> replication factor.
    pub datacenter_replication: std::collections::BTreeMap<String, u32>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub read_consistency: ConsistencyLevel,
    pub write_consistency: ConsistencyLevel,
    pub serial_consistency: SerialConsistencyLevel,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub create_schema: bool,
    pub chunk_size: usize,
    /// CQL over TLS: the CA certificates (PEM) to trust; setting it turns TLS on.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM), for clusters that require client certificates.
    pub tls_client_cert_file: Option<PathBuf>,
    pub tls_client_key_file: Option<PathBuf>,
}

/// The defaults are the store's own (`CassandraOptions::default()`): one definition of each.
impl Default for CassandraSection {
    fn default() -> Self {
        use tern_store::cassandra::{CassandraOptions, Replication};
        let o = CassandraOptions::default();
        let (replication_strategy, replication_factor, datacenter_replication) = match o.replication
        {
            Replication::Simple { factor } => {
                (ReplicationStrategy::Simple, factor, Default::default())
            }
            Replication::NetworkTopology { datacenters } => (
                ReplicationStrategy::NetworkTopology,
                1,
                datacenters.into_iter().collect(),
            ),
        };
        Self {
            contact_points: o.contact_points,
            local_datacenter: o.local_datacenter,
            keyspace: o.keyspace,
            replication_strategy,
            replication_factor,
            datacenter_replication,
            username: o.username,
            password: o.password,
            read_consistency: ConsistencyLevel::from_driver(o.read_consistency),
            write_consistency: ConsistencyLevel::from_driver(o.write_consistency),
            serial_consistency: match o.serial_consistency {
                tern_store::cassandra::SerialConsistency::Serial => SerialConsistencyLevel::Serial,
                tern_store::cassandra::SerialConsistency::LocalSerial => {
                    SerialConsistencyLevel::LocalSerial
                }
            },
            request_timeout_ms: o.request_timeout.as_millis() as u64,
            connect_timeout_ms: o.connect_timeout.as_millis() as u64,
            create_schema: o.create_schema,
            chunk_size: o.chunk_size,
            tls_ca_file: o.tls_ca_file,
            tls_client_cert_file: o.tls_client_cert_file,
            tls_client_key_file: o.tls_client_key_file,
        }
    }
}

impl ConsistencyLevel {
    /// The configuration spelling of a driver consistency (ONE when it has none here).
    fn from_driver(c: tern_store::cassandra::Consistency) -> Self {
        use tern_store::cassandra::Consistency as C;
        match c {
            C::Two => Self::Two,
            C::Three => Self::Three,
            C::Quorum => Self::Quorum,
            C::All => Self::All,
            C::LocalQuorum => Self::LocalQuorum,
            C::EachQuorum => Self::EachQuorum,
            C::LocalOne => Self::LocalOne,
            _ => Self::One,
        }
    }
}

impl CassandraSection {
    pub fn options(&self) -> tern_store::cassandra::CassandraOptions {
        use tern_store::cassandra::{
            CassandraOptions, Consistency, Replication, SerialConsistency,
        };
        let level = |c: ConsistencyLevel| match c {
            ConsistencyLevel::One => Consistency::One,
            ConsistencyLevel::Two => Consistency::Two,
            ConsistencyLevel::Three => Consistency::Three,
            ConsistencyLevel::Quorum => Consistency::Quorum,
            ConsistencyLevel::All => Consistency::All,
            ConsistencyLevel::LocalQuorum => Consistency::LocalQuorum,
            ConsistencyLevel::EachQuorum => Consistency::EachQuorum,
            ConsistencyLevel::LocalOne => Consistency::LocalOne,
        };
        CassandraOptions {
            contact_points: self.contact_points.clone(),
            local_datacenter: self.local_datacenter.clone(),
            keyspace: self.keyspace.clone(),
            replication: match self.replication_strategy {
                ReplicationStrategy::Simple => Replication::Simple {
                    factor: self.replication_factor,
                },
                ReplicationStrategy::NetworkTopology => Replication::NetworkTopology {
                    datacenters: self
                        .datacenter_replication
                        .iter()
                        .map(|(k, v)| (k.clone(), *v))
                        .collect(),
                },
            },
            username: self.username.clone(),
            password: self.password.clone(),
            read_consistency: level(self.read_consistency),
            write_consistency: level(self.write_consistency),
            serial_consistency: match self.serial_consistency {
                SerialConsistencyLevel::Serial => SerialConsistency::Serial,
                SerialConsistencyLevel::LocalSerial => SerialConsistency::LocalSerial,
            },
            request_timeout: std::time::Duration::from_millis(self.request_timeout_ms),
            connect_timeout: std::time::Duration::from_millis(self.connect_timeout_ms),
            create_schema: self.create_schema,
            chunk_size: self.chunk_size,
            tls_ca_file: self.tls_ca_file.clone(),
            tls_client_cert_file: self.tls_client_cert_file.clone(),
            tls_client_key_file: self.tls_client_key_file.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Argon2id parameters for new password hashes (existing hashes carry their own).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// How long a verified login is remembered (0 disables the cache).
    pub cache_ttl_secs: u64,
    /// Logins remembered at most.
    pub cache_max_entries: usize,
    /// Failed logins from one address within the window before it is locked out (0: never).
    pub max_failures_per_ip: u32,
    /// Failed logins for one user within the window before it is locked out for addresses
    /// that have not logged in as that user recently (0: never).
    pub max_failures_per_user: u32,
    pub failure_window_secs: u64,
    pub lockout_secs: u64,
    /// Delay before answering a failed login, times the failures from that address (max 5 s).
    pub failure_delay_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain (leaf first). With `key_file`, enables STLS, STARTTLS and the
    /// implicit-TLS POP3 listener. Reloaded on SIGHUP.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Resumption by stateless session tickets (RFC 8446 4.6.1, RFC 5077).
    pub session_tickets: bool,
    /// Sessions this node remembers for resumption by id; 0 remembers none.
    pub session_cache_entries: usize,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            session_tickets: true,
            session_cache_entries: 20_000,
        }
    }
}

impl TlsSection {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    /// A tracing filter such as "info" or "tern=debug,info"; RUST_LOG overrides it.
    pub level: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            hostname: system_hostname(),
            data_dir: PathBuf::from("./tern-data"),
            shutdown_grace_secs: 30,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            proxy_trusted_networks: Vec::new(),
        }
    }
}

impl Default for SmtpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 2525)),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 20,
            command_timeout_secs: 300,
            data_timeout_secs: 600,
            data_deadline_secs: 3600,
            submission_listen: None,
            submissions_listen: None,
            allow_plaintext_auth: false,
            loopback_is_secure: true,
            relay_networks: Vec::new(),
        }
    }
}

impl Default for Pop3Section {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 1110)),
            idle_timeout_secs: 600,
            max_auth_failures: 3,
            max_errors: 20,
            tls_listen: None,
            allow_plaintext_auth: false,
            loopback_is_secure: true,
            listing: Pop3ListingMode::MessageId,
            expire_days: None,
            expire_days_per_domain: Default::default(),
        }
    }
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            token: None,
            header_timeout_secs: 10,
            request_timeout_secs: 60,
            max_connections: 64,
            max_password_bytes: 1024,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
            inline_max_bytes: 128 * 1024,
            cache_mib: 256,
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        // OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane).
        Self {
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            cache_ttl_secs: 300,
            cache_max_entries: 100_000,
            max_failures_per_ip: 10,
            max_failures_per_user: 20,
            failure_window_secs: 900,
            lockout_secs: 300,
            failure_delay_ms: 250,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// `Ok` for no problem, the problem itself for one, [`ConfigError::Several`] for more.
    pub fn from_list(mut errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Several(errors)),
        }
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Reads and parses a file without the value checks (for `check-config`, which runs
    /// them all through `server::preflight`).
    pub fn from_toml_unchecked_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone do not; reports every problem, not only the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::from_list(self.problems())
    }

    /// Every value the types accept but Tern does not, section by section, then what spans
    /// sections.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut p = Problems::default();
        self.server.check(&mut p);
        self.smtp.check(&mut p);
        self.pop3.check(&mut p);
        self.admin.check(&mut p);
        self.store.check(&mut p);
        self.cassandra.check(&mut p);
        self.auth.check(&mut p);
        self.log.check(&mut p);
        self.outbound.check(&mut p);
        self.inbound_auth.check(&mut p);
        self.bodies.check(&mut p);
        p.check(
            self.tls.cert_file.is_some() == self.tls.key_file.is_some(),
            "tls.key_file",
            "set both tls.cert_file and tls.key_file, or neither",
        );
        p.check(
            self.pop3.tls_listen.is_none() || self.tls.enabled(),
            "pop3.tls_listen",
            "needs a certificate (tls.cert_file and tls.key_file)",
        );
        p.check(
            self.smtp.submissions_listen.is_none() || self.tls.enabled(),
            "smtp.submissions_listen",
            "needs a certificate (tls.cert_file and tls.key_file)",
        );
        let mut addresses = vec![
            ("smtp.listen", self.smtp.listen),
            ("pop3.listen", self.pop3.listen),
            ("admin.listen", self.admin.listen),
        ];
        if let Some(a) = self.pop3.tls_listen {
            addresses.push(("pop3.tls_listen", a));
        }
        if let Some(a) = self.smtp.submission_listen {
            addresses.push(("smtp.submission_listen", a));
        }
        if let Some(a) = self.smtp.submissions_listen {
            addresses.push(("smtp.submissions_listen", a));
        }
        if let Some(a) = self.lmtp.listen {
            addresses.push(("lmtp.listen", a));
        }
        if let Some(a) = self.autoconfig.listen {
            addresses.push(("autoconfig.listen", a));
        }
        for (i, (key, addr)) in addresses.iter().enumerate() {
            // Port 0 asks the system for a free port: never a clash.
            let clash = addr.port() != 0 && addresses[..i].iter().any(|(_, other)| other == addr);
            p.check(
                !clash,
                key,
                &format!("{addr} is already used by another listener"),
            );
        }
        p.0
    }
}

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn check(&mut self, ok: bool, key: &'static str, message: &str) {
        if !ok {
            self.0.push(ConfigError::Invalid {
                key,
                message: message.to_string(),
            });
        }
    }

    /// A value that must be at least 1.
    fn positive(&mut self, value: u64, key: &'static str) {
        self.check(value > 0, key, "must be at least 1");
    }
}

impl ServerSection {
    fn check(&self, p: &mut Problems) {
        p.check(
            !self.hostname.trim().is_empty() && !self.hostname.contains(char::is_whitespace),
            "server.hostname",
            "must be a host name without spaces",
        );
        p.check(
            !self.data_dir.as_os_str().is_empty(),
            "server.data_dir",
            "must not be empty",
        );
        p.positive(self.max_connections as u64, "server.max_connections");
        p.positive(
            self.max_connections_per_ip as u64,
            "server.max_connections_per_ip",
        );
    }
}

impl SmtpSection {
    fn check(&self, p: &mut Problems) {
        p.check(
            self.max_message_size >= 1024,
            "smtp.max_message_size",
            "must be at least 1024 octets",
        );
        p.positive(self.max_recipients as u64, "smtp.max_recipients");
        p.positive(self.max_errors.into(), "smtp.max_errors");
        p.positive(self.command_timeout_secs, "smtp.command_timeout_secs");
        p.positive(self.data_timeout_secs, "smtp.data_timeout_secs");
        p.check(
            self.data_deadline_secs >= self.data_timeout_secs,
            "smtp.data_deadline_secs",
            "must be at least smtp.data_timeout_secs",
        );
    }
}

impl Pop3Section {
    fn check(&self, p: &mut Problems) {
        p.positive(self.idle_timeout_secs, "pop3.idle_timeout_secs");
        p.positive(self.max_auth_failures.into(), "pop3.max_auth_failures");
        p.positive(self.max_errors.into(), "pop3.max_errors");
        for (domain, days) in &self.expire_days_per_domain {
            p.check(
                *days > 0 && domain == &domain.to_ascii_lowercase() && !domain.is_empty(),
                "pop3.expire_days_per_domain",
                &format!("{domain:?} = {days}: a lower-case domain and at least 1 day"),
            );
        }
        if let Some(days) = self.expire_days {
            p.check(
                days > 0,
                "pop3.expire_days",
                "at least 1 day (leave it out to keep mail forever)",
            );
        }
    }
}

impl AdminSection {
    fn check(&self, p: &mut Problems) {
        p.check(
            self.token
                .as_ref()
                .is_none_or(|t| t.len() >= 16 && !t.contains(char::is_whitespace)),
            "admin.token",
            "must be at least 16 characters, without spaces",
        );
        p.positive(self.header_timeout_secs, "admin.header_timeout_secs");
        p.positive(self.request_timeout_secs, "admin.request_timeout_secs");
        p.positive(self.max_connections as u64, "admin.max_connections");
        p.check(
            self.max_password_bytes >= 8,
            "admin.max_password_bytes",
            "must be at least 8",
        );
    }
}

impl StoreSection {
    fn check(&self, p: &mut Problems) {
        p.positive(self.cache_mib as u64, "store.cache_mib");
        p.check(
            self.inline_max_bytes <= 16 * 1024 * 1024,
            "store.inline_max_bytes",
            "must be at most 16 MiB",
        );
    }
}

impl CassandraSection {
    fn check(&self, p: &mut Problems) {
        p.check(
            !self.contact_points.is_empty(),
            "cassandra.contact_points",
            "needs at least one host:port",
        );
        p.check(
            tern_store::cassandra::schema::valid_keyspace(&self.keyspace),
            "cassandra.keyspace",
            "must be lower-case letters, digits and _, starting with a letter, at most 48 characters",
        );
        p.positive(
            self.replication_factor.into(),
            "cassandra.replication_factor",
        );
        p.check(
            self.replication_strategy == ReplicationStrategy::Simple
                || !self.datacenter_replication.is_empty(),
            "cassandra.datacenter_replication",
            "must name at least one datacenter with network-topology",
        );
        p.check(
            self.datacenter_replication.keys().all(|dc| {
                !dc.is_empty()
                    && dc
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }),
            "cassandra.datacenter_replication",
            "datacenter names may hold letters, digits, _ and -",
        );
        p.check(
            self.username.is_some() == self.password.is_some(),
            "cassandra.password",
            "set both username and password, or neither",
        );
        p.check(
            self.tls_client_cert_file.is_some() == self.tls_client_key_file.is_some(),
            "cassandra.tls_client_key_file",
            "set both tls_client_cert_file and tls_client_key_file, or neither",
        );
        p.check(
            self.tls_client_cert_file.is_none() || self.tls_ca_file.is_some(),
            "cassandra.tls_ca_file",
            "client certificates need TLS: set tls_ca_file",
        );
        p.check(
            self.request_timeout_ms >= 10,
            "cassandra.request_timeout_ms",
            "must be at least 10",
        );
        p.check(
            self.connect_timeout_ms >= 10,
            "cassandra.connect_timeout_ms",
            "must be at least 10",
        );
        p.check(
            (4096..=1024 * 1024).contains(&self.chunk_size),
            "cassandra.chunk_size",
            "must be 4096 to 1048576 octets",
        );
    }
}

impl AuthSection {
    fn check(&self, p: &mut Problems) {
        p.check(
            self.argon2_memory_kib >= 8 * self.argon2_parallelism.max(1),
            "auth.argon2_memory_kib",
            "must be at least 8 KiB per lane",
        );
        p.positive(self.argon2_iterations.into(), "auth.argon2_iterations");
        p.check(
            (1..=255).contains(&self.argon2_parallelism),
            "auth.argon2_parallelism",
            "must be 1 to 255",
        );
        p.positive(self.failure_window_secs, "auth.failure_window_secs");
    }
}

impl LogSection {
    fn check(&self, p: &mut Problems) {
        p.check(
            self.level.parse::<tracing_subscriber::EnvFilter>().is_ok(),
            "log.level",
            "is not a valid filter (try \"info\" or \"tern=debug,info\")",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.smtp.listen.to_string(), "127.0.0.1:2525");
        assert_eq!(c.pop3.listen.to_string(), "127.0.0.1:1110");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8000");
    }

    #[test]
    fn documented_example_is_valid_and_matches_defaults() {
        let example = Config::from_toml(include_str!("../../../docs/tern.example.toml")).unwrap();
        let d = Config::default();
        assert_eq!(example.smtp.max_message_size, d.smtp.max_message_size);
        assert_eq!(example.pop3.idle_timeout_secs, d.pop3.idle_timeout_secs);
        assert_eq!(example.store.inline_max_bytes, d.store.inline_max_bytes);
        assert_eq!(format!("{:?}", example.bodies), format!("{:?}", d.bodies));
        assert_eq!(example.auth.argon2_memory_kib, d.auth.argon2_memory_kib);
        assert_eq!(
            example.outbound.retry_delays_secs,
            d.outbound.retry_delays_secs
        );
        assert_eq!(
            example.outbound.max_queue_lifetime_secs,
            d.outbound.max_queue_lifetime_secs
        );
        assert_eq!(example.outbound.concurrency, d.outbound.concurrency);
    }

    #[test]
    fn retention_is_per_domain_then_default() {
        let c = Config::from_toml(
            "[pop3]\nexpire_days = 30\nexpire_days_per_domain = { \"short.example\" = 7 }\n",
        )
        .unwrap();
        assert_eq!(c.pop3.expire_days_of("a@short.example"), Some(7));
        assert_eq!(c.pop3.expire_days_of("a@SHORT.example"), Some(7));
        assert_eq!(c.pop3.expire_days_of("a@other.example"), Some(30));
        assert!(c.pop3.expires_anything());
        assert_eq!(Config::default().pop3.expire_days_of("a@b.c"), None);
        for bad in [
            "[pop3]\nexpire_days = 0\n",
            "[pop3]\nexpire_days_per_domain = { \"Upper.Example\" = 7 }\n",
            "[pop3]\nexpire_days_per_domain = { \"x.example\" = 0 }\n",
        ] {
            let e = Config::from_toml(bad).unwrap_err().to_string();
            assert!(e.contains("pop3.expire_days"), "{bad}: {e}");
        }
    }

    #[test]
    fn outbound_problems_are_reported_by_key() {
        let e = Config::from_toml(
            "[smtp]\nrelay_networks = [\"10.0.0.0/8\"]\n[outbound]\nrelayhost = \"no port\"\nrelayhost_username = \"u\"\n\
             dns_servers = [\"dns.example\"]\nretry_delays_secs = []\nsmtp_port = 0\n\
             [outbound.transport]\n\"a.example\" = \"host:99999\"\n\
             [[outbound.dkim]]\ndomain = \"bad domain\"\nselector = \"s/1\"\nprivate_key_file = \"k.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "outbound.relayhost",
            "outbound.relayhost_password",
            "outbound.dns_servers",
            "outbound.retry_delays_secs",
            "outbound.smtp_port",
            "outbound.transport",
            "outbound.dkim.domain",
            "outbound.dkim.selector",
        ] {
            assert!(e.contains(&format!("config key {key}:")), "{key}: {e}");
        }
        let ok = Config::from_toml(
            "[outbound]\nrelayhost = \"[2001:db8::1]:587\"\ndns_servers = [\"192.0.2.1\", \"192.0.2.2:5353\"]\n\
             [outbound.transport]\n\"b.example\" = \"127.0.0.1:2526\"\n",
        )
        .unwrap();
        assert_eq!(
            parse_host_port(ok.outbound.relayhost.as_deref().unwrap()),
            Some(("2001:db8::1".into(), 587))
        );
        assert!(Config::from_toml("[outbound]\nunknown = 1\n").is_err());
    }

    #[test]
    fn cassandra_defaults_are_the_stores_own() {
        let from_config = CassandraSection::default().options();
        let store = tern_store::cassandra::CassandraOptions::default();
        assert_eq!(format!("{from_config:?}"), format!("{store:?}"));
    }

    #[test]
    fn every_problem_is_reported_by_key() {
        let e = Config::from_toml(
            "[smtp]\nmax_recipients = 0\n[pop3]\nmax_errors = 0\n[cassandra]\nchunk_size = 1\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "smtp.max_recipients",
            "pop3.max_errors",
            "cassandra.chunk_size",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn s3_bodies_are_checked_only_when_chosen() {
        let unused = "[bodies.s3]\npart_size_mib = 1\n";
        assert!(
            Config::from_toml(unused).is_ok(),
            "location = store ignores [bodies.s3]"
        );
        let e = Config::from_toml(
            "[bodies]\nlocation = \"s3\"\n[bodies.s3]\npart_size_mib = 1\n\
             access_key_id = \"k\"\nendpoint = \"minio:9000\"\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "bodies.s3.bucket",
            "bodies.s3.part_size_mib",
            "bodies.s3.secret_access_key",
            "bodies.s3.endpoint",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
        let ok = Config::from_toml(
            "[bodies]\nlocation = \"s3\"\n[bodies.s3]\nbucket = \"mail\"\nprefix = \"tern\"\n",
        )
        .unwrap();
        let o = ok.bodies.s3.options();
        assert_eq!((o.bucket.as_str(), o.part_size), ("mail", 8 * 1024 * 1024));
        let e = Config::from_toml("[bodies]\nlocation = \"ftp\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("location"), "{e}");
        let e = Config::from_toml("[bodies.s3]\nbuckets = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("buckets"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml("[smtp]\nlisten_on = \"1.2.3.4:25\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_on"), "{e}");
        let e = Config::from_toml("[nope]\n").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::from_toml("[pop3]\nlisten = \"not an address\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
        let e = Config::from_toml("[smtp]\nmax_recipients = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("smtp.max_recipients"), "{e}");
        let e = Config::from_toml("[store]\nbackend = \"floppy\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("floppy") && e.contains("backend"), "{e}");
        let e = Config::from_toml("[smtp]\nmax_message_size = -5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_message_size"), "{e}");
    }
}
