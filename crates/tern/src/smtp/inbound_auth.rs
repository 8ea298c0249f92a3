//! Sender authentication of mail arriving on port 25: SPF (RFC 7208) of the MAIL FROM (or HELO)
//! identity, DKIM signatures (RFC 6376), the ARC chain (RFC 8617) and DMARC (RFC 9989), all
//! through `mail-auth` (Stalwart's library, which implements each RFC with its test vectors:
//! nothing here re-implements a check). The results become one Authentication-Results header
//! (RFC 8601) that each local copy carries; a DMARC failure under `p=reject` may refuse the
//! message at the end of DATA.
//!
//! SPF needs only the envelope, so it runs while the message data arrives; DKIM, ARC and DMARC
//! need the message, held in memory up to `inbound_auth.max_verified_size`.

use crate::config::{InboundAuthSection, OutboundSection};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DmarcResult, MessageAuthenticator, SpfOutput,
};
use std::net::IpAddr;
use std::sync::Arc;

/// The checker, shared by every port-25 connection.
pub struct InboundAuth {
    authenticator: MessageAuthenticator,
    /// The authserv-id of the header: this server's name.
    hostname: String,
    settings: InboundAuthSection,
}

/// What the checks concluded for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthVerdict {
    /// The Authentication-Results header field, with its CRLF.
    pub header: String,
    /// The From domain whose `p=reject` policy the message fails, when it is to be refused.
    pub reject_for: Option<String>,
}

/// The envelope facts the checks need.
#[derive(Debug, Clone)]
pub struct Identity {
    pub ip: IpAddr,
    pub helo: String,
    /// The MAIL FROM address, empty for the null sender.
    pub sender: String,
}

impl Identity {
    /// The domain SPF and DMARC's alignment use: the sender's, or the HELO name for `<>`.
    fn spf_domain(&self) -> &str {
        match self.sender.rsplit_once('@') {
            Some((_, d)) if !d.is_empty() => d,
            _ => &self.helo,
        }
    }
}

impl InboundAuth {
    /// `None` when `inbound_auth.enabled` is off.
    pub fn new(
        settings: &InboundAuthSection,
        dns: &OutboundSection,
        hostname: &str,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if !settings.enabled {
            return Ok(None);
        }
        let options = mail_auth::hickory_resolver::config::ResolverOpts::default();
        let authenticator = match crate::outbound::route::name_servers(&dns.dns_servers) {
            Some(config) => MessageAuthenticator::new(config, options),
            None => MessageAuthenticator::new_system_conf(),
        }
        .map_err(|e| anyhow::anyhow!("inbound_auth: DNS resolver: {e}"))?;
        Ok(Some(Arc::new(Self {
            authenticator,
            hostname: hostname.to_string(),
            settings: settings.clone(),
        })))
    }

    /// Messages up to this size are held for the DKIM and ARC checks.
    pub fn max_verified_size(&self) -> u64 {
        self.settings.max_verified_size
    }

    /// Starts the SPF check of a transaction; it runs while the data arrives.
    pub fn start_spf(self: &Arc<Self>, id: Identity) -> tokio::task::JoinHandle<SpfOutput> {
        let this = self.clone();
        tokio::spawn(async move {
            let host = this.hostname.as_str();
            let params = if id.sender.is_empty() {
                SpfParameters::verify_ehlo(id.ip, &id.helo, host)
            } else {
                SpfParameters::verify_mail_from(id.ip, &id.helo, host, &id.sender)
            };
            this.authenticator.verify_spf(params).await
        })
    }

    /// Checks the message (`message` when it was held whole, else `header` alone: DMARC then
    /// rests on SPF) and sums up.
    pub async fn verdict(
        &self,
        id: &Identity,
        spf: SpfOutput,
        message: Option<&[u8]>,
        header: &[u8],
    ) -> AuthVerdict {
        let header_only;
        let (raw, whole) = match message {
            Some(m) => (m, true),
            None => {
                header_only = [header, b"\r\n\r\n"].concat();
                (&header_only[..], false)
            }
        };
        let mut results = AuthenticationResults::new(&self.hostname);
        let Some(parsed) = AuthenticatedMessage::parse(raw) else {
            // Not a message mail-auth can read: SPF is all there is to say.
            results = results.with_spf_mailfrom_result(&spf, id.ip, &id.sender, &id.helo);
            return AuthVerdict {
                header: results.to_header(),
                reject_for: None,
            };
        };
        let dkim = if whole {
            self.authenticator.verify_dkim(&parsed).await
        } else {
            Vec::new()
        };
        let from = parsed.from.first().cloned().unwrap_or_default();
        results = results.with_dkim_results(&dkim, &from);
        results = if id.sender.is_empty() {
            results.with_spf_ehlo_result(&spf, id.ip, &id.helo)
        } else {
            results.with_spf_mailfrom_result(&spf, id.ip, &id.sender, &id.helo)
        };
        if whole {
            let arc = self.authenticator.verify_arc(&parsed).await;
            results = results.with_arc_result(&arc, id.ip);
        }
        let dmarc = self
            .authenticator
            .verify_dmarc(DmarcParameters::new(&parsed, &dkim, id.spf_domain(), &spf))
            .await;
        results = results.with_dmarc_result(&dmarc);
        let failed = matches!(dmarc.result(), DmarcResult::Fail(_));
        let reject_for =
            (failed && dmarc.policy() == Policy::Reject && self.settings.reject_dmarc_failures)
                .then(|| dmarc.domain().to_string());
        // RFC 8601 section 2.7.1: "none" when the message has no signature; mail-auth writes
        // nothing then.
        let mut text = results.to_string();
        if dkim.is_empty() {
            let none = if whole {
                ";\r\n\tdkim=none"
            } else {
                ";\r\n\tdkim=none (not checked: larger than inbound_auth.max_verified_size)"
            };
            text.insert_str(self.hostname.len(), none);
        }
        AuthVerdict {
            header: format!("Authentication-Results: {text}\r\n"),
            reject_for,
        }
    }
}
