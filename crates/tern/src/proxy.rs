//! The PROXY protocol (HAProxy's, versions 1 and 2) on the SMTP and POP3 listeners. Behind a TCP
//! load balancer every connection comes from the balancer; the header it sends first names the
//! real client, whose address then drives the connection caps, login throttling, logs and
//! Received headers. Only peers in `server.proxy_trusted_networks` may send it, and they must:
//! anyone else could claim any address.
//!
//! Parsing is `ppp`'s. The header is read with exact reads (never past its end), so the bytes
//! that follow it (an implicit-TLS ClientHello, say) are left for the protocol.

use ipnet::IpNet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Time a trusted peer has to send its header (Postfix's smtpd_upstream_proxy_timeout is 5 s).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The version 2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 header, CRLF included.
const V1_MAX: usize = 107;
/// Longest version 2 address block accepted (addresses plus TLVs); a balancer's TLVs are small.
const V2_MAX_PAYLOAD: usize = 4096;

/// Which peers must, and may, send a PROXY header.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    pub fn trusts(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed or failed before the PROXY header was complete: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a PROXY protocol header")]
    Missing,
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
}

/// Reads the header a trusted peer sends first; returns the client's address, or `peer` itself
/// when the header says the connection is the balancer's own (v1 `UNKNOWN`, v2 `LOCAL`, such as
/// health checks).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyError> {
    match tokio::time::timeout(HEADER_TIMEOUT, read_raw(stream)).await {
        Ok(raw) => source_of(&raw?, peer),
        Err(_) => Err(ProxyError::Timeout(HEADER_TIMEOUT)),
    }
}

/// The header's bytes, exactly.
async fn read_raw<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, ProxyError> {
    // Both versions are at least 15 octets long ("PROXY UNKNOWN\r\n"): 8 are safe to read.
    let mut raw = vec![0u8; 8];
    stream.read_exact(&mut raw).await?;
    if raw.starts_with(b"PROXY ") {
        while !raw.ends_with(b"\r\n") {
            if raw.len() >= V1_MAX {
                return Err(ProxyError::Invalid("version 1 header without CRLF".into()));
            }
            raw.push(stream.read_u8().await?);
        }
        return Ok(raw);
    }
    if raw[..] != V2_SIGNATURE[..8] {
        return Err(ProxyError::Missing);
    }
    raw.resize(16, 0);
    stream.read_exact(&mut raw[8..]).await?;
    if raw[..12] != V2_SIGNATURE[..] {
        return Err(ProxyError::Missing);
    }
    let payload = usize::from(u16::from_be_bytes([raw[14], raw[15]]));
    if payload > V2_MAX_PAYLOAD {
        return Err(ProxyError::Invalid(format!(
            "version 2 payload of {payload} octets (at most {V2_MAX_PAYLOAD})"
        )));
    }
    raw.resize(16 + payload, 0);
    stream.read_exact(&mut raw[16..]).await?;
    Ok(raw)
}

/// The client address a complete header names.
fn source_of(raw: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    use ppp::{v1, v2, HeaderResult};
    match HeaderResult::parse(raw) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
            v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
            v1::Addresses::Unknown => peer,
        }),
        HeaderResult::V2(Ok(h)) => match (h.command, h.addresses) {
            (v2::Command::Local, _) => Ok(peer),
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Ok(SocketAddr::from((a.source_address, a.source_port)))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Ok(SocketAddr::from((a.source_address, a.source_port)))
            }
            // The balancer does not know the source (UNIX sockets, unspecified): keep its own.
            (v2::Command::Proxy, _) => Ok(peer),
        },
        HeaderResult::V1(Err(e)) => Err(ProxyError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyError::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.1:40000".parse().unwrap()
    }

    async fn read(bytes: &[u8]) -> (Result<SocketAddr, ProxyError>, Vec<u8>) {
        let mut input = bytes;
        let r = read_header(&mut input, peer()).await;
        (r, input.to_vec())
    }

    #[tokio::test]
    async fn version_1_names_the_client_and_leaves_what_follows() {
        let (r, rest) = read(b"PROXY TCP4 192.0.2.7 10.0.0.2 51000 25\r\nEHLO x\r\n").await;
        assert_eq!(r.unwrap(), "192.0.2.7:51000".parse().unwrap());
        assert_eq!(rest, b"EHLO x\r\n");
        let (r, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 110\r\n").await;
        assert_eq!(r.unwrap(), "[2001:db8::7]:51000".parse().unwrap());
        let (r, rest) = read(b"PROXY UNKNOWN\r\nX").await;
        assert_eq!((r.unwrap(), rest), (peer(), b"X".to_vec()));
    }

    #[tokio::test]
    async fn version_2_names_the_client_and_leaves_what_follows() {
        let client: SocketAddr = "198.51.100.9:6000".parse().unwrap();
        let server: SocketAddr = "10.0.0.2:995".parse().unwrap();
        let mut header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (client, server),
        )
        .write_tlv(ppp::v2::Type::NoOp, b"pad")
        .unwrap()
        .build()
        .unwrap();
        header.extend_from_slice(b"\x16\x03\x01");
        let (r, rest) = read(&header).await;
        assert_eq!(r.unwrap(), client);
        assert_eq!(
            rest, b"\x16\x03\x01",
            "the TLS ClientHello that follows is untouched"
        );
        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(read(&local).await.0.unwrap(), peer());
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"EHLO client.example\r\n"[..],
            b"PROXY TCP4 not-an-address 10.0.0.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.2 51000 25 and a very long tail that never ends with a line feed at all, really never\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
            b"PROXY TCP4",
        ] {
            assert!(read(bad).await.0.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn trusted_networks() {
        let t = TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(t.trusts("10.1.2.3:5".parse().unwrap()));
        assert!(t.trusts("[::1]:5".parse().unwrap()));
        assert!(
            t.trusts("[::ffff:10.0.0.1]:5".parse().unwrap()),
            "v4-mapped"
        );
        assert!(!t.trusts("192.0.2.1:5".parse().unwrap()));
        assert!(!TrustedProxies::default().trusts("10.1.2.3:5".parse().unwrap()));
    }
}
