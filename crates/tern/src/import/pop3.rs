//! Reading a mailbox from another POP3 server (RFC 1939): USER/PASS, UIDL, RETR, QUIT without
//! any DELE, so the source is left as it was. Written by hand: it is five commands, and the
//! body decoding (dot-unstuffing up to CRLF.CRLF) is tern-proto's own `DataDecoder`.

use super::{SourceHandle, SourceMailbox, SourceMessage};
use crate::driver::BoxStream;
use anyhow::{anyhow, bail, Context};
use std::path::Path;
use std::time::Duration;
use tern_proto::dot::DataDecoder;
use tern_store::BodyWriter;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Longest wait for any answer of the source server.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest status or listing line accepted.
const MAX_LINE: usize = 8 * 1024;
/// Largest message copied (the source's own limit is usually far lower).
const MAX_MESSAGE: u64 = 1 << 30;

pub struct Pop3Mailbox {
    stream: BufReader<BoxStream>,
}

impl Pop3Mailbox {
    pub async fn open(
        server: &str,
        tls: bool,
        ca_file: Option<&Path>,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Self> {
        let tcp = tokio::time::timeout(READ_TIMEOUT, tokio::net::TcpStream::connect(server))
            .await
            .map_err(|_| anyhow!("connecting to {server}: timed out"))?
            .with_context(|| format!("connecting to {server}"))?;
        let stream: BoxStream = if tls {
            let ca = ca_file.ok_or_else(|| anyhow!("TLS to the source needs its CA file"))?;
            let connector = crate::tls::verifying_connector(ca)?;
            let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .with_context(|| format!("{host} is not a server name"))?;
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .context("TLS handshake")?,
            )
        } else {
            Box::new(tcp)
        };
        let mut m = Self {
            stream: BufReader::new(stream),
        };
        m.status().await.context("greeting")?;
        m.command(&format!("USER {user}")).await?;
        m.command(&format!("PASS {password}"))
            .await
            .map_err(|e| anyhow!("login of {user} refused: {e}"))?;
        Ok(m)
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        let mut buf = Vec::new();
        let mut limited = (&mut self.stream).take(MAX_LINE as u64);
        let n = tokio::time::timeout(READ_TIMEOUT, limited.read_until(b'\n', &mut buf))
            .await
            .map_err(|_| anyhow!("the source server stopped answering"))??;
        if n == 0 {
            bail!("the source server closed the connection");
        }
        if !buf.ends_with(b"\n") {
            bail!("a line from the source server is too long");
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    }

    async fn status(&mut self) -> anyhow::Result<String> {
        let line = self.line().await?;
        match line.strip_prefix("+OK") {
            Some(rest) => Ok(rest.trim().to_string()),
            None => bail!("{}", line.chars().take(200).collect::<String>()),
        }
    }

    async fn command(&mut self, line: &str) -> anyhow::Result<String> {
        let stream = self.stream.get_mut();
        tokio::time::timeout(
            READ_TIMEOUT,
            stream.write_all(format!("{line}\r\n").as_bytes()),
        )
        .await
        .map_err(|_| anyhow!("the source server stopped reading"))??;
        self.status().await
    }

    /// The lines of a multi-line answer, without the final ".".
    async fn listing(&mut self, command: &str) -> anyhow::Result<Vec<String>> {
        self.command(command).await?;
        let mut out = Vec::new();
        loop {
            let line = self.line().await?;
            if line == "." {
                return Ok(out);
            }
            out.push(line.strip_prefix('.').map(str::to_string).unwrap_or(line));
        }
    }
}

#[async_trait::async_trait]
impl SourceMailbox for Pop3Mailbox {
    async fn messages(&mut self) -> anyhow::Result<Vec<SourceMessage>> {
        let mut out = Vec::new();
        for line in self.listing("UIDL").await? {
            let (n, uidl) = line
                .split_once(' ')
                .ok_or_else(|| anyhow!("UIDL line {line:?}"))?;
            let n: usize = n.parse().with_context(|| format!("UIDL line {line:?}"))?;
            let uidl = uidl.trim();
            // RFC 1939: 1 to 70 characters in the range 0x21 to 0x7E.
            if uidl.is_empty()
                || uidl.len() > 70
                || !uidl.bytes().all(|b| (0x21..=0x7e).contains(&b))
            {
                bail!("UIDL line {line:?}: not a valid unique-id");
            }
            out.push(SourceMessage {
                uidl: uidl.to_string(),
                handle: SourceHandle::Pop3(n),
            });
        }
        Ok(out)
    }

    async fn copy_into(
        &mut self,
        handle: &SourceHandle,
        body: &mut dyn BodyWriter,
    ) -> anyhow::Result<u64> {
        let SourceHandle::Pop3(n) = handle else {
            bail!("not a POP3 message");
        };
        self.command(&format!("RETR {n}")).await?;
        let mut decoder = DataDecoder::new(MAX_MESSAGE);
        let mut out = Vec::with_capacity(64 * 1024);
        while !decoder.is_ended() {
            let buf = tokio::time::timeout(READ_TIMEOUT, self.stream.fill_buf())
                .await
                .map_err(|_| anyhow!("the source server stopped sending"))??;
            if buf.is_empty() {
                bail!("the source server closed the connection inside a message");
            }
            out.clear();
            let decoded = decoder.decode(buf, &mut out);
            let consumed = decoded.consumed;
            self.stream.consume(consumed);
            if !out.is_empty() {
                body.write(&out).await?;
            }
        }
        if let Some(v) = decoder.violation() {
            bail!("message {n} not copied: {v:?} (bare line ends or over 1 GiB)");
        }
        Ok(decoder.size())
    }

    async fn close(&mut self) {
        let _ = self.command("QUIT").await;
    }
}
