//! TLS for every listener (rustls, TLS 1.2 and 1.3 only): loading the certificate chain and key
//! from PEM files, reloading them without a restart, and making development certificates.

use crate::config::TlsSection;
use anyhow::{anyhow, Context};
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// Serves whatever certificate was loaded last; [`CertStore::reload`] swaps it in place, so
/// connections accepted afterwards use the new one and established ones are unaffected.
#[derive(Debug)]
pub struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    pub fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<Self>> {
        let key = load_certified_key(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Re-reads the files; on any error the current certificate stays in use.
    pub fn reload(&self) -> anyhow::Result<()> {
        let key = load_certified_key(&self.cert_file, &self.key_file)?;
        let mut current = self
            .current
            .write()
            .map_err(|_| anyhow!("certificate lock poisoned"))?;
        *current = Arc::new(key);
        Ok(())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| k.clone())
    }
}

fn load_certified_key(cert_file: &Path, key_file: &Path) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("reading certificates from {}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate found in {}",
        cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading the private key from {}", key_file.display()))?;
    let signing_key = provider::sign::any_supported_type(&key)
        .map_err(|e| anyhow!("unsupported private key in {}: {e}", key_file.display()))?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(|e| {
        anyhow!(
            "{} does not match {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(certified)
}

/// A TLS acceptor (TLS 1.2+) serving the store's current certificate, with session
/// resumption as `tls` configures it.
pub fn acceptor(certs: Arc<CertStore>, tls: &TlsSection) -> anyhow::Result<TlsAcceptor> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(certs);
    // Resumption spares a returning client (a mail client polls every few minutes) the
    // certificate signature and the key exchange of a full handshake. Tickets are stateless:
    // the client keeps the encrypted session, this node keeps only the rotating key (each
    // node its own: a ticket from another node falls back to a full handshake). The cache
    // serves TLS 1.2 session ids, and TLS 1.3 when tickets are off.
    config.session_storage = if tls.session_cache_entries == 0 {
        Arc::new(rustls::server::NoServerSessionStorage {})
    } else {
        rustls::server::ServerSessionMemoryCache::new(tls.session_cache_entries)
    };
    if tls.session_tickets {
        config.ticketer = provider::Ticketer::new().context("TLS session ticket keys")?;
    } else if tls.session_cache_entries == 0 {
        config.send_tls13_tickets = 0;
    }
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Writes a self-signed certificate for `domain` (and localhost) to `out/cert.pem` and
/// `out/key.pem`, for development and tests.
pub fn write_self_signed(domain: &str, out: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut names = vec![domain.to_string()];
    if domain != "localhost" {
        names.push("localhost".into());
    }
    let cert = rcgen::generate_simple_self_signed(names).context("generating the certificate")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (cert_path, key_path) = (out.join("cert.pem"), out.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem())?;
    write_private(&key_path, cert.key_pair.serialize_pem().as_bytes())?;
    Ok((cert_path, key_path))
}

pub fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

/// Runs the server side of a TLS handshake, bounded in time; `None` if it fails (logged).
pub async fn handshake<S>(
    acceptor: &TlsAcceptor,
    stream: S,
    peer: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let limit = timeout.min(std::time::Duration::from_secs(30));
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// The TLS client of remote delivery. Server certificates are not checked: MTA-to-MTA TLS on
/// port 25 is opportunistic encryption (RFC 7435), as Postfix's `may` and `encrypt` levels,
/// because most MX hosts are not reached under a name their certificate could vouch for (RFC
/// 7672 section 1.3). The handshake signatures are still verified, so the session key is bound
/// to the certificate the server presented.
pub fn outbound_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(provider::default_provider());
    let verifier = Arc::new(OpportunisticVerifier(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A TLS client that verifies the server's certificate against the CAs of `ca_file` (PEM) and
/// the name connected to: for the relay host, which receives credentials.
pub fn verifying_connector(ca_file: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading certificates from {}", ca_file.display()))?
    {
        let cert = cert.with_context(|| format!("parsing {}", ca_file.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("using a certificate of {}", ca_file.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate in {}", ca_file.display());
    let provider = Arc::new(provider::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[derive(Debug)]
struct OpportunisticVerifier(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for OpportunisticVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
