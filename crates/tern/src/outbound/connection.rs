//! One connection to a remote SMTP server: the I/O around a sans-IO [`SmtpClient`] (connect,
//! TLS, reads bounded by the client's reply timeout, the body streamed with dot-stuffing).

use super::route::Target;
use crate::driver::BoxStream;
use std::time::Duration;
use tern_proto::dot::RetrEncoder;
use tern_proto::smtp::client::{ClientAction, ClientConfig, Envelope, Reply, SmtpClient};
use tern_store::BodyReader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A connection in the ready state, between transactions.
pub struct Connection {
    stream: BoxStream,
    client: SmtpClient,
    pub target: Target,
    write_timeout: Duration,
}

/// What the client stopped for.
enum Stop {
    Ready,
    SendBody,
    Done(Vec<Reply>),
    Closed,
}

impl Connection {
    /// Connects, reads the greeting, says EHLO, and runs STARTTLS and AUTH as configured.
    pub async fn open(
        target: Target,
        config: ClientConfig,
        tls: &tokio_rustls::TlsConnector,
        connect_timeout: Duration,
    ) -> Result<Connection, Reply> {
        let write_timeout = config.command_timeout;
        let tcp = match tokio::time::timeout(
            connect_timeout,
            tokio::net::TcpStream::connect(target.addr),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(Reply::local(
                    451,
                    format!(
                        "4.4.1 cannot connect to {} [{}]: {e}",
                        target.name, target.addr
                    ),
                ))
            }
            Err(_) => {
                return Err(Reply::local(
                    451,
                    format!(
                        "4.4.1 connection to {} [{}] timed out",
                        target.name, target.addr
                    ),
                ))
            }
        };
        let _ = tcp.set_nodelay(true);
        let implicit = config.implicit_tls;
        let mut stream: BoxStream = Box::new(tcp);
        if implicit {
            stream = handshake(stream, &target, tls, config.command_timeout).await?;
        }
        let mut conn = Connection {
            stream,
            client: SmtpClient::new(config),
            target,
            write_timeout,
        };
        match conn.run(tls).await? {
            Stop::Ready => Ok(conn),
            _ => Err(Reply::local(
                421,
                "4.5.0 unexpected state after the greeting",
            )),
        }
    }

    /// Sends one message; per recipient, the reply that decides it. `Err` means the connection
    /// failed and is gone (every recipient of the transaction gets that reply).
    pub async fn send(
        &mut self,
        envelope: Envelope,
        prefix: Option<&str>,
        mut body: Box<dyn BodyReader>,
        tls: &tokio_rustls::TlsConnector,
    ) -> Result<Vec<Reply>, Reply> {
        self.client.send_mail(envelope);
        loop {
            match self.run(tls).await? {
                Stop::SendBody => {
                    let mut encoder = RetrEncoder::retr();
                    let mut out = Vec::with_capacity(64 * 1024);
                    if let Some(header) = prefix {
                        encoder.encode(header.as_bytes(), &mut out);
                        self.write(&out).await?;
                    }
                    loop {
                        let chunk = body.next_chunk().await.map_err(|e| {
                            Reply::local(451, format!("4.3.0 cannot read the queued body: {e}"))
                        })?;
                        out.clear();
                        match chunk {
                            Some(c) => encoder.encode(&c, &mut out),
                            None => {
                                encoder.finish(&mut out);
                                self.write(&out).await?;
                                break;
                            }
                        }
                        self.write(&out).await?;
                    }
                    self.client.body_sent();
                }
                Stop::Done(replies) => return Ok(replies),
                Stop::Ready | Stop::Closed => {
                    return Err(Reply::local(421, "4.5.0 the transaction did not complete"))
                }
            }
        }
    }

    /// Says QUIT and waits (briefly) for the answer.
    pub async fn quit(mut self, tls: &tokio_rustls::TlsConnector) {
        self.client.quit();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.run(tls)).await;
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), Reply> {
        match tokio::time::timeout(self.write_timeout, self.stream.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Reply::local(421, format!("4.4.2 write failed: {e}"))),
            Err(_) => Err(Reply::local(421, "4.4.2 write timed out")),
        }
    }

    /// Runs the client until it needs the caller.
    async fn run(&mut self, tls: &tokio_rustls::TlsConnector) -> Result<Stop, Reply> {
        let mut buf = vec![0u8; 8192];
        loop {
            while let Some(action) = self.client.poll() {
                match action {
                    ClientAction::Send(bytes) => self.write(&bytes).await?,
                    ClientAction::StartTls => {
                        self.stream.flush().await.ok();
                        // The stream moves into the handshake; a closed placeholder holds its
                        // place meanwhile.
                        let placeholder: BoxStream = Box::new(tokio::io::duplex(1).0);
                        let plain = std::mem::replace(&mut self.stream, placeholder);
                        self.stream =
                            handshake(plain, &self.target, tls, self.write_timeout).await?;
                        self.client.tls_established();
                    }
                    ClientAction::SendBody => return Ok(Stop::SendBody),
                    ClientAction::TransactionDone(r) => return Ok(Stop::Done(r)),
                    ClientAction::Ready => return Ok(Stop::Ready),
                    ClientAction::Failed(reply) => return Err(reply),
                    ClientAction::Closed => return Ok(Stop::Closed),
                }
            }
            if !self.client.awaits_reply() {
                return Ok(Stop::Ready);
            }
            match tokio::time::timeout(self.client.reply_timeout(), self.stream.read(&mut buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => self.client.closed(),
                Ok(Ok(n)) => self.client.feed(&buf[..n]),
                Err(_) => self.client.timed_out(),
            }
        }
    }
}

async fn handshake(
    stream: BoxStream,
    target: &Target,
    tls: &tokio_rustls::TlsConnector,
    timeout: Duration,
) -> Result<BoxStream, Reply> {
    use rustls::pki_types::ServerName;
    let name = ServerName::try_from(target.name.clone())
        .unwrap_or_else(|_| ServerName::from(target.addr.ip()));
    match tokio::time::timeout(timeout, tls.connect(name, stream)).await {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(e)) => Err(Reply::local(
            421,
            format!("4.7.0 TLS handshake with {} failed: {e}", target.name),
        )),
        Err(_) => Err(Reply::local(
            421,
            format!("4.7.0 TLS handshake with {} timed out", target.name),
        )),
    }
}
