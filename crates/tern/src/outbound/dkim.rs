//! DKIM signing (RFC 6376) of mail leaving for other domains, per sender domain, with the
//! `mail-auth` crate: rsa-sha256 or ed25519-sha256 keys from PEM files, relaxed/relaxed
//! canonicalization. A message is signed once, as it is received (streaming: only its header is
//! buffered); the signature is kept with the queue entry and sent in front of the stored
//! message.

use anyhow::{anyhow, Context};
use base64::Engine as _;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, DkimSigningStream, Done};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use std::collections::HashMap;
use std::path::Path;

/// The header fields signed when present (RFC 6376 section 5.4.1's recommendations).
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
];

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// The signing keys, by sender domain.
#[derive(Default)]
pub struct DkimKeys {
    by_domain: HashMap<String, Signer>,
}

impl DkimKeys {
    /// Loads every configured key; a missing or unusable file is an error naming it. The keys
    /// live as long as the process (one small allocation per server start), so that a signing
    /// stream can outlive the request that started it.
    pub fn load(keys: &[crate::config::DkimKey]) -> anyhow::Result<&'static DkimKeys> {
        let mut by_domain = HashMap::new();
        for k in keys {
            let signer = load_signer(&k.domain, &k.selector, &k.private_key_file)?;
            by_domain.insert(k.domain.to_ascii_lowercase(), signer);
        }
        Ok(Box::leak(Box::new(Self { by_domain })))
    }

    /// Checks that every key loads (`tern check-config`), without keeping them.
    pub fn check(keys: &[crate::config::DkimKey]) -> anyhow::Result<()> {
        for k in keys {
            load_signer(&k.domain, &k.selector, &k.private_key_file)?;
        }
        Ok(())
    }

    /// A signer for a message from `domain`, if a key is configured for it.
    pub fn start(&'static self, domain: &str) -> Option<SigningStream> {
        Some(match self.by_domain.get(&domain.to_ascii_lowercase())? {
            Signer::Rsa(s) => SigningStream::Rsa(s.sign_streaming()),
            Signer::Ed25519(s) => SigningStream::Ed25519(s.sign_streaming()),
        })
    }
}

/// A message being signed as it arrives.
pub enum SigningStream {
    Rsa(DkimSigningStream<'static, RsaKey<Sha256>>),
    Ed25519(DkimSigningStream<'static, Ed25519Key>),
}

impl SigningStream {
    /// The next bytes of the message.
    pub fn write(&mut self, chunk: &[u8]) {
        match self {
            SigningStream::Rsa(s) => s.write(chunk),
            SigningStream::Ed25519(s) => s.write(chunk),
        }
    }

    /// The `DKIM-Signature` header field, with its CRLF; `None` if the message cannot be
    /// signed (it has none of the header fields DKIM signs).
    pub fn finish(self) -> Option<String> {
        let signature = match self {
            SigningStream::Rsa(s) => s.finish(),
            SigningStream::Ed25519(s) => s.finish(),
        };
        match signature {
            Ok(sig) => Some(sig.to_header()),
            Err(e) => {
                tracing::warn!(error = %e, "message not DKIM-signed");
                None
            }
        }
    }
}

fn load_signer(domain: &str, selector: &str, file: &Path) -> anyhow::Result<Signer> {
    let domain = &domain.to_ascii_lowercase();
    let der = PrivateKeyDer::from_pem_file(file)
        .with_context(|| format!("reading the DKIM key of {domain} from {}", file.display()))?;
    let rsa = RsaKey::<Sha256>::from_key_der(der.clone_key());
    let signer = match (rsa, &der) {
        (Ok(key), _) => Signer::Rsa(configure(DkimSigner::from_key(key), domain, selector)),
        (Err(_), PrivateKeyDer::Pkcs8(p)) => {
            let key = Ed25519Key::from_pkcs8_der(p.secret_pkcs8_der()).map_err(|e| {
                anyhow!("{}: neither an RSA nor an Ed25519 key: {e}", file.display())
            })?;
            Signer::Ed25519(configure(DkimSigner::from_key(key), domain, selector))
        }
        (Err(e), _) => return Err(anyhow!("{}: not a usable RSA key: {e}", file.display())),
    };
    Ok(signer)
}

fn configure<T: mail_auth::common::crypto::SigningKey>(
    signer: DkimSigner<T, mail_auth::dkim::NeedDomain>,
    domain: &str,
    selector: &str,
) -> DkimSigner<T, Done> {
    signer
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_sign_as_a_stream() {
        let dir = tempfile::tempdir().unwrap();
        for (algorithm, a) in [
            (KeyAlgorithm::Rsa, "rsa-sha256"),
            (KeyAlgorithm::Ed25519, "ed25519-sha256"),
        ] {
            let (path, record) = keygen("example.com", "s1", algorithm, dir.path()).unwrap();
            assert!(
                record.starts_with("s1._domainkey.example.com. IN TXT \"v=DKIM1; k="),
                "{record}"
            );
            let keys = DkimKeys::load(&[crate::config::DkimKey {
                domain: "Example.com".into(),
                selector: "s1".into(),
                private_key_file: path,
            }])
            .unwrap();
            assert!(keys.start("other.test").is_none());
            let mut s = keys.start("example.com").unwrap();
            for chunk in [
                &b"From: a@example.com\r\nSubj"[..],
                b"ect: hi\r\n\r\nbody\r\n",
            ] {
                s.write(chunk);
            }
            let header = s.finish().unwrap();
            assert!(
                header.starts_with("DKIM-Signature: ") && header.ends_with("\r\n"),
                "{header}"
            );
            assert!(
                header.contains(&format!("a={a}")) && header.contains("d=example.com"),
                "{header}"
            );
            assert!(
                header.contains("s=s1") && header.contains("c=relaxed/relaxed"),
                "{header}"
            );
        }
        let garbage = dir.path().join("bad.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        let err = DkimKeys::check(&[crate::config::DkimKey {
            domain: "example.com".into(),
            selector: "s1".into(),
            private_key_file: garbage,
        }])
        .unwrap_err();
        assert!(format!("{err:#}").contains("bad.pem"), "{err:#}");
    }
}

/// Which kind of key `tern dkim keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// RSA, 2048 bits: what every verifier understands.
    Rsa,
    /// Ed25519 (RFC 8463): short, but not verified everywhere yet.
    Ed25519,
}

/// Writes a new key for `selector._domainkey.domain` to `dir` (mode 600) and returns its path
/// and the DNS TXT record to publish.
pub fn keygen(
    domain: &str,
    selector: &str,
    algorithm: KeyAlgorithm,
    dir: &Path,
) -> anyhow::Result<(std::path::PathBuf, String)> {
    use mail_auth::dkim::generate::DkimKeyPair;
    let (pair, label, kind) = match algorithm {
        KeyAlgorithm::Rsa => (DkimKeyPair::generate_rsa(2048), "RSA PRIVATE KEY", "rsa"),
        KeyAlgorithm::Ed25519 => (DkimKeyPair::generate_ed25519(), "PRIVATE KEY", "ed25519"),
    };
    let pair = pair.map_err(|e| anyhow!("generating the key: {e}"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = b64.encode(pair.private_key());
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{domain}.{selector}.pem"));
    crate::tls::write_private(&path, pem.as_bytes())?;
    // Checked the way `serve` will load it.
    load_signer(domain, selector, &path)?;
    let record = format!(
        "{selector}._domainkey.{domain}. IN TXT \"v=DKIM1; k={kind}; p={}\"",
        b64.encode(pair.public_key())
    );
    Ok((path, record))
}
