//! An authoritative DNS server for the tests, on a loopback UDP port: MX and A records from a
//! table, NXDOMAIN for names it does not know, an empty answer for a known name without records
//! of the asked type. Messages are parsed and built with hickory-proto.

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, MX, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

#[derive(Default, Clone)]
pub struct Zone {
    records: HashMap<String, Vec<RData>>,
}

impl Zone {
    pub fn mx(mut self, domain: &str, preference: u16, host: &str) -> Self {
        let host = Name::from_ascii(format!("{host}.")).unwrap();
        self.records
            .entry(domain.to_ascii_lowercase())
            .or_default()
            .push(RData::MX(MX::new(preference, host)));
        self
    }

    pub fn a(mut self, host: &str, ip: Ipv4Addr) -> Self {
        self.records
            .entry(host.to_ascii_lowercase())
            .or_default()
            .push(RData::A(A(ip)));
        self
    }

    /// A TXT record, cut into strings of at most 255 octets (RFC 1035).
    pub fn txt(mut self, name: &str, text: &str) -> Self {
        let parts: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).to_string())
            .collect();
        self.records
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(RData::TXT(TXT::new(parts)));
        self
    }

    /// Serves the zone until the process ends; returns the server's address.
    pub fn serve(self) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut response = Message::response(query.metadata.id, OpCode::Query);
                response.metadata.authoritative = true;
                response.metadata.recursion_desired = query.metadata.recursion_desired;
                response.metadata.recursion_available = true;
                for q in &query.queries {
                    response.add_query(q.clone());
                    let name = q
                        .name()
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase();
                    match self.records.get(&name) {
                        None => response.metadata.response_code = ResponseCode::NXDomain,
                        Some(data) => {
                            for d in data {
                                let wanted = matches!(
                                    (q.query_type(), d),
                                    (RecordType::MX, RData::MX(_))
                                        | (RecordType::A, RData::A(_))
                                        | (RecordType::TXT, RData::TXT(_))
                                );
                                if wanted {
                                    response.add_answer(Record::from_rdata(
                                        q.name().clone(),
                                        60,
                                        d.clone(),
                                    ));
                                }
                            }
                        }
                    }
                }
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        addr
    }
}
