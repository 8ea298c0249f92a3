//! Sender Rewriting Scheme (SRS0, as in Shevek's paper and postsrsd): mail forwarded to another
//! domain leaves with an envelope sender of our own domain, so the next hop's SPF check sees a
//! sender we are authorised for; a bounce to that address comes back here, is checked and goes
//! on to the original sender.
//!
//! `SRS0=HHHH=TT=domain=local@srs-domain`: TT is the day (base32, two characters, modulo
//! 1024), HHHH a keyed BLAKE2b MAC of TT, domain and local part (base64, four characters). Only
//! Tern reads its own addresses back, so the MAC need not be the HMAC-SHA1 others use; every
//! node must share the secret.

use base64::Engine as _;
use blake2::digest::consts::U32;
use blake2::digest::Mac;

/// How long a rewritten address stays valid, in days (postsrsd: 21).
const MAX_AGE_DAYS: u64 = 21;
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Rewrites and reverses sender addresses with one secret and one domain.
#[derive(Clone)]
pub struct Srs {
    secret: Vec<u8>,
    domain: String,
}

impl Srs {
    pub fn new(secret: &str, domain: &str) -> Self {
        // A BLAKE2b key is at most 64 octets: a longer secret is hashed down to that.
        let secret = if secret.len() > 64 {
            use blake2::Digest;
            blake2::Blake2b512::digest(secret.as_bytes()).to_vec()
        } else {
            secret.as_bytes().to_vec()
        };
        Self {
            secret,
            domain: domain.to_ascii_lowercase(),
        }
    }

    /// Whether `domain` is the domain of our SRS addresses.
    pub fn is_srs_domain(&self, domain: &str) -> bool {
        domain.eq_ignore_ascii_case(&self.domain)
    }

    fn mac(&self, tt: &str, domain: &str, local: &str) -> String {
        let Ok(mut mac) = <blake2::Blake2bMac<U32> as Mac>::new_from_slice(&self.secret) else {
            return String::new();
        };
        mac.update(tt.as_bytes());
        mac.update(b"\0");
        mac.update(domain.to_ascii_lowercase().as_bytes());
        mac.update(b"\0");
        mac.update(local.to_ascii_lowercase().as_bytes());
        let digest = mac.finalize().into_bytes();
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest[..3])
    }

    fn today() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() / 86_400)
            .unwrap_or(0)
    }

    fn timestamp(day: u64) -> String {
        let t = day % 1024;
        let chars = [BASE32[(t >> 5) as usize], BASE32[(t & 31) as usize]];
        String::from_utf8_lossy(&chars).to_string()
    }

    /// The forwarding sender for `sender` (`local@domain`); the null sender and addresses
    /// already of our SRS domain stay as they are.
    pub fn forward(&self, sender: &str) -> String {
        self.forward_on(sender, Self::today())
    }

    fn forward_on(&self, sender: &str, day: u64) -> String {
        let Some((local, domain)) = sender.rsplit_once('@') else {
            return sender.to_string();
        };
        if domain.eq_ignore_ascii_case(&self.domain) || local.is_empty() {
            return sender.to_string();
        }
        let tt = Self::timestamp(day);
        let hash = self.mac(&tt, domain, local);
        format!("SRS0={hash}={tt}={domain}={local}@{}", self.domain)
    }

    /// The original sender behind an SRS address of our domain, if it is one and is genuine
    /// and recent; `None` for anything else.
    pub fn reverse(&self, address: &str) -> Option<String> {
        self.reverse_on(address, Self::today())
    }

    fn reverse_on(&self, address: &str, today: u64) -> Option<String> {
        let (local, domain) = address.rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        let rest = local
            .strip_prefix("SRS0=")
            .or_else(|| local.strip_prefix("srs0="))?;
        let mut parts = rest.splitn(4, '=');
        let (hash, tt, orig_domain, orig_local) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if orig_domain.is_empty() || orig_local.is_empty() {
            return None;
        }
        // Case may have been changed on the way: the MAC is compared as sent, the timestamp
        // case-insensitively.
        let expected = self.mac(&tt.to_ascii_uppercase(), orig_domain, orig_local);
        if expected.is_empty() || expected != hash {
            return None;
        }
        let tt = tt.to_ascii_uppercase();
        let value = |c: u8| BASE32.iter().position(|b| *b == c).map(|v| v as u64);
        let bytes = tt.as_bytes();
        if bytes.len() != 2 {
            return None;
        }
        let stamp = value(bytes[0])? << 5 | value(bytes[1])?;
        let age = (today % 1024 + 1024 - stamp) % 1024;
        (age <= MAX_AGE_DAYS).then(|| format!("{orig_local}@{orig_domain}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_reverse() {
        let srs = Srs::new("shared secret", "Fwd.Tern.test");
        let f = srs.forward_on("Bob@Sender.example", 20_000);
        assert!(
            f.starts_with("SRS0=") && f.ends_with("=Sender.example=Bob@fwd.tern.test"),
            "{f}"
        );
        assert_eq!(
            srs.reverse_on(&f, 20_000).as_deref(),
            Some("Bob@Sender.example")
        );
        assert_eq!(
            srs.reverse_on(&f, 20_021).as_deref(),
            Some("Bob@Sender.example")
        );
        assert_eq!(srs.reverse_on(&f, 20_022), None, "too old");
        // Wrong secret, tampering, other domains, plain addresses.
        assert_eq!(
            Srs::new("other", "fwd.tern.test").reverse_on(&f, 20_000),
            None
        );
        assert_eq!(srs.reverse_on(&f.replace("=Bob@", "=Eve@"), 20_000), None);
        assert_eq!(
            srs.reverse_on(&f.replace("fwd.tern.test", "else.test"), 20_000),
            None
        );
        assert_eq!(srs.reverse_on("alice@fwd.tern.test", 20_000), None);
        assert_eq!(srs.reverse_on("SRS0=x@fwd.tern.test", 20_000), None);
        // Not rewritten: the null sender, our own domain.
        assert_eq!(srs.forward(""), "");
        assert_eq!(srs.forward("x@fwd.tern.test"), "x@fwd.tern.test");
        let long = Srs::new(&"k".repeat(200), "fwd.tern.test");
        let f = long.forward("a@b.example");
        assert_eq!(long.reverse(&f).as_deref(), Some("a@b.example"));
    }
}
