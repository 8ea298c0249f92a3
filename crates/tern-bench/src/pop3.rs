use super::stats::{process_cpu, Collected, Report};
use super::user_name;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pop3Mode {
    /// Log in, STAT, QUIT.
    Stat,
    /// Log in, STAT, LIST, QUIT.
    List,
    /// Log in, STAT, UIDL, QUIT.
    Uidl,
    /// Log in, STAT, LIST, UIDL, QUIT: what a polling client does before fetching.
    Listing,
    /// Log in, STAT, RETR every message, QUIT.
    RetrAll,
    /// Log in, STAT, RETR and DELE every message, QUIT.
    Drain,
}

#[derive(Debug, Clone)]
pub struct Pop3Args {
    pub server: SocketAddr,
    pub users: usize,
    pub prefix: String,
    pub domain: String,
    pub password: String,
    pub concurrency: usize,
    pub duration: Duration,
    pub mode: Pop3Mode,
    pub timeout: Duration,
}

struct Session {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    line: Vec<u8>,
}

impl Session {
    async fn ok(&mut self) -> anyhow::Result<()> {
        self.line.clear();
        if self.r.read_until(b'\n', &mut self.line).await? == 0 {
            anyhow::bail!("server closed the connection");
        }
        anyhow::ensure!(
            self.line.starts_with(b"+OK"),
            "{}",
            String::from_utf8_lossy(&self.line).trim_end()
        );
        Ok(())
    }

    /// Consumes a multi-line body up to CRLF.CRLF; returns its size on the wire.
    async fn multiline(&mut self) -> anyhow::Result<u64> {
        const END: &[u8] = b"\r\n.\r\n";
        // The status line's CRLF counts as the start of the terminator.
        let mut matched = 2;
        let mut total = 0u64;
        loop {
            let buf = self.r.fill_buf().await?;
            anyhow::ensure!(!buf.is_empty(), "server closed the connection mid-response");
            let mut used = buf.len();
            for (i, &b) in buf.iter().enumerate() {
                if b == END[matched] {
                    matched += 1;
                    if matched == END.len() {
                        used = i + 1;
                        break;
                    }
                } else {
                    matched = usize::from(b == b'\r');
                }
            }
            total += used as u64;
            self.r.consume(used);
            if matched == END.len() {
                return Ok(total);
            }
        }
    }
}

async fn session(args: &Pop3Args, user: &str, c: &mut Collected) -> anyhow::Result<()> {
    let s = TcpStream::connect(args.server).await?;
    s.set_nodelay(true)?;
    let (r, w) = s.into_split();
    let mut s = Session {
        r: BufReader::with_capacity(64 * 1024, r),
        w,
        line: Vec::new(),
    };
    s.ok().await?;
    s.w.write_all(format!("USER {user}\r\nPASS {}\r\nSTAT\r\n", args.password).as_bytes())
        .await?;
    s.ok().await?;
    s.ok().await?;
    s.ok().await?;
    let stat = String::from_utf8_lossy(&s.line).to_string();
    let count: usize = stat
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    match args.mode {
        Pop3Mode::Stat => {}
        Pop3Mode::List | Pop3Mode::Uidl | Pop3Mode::Listing => {
            let mut cmds: Vec<&[u8]> = Vec::new();
            if args.mode != Pop3Mode::Uidl {
                cmds.push(b"LIST\r\n");
            }
            if args.mode != Pop3Mode::List {
                cmds.push(b"UIDL\r\n");
            }
            for cmd in cmds {
                s.w.write_all(cmd).await?;
                s.ok().await?;
                s.multiline().await?;
            }
        }
        Pop3Mode::RetrAll | Pop3Mode::Drain => {
            for i in 1..=count {
                s.w.write_all(format!("RETR {i}\r\n").as_bytes()).await?;
                s.ok().await?;
                c.bytes += s.multiline().await?;
                c.messages += 1;
                if args.mode == Pop3Mode::Drain {
                    s.w.write_all(format!("DELE {i}\r\n").as_bytes()).await?;
                    s.ok().await?;
                }
            }
        }
    }
    s.w.write_all(b"QUIT\r\n").await?;
    s.ok().await?;
    Ok(())
}

pub async fn run_pop3(args: Pop3Args) -> Report {
    let cpu0 = process_cpu();
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = Vec::new();
    for w in 0..args.concurrency.max(1) {
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Collected::new();
            let mut k = w;
            while Instant::now() < deadline {
                let user = user_name(&args.prefix, k % args.users.max(1), &args.domain);
                k += args.concurrency.max(1);
                let t0 = Instant::now();
                match tokio::time::timeout(args.timeout, session(&args, &user, &mut c)).await {
                    Ok(Ok(())) => c.latencies_us.push(t0.elapsed().as_micros() as u64),
                    Ok(Err(e)) => c.error(e),
                    Err(_) => c.error("timed out"),
                }
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
    let kind = format!("pop3 {:?}", args.mode).to_lowercase();
    Report::build(
        &kind,
        args.concurrency,
        all,
        started.elapsed(),
        process_cpu().saturating_sub(cpu0),
    )
}
