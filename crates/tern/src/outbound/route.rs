//! Where mail for a domain goes: a `transport` route, the relay host, or the domain's MX
//! records (RFC 5321 section 5.1: by preference, the domain's own address records when it has
//! no MX, nothing at all for a null MX), each name resolved to the addresses to try in order.

use crate::config::{parse_dns_server, parse_host_port, OutboundSection};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use tern_proto::smtp::client::Reply;

/// How a destination is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// A fixed host (a transport entry or the relay host).
    Host {
        host: String,
        port: u16,
        /// The relay host: its credentials and TLS mode apply.
        relayhost: bool,
    },
    /// The MX records of the domain.
    Mx(String),
}

impl Route {
    /// A name for logs, the queue listing and the connection pool.
    pub fn key(&self) -> String {
        match self {
            Route::Host { host, port, .. } => format!("[{host}]:{port}"),
            Route::Mx(domain) => domain.clone(),
        }
    }
}

/// One address to connect to, with the name it was found under (for EHLO-side logs and DSNs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
}

/// Routes and resolves destinations.
pub struct Router {
    transport: BTreeMap<String, (String, u16)>,
    relayhost: Option<(String, u16)>,
    resolver: TokioResolver,
    /// Port of MX hosts.
    smtp_port: u16,
}

/// The resolvers of `outbound.dns_servers` (UDP, then TCP for long answers); `None` for the
/// system's.
pub fn name_servers(dns_servers: &[String]) -> Option<ResolverConfig> {
    if dns_servers.is_empty() {
        return None;
    }
    let servers = dns_servers
        .iter()
        .filter_map(|s| parse_dns_server(s))
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    Some(ResolverConfig::from_name_servers(servers))
}

impl Router {
    pub fn new(settings: &OutboundSection) -> anyhow::Result<Self> {
        let transport = settings
            .transport
            .iter()
            .filter_map(|(d, r)| Some((d.to_ascii_lowercase(), parse_host_port(r)?)))
            .collect();
        let relayhost = settings.relayhost.as_deref().and_then(parse_host_port);
        let resolver = match name_servers(&settings.dns_servers) {
            None => TokioResolver::builder_tokio()
                .map_err(|e| anyhow::anyhow!("reading the system's DNS configuration: {e}"))?
                .build(),
            Some(config) => {
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).build()
            }
        }
        .map_err(|e| anyhow::anyhow!("DNS resolver: {e}"))?;
        Ok(Self {
            transport,
            relayhost,
            resolver,
            smtp_port: settings.smtp_port,
        })
    }

    /// The route of a recipient domain.
    pub fn route(&self, domain: &str) -> Route {
        let domain = domain.to_ascii_lowercase();
        if let Some((host, port)) = self.transport.get(&domain) {
            return Route::Host {
                host: host.clone(),
                port: *port,
                relayhost: false,
            };
        }
        if let Some((host, port)) = &self.relayhost {
            return Route::Host {
                host: host.clone(),
                port: *port,
                relayhost: true,
            };
        }
        Route::Mx(domain)
    }

    /// The addresses to try, best first; a reply (temporary or permanent) when there are none.
    pub async fn targets(&self, route: &Route) -> Result<Vec<Target>, Reply> {
        match route {
            Route::Host { host, port, .. } => self.host_targets(host, *port).await,
            Route::Mx(domain) => self.mx_targets(domain).await,
        }
    }

    async fn host_targets(&self, host: &str, port: u16) -> Result<Vec<Target>, Reply> {
        let ips = self.addresses(host).await?;
        if ips.is_empty() {
            return Err(Reply::local(451, format!("4.4.4 no address for {host}")));
        }
        Ok(ips
            .into_iter()
            .map(|ip| Target {
                name: host.to_string(),
                addr: SocketAddr::new(ip, port),
            })
            .collect())
    }

    async fn mx_targets(&self, domain: &str) -> Result<Vec<Target>, Reply> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let mut hosts: Vec<(u16, String)> = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_nx_domain() => {
                return Err(Reply::local(
                    550,
                    format!("5.1.2 domain {domain} does not exist"),
                ))
            }
            // No MX: the domain itself is the mail host (RFC 5321 section 5.1).
            Err(e) if e.is_no_records_found() => vec![(0, fqdn.clone())],
            Err(e) => {
                return Err(Reply::local(
                    451,
                    format!("4.4.3 MX lookup for {domain} failed: {e}"),
                ))
            }
        };
        // A null MX (RFC 7505): the domain accepts no mail.
        if hosts.len() == 1 && hosts[0].1 == "." {
            return Err(Reply::local(
                556,
                format!("5.1.10 {domain} accepts no mail (null MX)"),
            ));
        }
        // By preference; equal preferences in random order (RFC 5321 section 5.1).
        hosts.sort_by_key(|(pref, _)| (*pref, rand::random::<u16>()));
        let mut out = Vec::new();
        let mut last_error = None;
        for (_, host) in hosts {
            match self.addresses(&host).await {
                Ok(ips) => out.extend(ips.into_iter().map(|ip| Target {
                    name: host.trim_end_matches('.').to_string(),
                    addr: SocketAddr::new(ip, self.smtp_port),
                })),
                Err(e) => last_error = Some(e),
            }
        }
        if out.is_empty() {
            return Err(last_error.unwrap_or_else(|| {
                Reply::local(
                    451,
                    format!("4.4.4 no address for the MX hosts of {domain}"),
                )
            }));
        }
        Ok(out)
    }

    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, Reply> {
        if let Ok(ip) = host.trim_end_matches('.').parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(ips) => Ok(ips.iter().collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Err(Reply::local(
                451,
                format!("4.4.4 no address for {}", host.trim_end_matches('.')),
            )),
            Err(e) => Err(Reply::local(
                451,
                format!("4.4.3 address lookup for {host} failed: {e}"),
            )),
        }
    }
}
