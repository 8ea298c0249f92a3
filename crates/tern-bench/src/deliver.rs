use super::stats::{process_cpu, Collected, Report};
use super::user_name;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct DeliverArgs {
    pub server: SocketAddr,
    /// Speak LMTP (LHLO, one reply per recipient after DATA) instead of SMTP.
    pub lmtp: bool,
    pub messages: u64,
    /// Approximate message size in octets (headers included).
    pub size: usize,
    pub users: usize,
    pub prefix: String,
    pub domain: String,
    pub concurrency: usize,
    /// Keep each connection for many messages instead of one connection per message.
    pub reuse: bool,
    /// Send MAIL, RCPT and DATA in one write (RFC 2920).
    pub pipeline: bool,
    pub timeout: Duration,
}

/// A message of about `size` octets, already dot-stuffed and terminated.
fn make_message(size: usize) -> Vec<u8> {
    let mut m =
        b"From: bench@load.test\r\nTo: bench@load.test\r\nSubject: tern bench\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuv\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b".\r\n");
    m
}

struct Conn {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    line: String,
}

impl Conn {
    async fn open(args: &DeliverArgs) -> anyhow::Result<Self> {
        let s = TcpStream::connect(args.server).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = Conn {
            r: BufReader::new(r),
            w,
            line: String::new(),
        };
        c.expect(220).await?;
        let hello = if args.lmtp {
            "LHLO bench.test\r\n"
        } else {
            "EHLO bench.test\r\n"
        };
        c.w.write_all(hello.as_bytes()).await?;
        c.expect(250).await?;
        Ok(c)
    }

    /// Reads one (possibly multi-line) reply and checks its code.
    async fn expect(&mut self, code: u16) -> anyhow::Result<()> {
        loop {
            self.line.clear();
            if self.r.read_line(&mut self.line).await? == 0 {
                anyhow::bail!("server closed the connection");
            }
            if self.line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        let got: u16 = self.line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        anyhow::ensure!(got == code, "expected {code}, got {}", self.line.trim_end());
        Ok(())
    }
}

async fn one_message(
    conn: &mut Conn,
    args: &DeliverArgs,
    rcpt: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    let mail = "MAIL FROM:<bench@load.test>\r\n";
    let rcpt = format!("RCPT TO:<{rcpt}>\r\n");
    if args.pipeline {
        conn.w
            .write_all(format!("{mail}{rcpt}DATA\r\n").as_bytes())
            .await?;
        conn.expect(250).await?;
        conn.expect(250).await?;
        conn.expect(354).await?;
    } else {
        conn.w.write_all(mail.as_bytes()).await?;
        conn.expect(250).await?;
        conn.w.write_all(rcpt.as_bytes()).await?;
        conn.expect(250).await?;
        conn.w.write_all(b"DATA\r\n").await?;
        conn.expect(354).await?;
    }
    conn.w.write_all(body).await?;
    conn.expect(250).await
}

pub async fn run_deliver(args: DeliverArgs) -> Report {
    let body = Arc::new(make_message(args.size));
    let next = Arc::new(AtomicU64::new(0));
    let cpu0 = process_cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (args, body, next) = (args.clone(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Collected::new();
            let mut conn: Option<Conn> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.messages {
                    break;
                }
                let rcpt = user_name(&args.prefix, (i as usize) % args.users.max(1), &args.domain);
                let t0 = Instant::now();
                let attempt = tokio::time::timeout(args.timeout, async {
                    if conn.is_none() {
                        conn = Some(Conn::open(&args).await?);
                    }
                    let Some(cn) = conn.as_mut() else {
                        anyhow::bail!("no connection")
                    };
                    one_message(cn, &args, &rcpt, &body).await?;
                    if !args.reuse {
                        cn.w.write_all(b"QUIT\r\n").await?;
                        cn.expect(221).await?;
                        conn = None;
                    }
                    Ok(())
                })
                .await;
                match attempt {
                    Ok(Ok(())) => {
                        c.latencies_us.push(t0.elapsed().as_micros() as u64);
                        c.messages += 1;
                        c.bytes += body.len() as u64;
                    }
                    Ok(Err(e)) => {
                        c.error(e);
                        conn = None;
                    }
                    Err(_) => {
                        c.error("timed out");
                        conn = None;
                    }
                }
            }
            if let Some(mut cn) = conn {
                let _ = cn.w.write_all(b"QUIT\r\n").await;
            }
            c
        }));
    }
    let mut all = Collected::new();
    for t in tasks {
        if let Ok(c) = t.await {
            all.merge(c);
        }
    }
    let kind = if args.lmtp {
        "deliver (LMTP)"
    } else {
        "deliver (SMTP)"
    };
    Report::build(
        kind,
        args.concurrency,
        all,
        started.elapsed(),
        process_cpu().saturating_sub(cpu0),
    )
}
