//! Reading a Maildir folder with Dovecot's `dovecot-uidlist`: the UIDL Dovecot's POP3 gave
//! each message is its `P` extension when the list has one, else Dovecot's default
//! `pop3_uidl_format`, `%08Xu%08Xv` (UID and UID validity in eight hex digits each, which
//! Dovecot 2.3 writes in lower case: checked against its POP3 in e2e_import). A message the list
//! does not name yet (Dovecot had not seen it) keeps its file's base name as UIDL. Line ends
//! become CRLF, as POP3 sends them.

use super::{SourceHandle, SourceMailbox, SourceMessage};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tern_store::BodyWriter;
use tokio::io::AsyncReadExt;

pub struct MaildirMailbox {
    path: PathBuf,
}

impl MaildirMailbox {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if !path.join("cur").is_dir() && !path.join("new").is_dir() {
            bail!("{} is not a Maildir (no cur/ or new/)", path.display());
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

/// By file base name: the UID, and the POP3 UIDL when the list names one.
pub type Uids = HashMap<String, (u32, Option<String>)>;

/// UID validity and the messages' UIDs, from a `dovecot-uidlist`.
pub fn parse_uidlist(text: &str) -> anyhow::Result<(u32, Uids)> {
    let mut lines = text.lines();
    let header = lines.next().context("empty dovecot-uidlist")?;
    let mut fields = header.split_whitespace();
    if fields.next() != Some("3") {
        bail!("dovecot-uidlist version other than 3: {header:?}");
    }
    let validity = fields
        .find_map(|f| f.strip_prefix('V'))
        .and_then(|v| v.parse().ok())
        .context("dovecot-uidlist header without UID validity")?;
    let mut by_name = HashMap::new();
    for line in lines {
        let Some((head, name)) = line.split_once(" :").or_else(|| line.split_once(':')) else {
            continue;
        };
        let mut parts = head.split_whitespace();
        let Some(uid) = parts.next().and_then(|u| u.parse::<u32>().ok()) else {
            continue;
        };
        let pop3 = parts.find_map(|p| p.strip_prefix('P')).map(str::to_string);
        by_name.insert(name.trim().to_string(), (uid, pop3));
    }
    Ok((validity, by_name))
}

/// A file name's base: what comes before Maildir's `:2,flags` info.
fn base_name(file: &str) -> &str {
    file.split_once(':').map_or(file, |(b, _)| b)
}

#[async_trait::async_trait]
impl SourceMailbox for MaildirMailbox {
    async fn messages(&mut self) -> anyhow::Result<Vec<SourceMessage>> {
        let list = self.path.join("dovecot-uidlist");
        let (validity, by_name) = match tokio::fs::read_to_string(&list).await {
            Ok(text) => {
                parse_uidlist(&text).with_context(|| format!("reading {}", list.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, HashMap::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", list.display())),
        };
        let mut found: Vec<(Option<u32>, String, PathBuf)> = Vec::new();
        for dir in ["cur", "new"] {
            let mut entries = match tokio::fs::read_dir(self.path.join(dir)).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            while let Some(entry) = entries.next_entry().await? {
                let file = entry.file_name().to_string_lossy().to_string();
                if file.starts_with('.') {
                    continue;
                }
                let base = base_name(&file).to_string();
                let (uid, uidl) = match by_name.get(&base) {
                    Some((uid, Some(p))) => (Some(*uid), p.clone()),
                    Some((uid, None)) => (Some(*uid), format!("{uid:08x}{validity:08x}")),
                    None => (None, base.clone()),
                };
                found.push((uid, uidl, entry.path()));
            }
        }
        // Dovecot's order: by UID; messages it has not numbered yet come last.
        found.sort_by(|a, b| (a.0.is_none(), a.0, &a.1).cmp(&(b.0.is_none(), b.0, &b.1)));
        Ok(found
            .into_iter()
            .map(|(_, uidl, path)| SourceMessage {
                uidl,
                handle: SourceHandle::File(path),
            })
            .collect())
    }

    async fn copy_into(
        &mut self,
        handle: &SourceHandle,
        body: &mut dyn BodyWriter,
    ) -> anyhow::Result<u64> {
        let SourceHandle::File(path) = handle else {
            bail!("not a Maildir message");
        };
        let mut file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::with_capacity(buf.len() + 1024);
        let (mut previous, mut size) = (0u8, 0u64);
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.clear();
            for &b in &buf[..n] {
                if b == b'\n' && previous != b'\r' {
                    out.push(b'\r');
                }
                out.push(b);
                previous = b;
            }
            size += out.len() as u64;
            body.write(&out).await?;
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidlist_names_uids_and_pop3_uidls() {
        let text = "3 V1700000000 N4 G0123456789abcdef\n1 :1700000001.M1P2.host\n2 W120 P00AB :1700000002.M2P2.host\n3 S55 :1700000003.M3P3.host\n";
        let (validity, m) = parse_uidlist(text).unwrap();
        assert_eq!(validity, 1_700_000_000);
        assert_eq!(m["1700000001.M1P2.host"], (1, None));
        assert_eq!(m["1700000002.M2P2.host"], (2, Some("00AB".into())));
        assert_eq!(m["1700000003.M3P3.host"].0, 3);
        assert!(parse_uidlist("1 V1\n").is_err());
        assert_eq!(
            base_name("1700000001.M1P2.host:2,S"),
            "1700000001.M1P2.host"
        );
        assert_eq!(
            format!("{:08x}{:08x}", 1u32, 1_700_000_000u32),
            "000000016553f100"
        );
    }
}
