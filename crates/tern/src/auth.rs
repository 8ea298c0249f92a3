//! Password hashing (argon2id, PHC strings) and login checks.

use crate::config::AuthSection;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use blake2::digest::consts::U32;
use blake2::digest::Mac;
use blake2::Blake2bMac;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tern_store::{Directory, MailboxId, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    BadCredentials,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

pub struct Authenticator {
    directory: Arc<dyn Directory>,
    argon2: Argon2<'static>,
    hashers: HashPool,
    cache: CredentialCache,
    /// Each user's INBOX as its last successful login found it (see [`Authenticator::inbox_hint`]).
    inbox_hints: InboxHints,
    /// Verified against when the user does not exist, so that a login for an unknown user costs
    /// as much as one with a wrong password and does not reveal which users exist.
    dummy_hash: String,
}

impl Authenticator {
    pub fn new(directory: Arc<dyn Directory>, cfg: &AuthSection) -> Result<Self, AuthError> {
        let params = Params::new(
            cfg.argon2_memory_kib,
            cfg.argon2_iterations,
            cfg.argon2_parallelism,
            None,
        )
        .map_err(|e| AuthError::Hash(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = hash_with(&argon2, "tern-dummy-password")?;
        let cache = CredentialCache::new(
            Duration::from_secs(cfg.cache_ttl_secs),
            cfg.cache_max_entries,
        );
        let hashers = HashPool::start()?;
        Ok(Self {
            directory,
            argon2,
            hashers,
            cache,
            inbox_hints: InboxHints::new(cfg.cache_max_entries),
            dummy_hash,
        })
    }

    pub fn hash_password(&self, password: &str) -> Result<String, AuthError> {
        hash_with(&self.argon2, password)
    }

    /// Hashes on the hashing threads (see [`HashPool`]).
    pub async fn hash_password_async(&self, password: String) -> Result<String, AuthError> {
        let argon2 = self.argon2.clone();
        self.hashers
            .run(move || hash_with(&argon2, &password))
            .await?
    }

    /// Checks a login; returns the user's INBOX. The user name is matched lower-cased.
    pub async fn login(&self, username: &str, password: &str) -> Result<MailboxId, AuthError> {
        let name = crate::names::normalize_user(username);
        let user = self.directory.get_user(&name).await?;
        let (hash, inbox) = match user {
            Some(u) => (u.password_hash, Some(u.inbox)),
            None => (self.dummy_hash.clone(), None),
        };
        // The directory is read on every login, so a deleted user or a changed hash is seen at
        // once; only the expensive argon2 step is skipped for a recently verified password.
        let proof = self.cache.proof(&name, &hash, password);
        if let Some(inbox) = inbox {
            if self.cache.contains(&name, &proof) {
                self.inbox_hints.remember(&name, inbox);
                return Ok(inbox);
            }
        }
        let password = password.to_string();
        // Hashing is deliberately expensive: keep it off the async workers.
        let ok = self.hashers.run(move || verify(&hash, &password)).await?;
        match (ok, inbox) {
            (true, Some(inbox)) => {
                self.inbox_hints.remember(&name, inbox);
                self.cache.insert(name, proof);
                Ok(inbox)
            }
            _ => Err(AuthError::BadCredentials),
        }
    }
}

impl Authenticator {
    /// The INBOX that `username`'s last successful login on this node returned, if any: a
    /// guess, which lets a caller read the maildrop while the login is being checked (an INBOX
    /// id does not change, but the caller must compare it with what the login returns, and
    /// show nothing before the login succeeded).
    pub fn inbox_hint(&self, username: &str) -> Option<MailboxId> {
        self.inbox_hints
            .get(&crate::names::normalize_user(username))
    }
}

/// User name -> INBOX of recent successful logins, bounded (emptied when full: a hint missing
/// only costs a login its overlap).
struct InboxHints {
    map: Mutex<HashMap<String, MailboxId>>,
    max_entries: usize,
}

impl InboxHints {
    fn new(max_entries: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    fn get(&self, name: &str) -> Option<MailboxId> {
        self.map.lock().ok()?.get(name).copied()
    }

    fn remember(&self, name: &str, inbox: MailboxId) {
        if self.max_entries == 0 {
            return;
        }
        if let Ok(mut map) = self.map.lock() {
            if map.get(name) == Some(&inbox) {
                return;
            }
            if map.len() >= self.max_entries {
                map.clear();
            }
            map.insert(name.to_string(), inbox);
        }
    }
}

/// A few threads that do all password hashing. Argon2 allocates its whole memory cost (19 MiB by
/// default) per hash; on tokio's blocking pool, a burst of logins would spread those allocations
/// over dozens of threads whose allocator arenas keep the memory (measured: 1.9 GiB resident after
/// 16 concurrent first logins). A fixed pool bounds both the CPU and the memory spent on hashing.
struct HashPool {
    jobs: std::sync::mpsc::SyncSender<Box<dyn FnOnce() + Send>>,
}

impl HashPool {
    fn start() -> Result<Self, AuthError> {
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 4);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Box<dyn FnOnce() + Send>>(1024);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("tern-hash-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .map_err(|e| AuthError::Hash(e.to_string()))?;
        }
        Ok(Self { jobs: tx })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = reply.send(f());
        });
        let jobs = self.jobs.clone();
        // A full queue means a login storm: wait for room off the async workers.
        tokio::task::spawn_blocking(move || jobs.send(job))
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))?
            .map_err(|_| AuthError::Hash("hashing threads stopped".into()))?;
        result
            .await
            .map_err(|_| AuthError::Hash("hashing job dropped".into()))
    }
}

/// A short-lived memory of verified logins, as Dovecot's auth_cache: polling clients log in every
/// few minutes and should not pay an argon2 hash each time. It never holds a password: an entry
/// is a BLAKE2b MAC, under a random key that lives only in this process, of the user name, the
/// PHC string the password was verified against, and the password. A changed password changes
/// the PHC string and so misses; a deleted user fails before the cache is consulted.
struct CredentialCache {
    key: [u8; 32],
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<String, ([u8; 32], Instant)>>,
}

impl CredentialCache {
    fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            key: rand::random(),
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max_entries > 0
    }

    fn proof(&self, user: &str, phc: &str, password: &str) -> [u8; 32] {
        let Ok(mut mac) = <Blake2bMac<U32> as Mac>::new_from_slice(&self.key) else {
            return [0; 32];
        };
        for part in [user, phc, password] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    fn contains(&self, user: &str, proof: &[u8; 32]) -> bool {
        if !self.enabled() {
            return false;
        }
        let Ok(entries) = self.entries.lock() else {
            return false;
        };
        matches!(entries.get(user), Some((p, expires)) if p == proof && *expires > Instant::now())
    }

    fn insert(&self, user: String, proof: [u8; 32]) {
        if !self.enabled() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        if entries.len() >= self.max_entries {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(user, (proof, now + self.ttl));
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> Result<String, AuthError> {
    let hash_error = |e: argon2::password_hash::Error| AuthError::Hash(e.to_string());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_buf)
        .map_err(hash_error)?;
    let mut out = vec![
        0u8;
        argon2
            .params()
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN)
    ];
    argon2_into(argon2, password.as_bytes(), salt_bytes, &mut out)?;
    let phc = PasswordHash {
        // The only algorithm and version `Authenticator::new` hashes with.
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(hash_error)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(hash_error)?),
    };
    Ok(phc.to_string())
}

/// Verifies with the parameters stored in the hash itself (any argon2 variant and version).
fn verify(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        parsed
            .version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2_into(&argon2, password.as_bytes(), salt_bytes, &mut out).is_err() {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// One argon2 hash, its working memory (the whole memory cost, 19 MiB by default) mapped from
/// the kernel for this hash alone and unmapped after it. Through the allocator, these blocks
/// stayed resident after a burst of logins (glibc needs a fixed mmap threshold for them; with
/// mimalloc, measured 104 MiB resident after 16 first logins against 21 MiB): an allocator
/// keeps freed memory for reuse, which for 19 MiB blocks needed a few times a minute is waste.
fn argon2_into(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), AuthError> {
    let mut memory = working_memory::Blocks::map(argon2.params().block_count())
        .map_err(|e| AuthError::Hash(format!("argon2 working memory: {e}")))?;
    argon2
        .hash_password_into_with_memory(password, salt, out, memory.as_mut())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

mod working_memory {
    use argon2::Block;

    /// Argon2 blocks in an anonymous private mapping.
    pub(super) struct Blocks {
        start: std::ptr::NonNull<Block>,
        count: usize,
    }

    // SAFETY: the mapping is owned by this value alone, like a Box.
    unsafe impl Send for Blocks {}

    impl Blocks {
        pub(super) fn map(count: usize) -> std::io::Result<Self> {
            let bytes = count
                .checked_mul(std::mem::size_of::<Block>())
                .filter(|b| *b > 0)
                .ok_or_else(|| std::io::Error::other("bad block count"))?;
            // SAFETY: a new anonymous mapping, no address hint, no file; the result is checked.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let start = std::ptr::NonNull::new(ptr.cast::<Block>())
                .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
            Ok(Self { start, count })
        }
    }

    impl AsMut<[Block]> for Blocks {
        fn as_mut(&mut self) -> &mut [Block] {
            // SAFETY: the mapping is `count` blocks long, page-aligned (a Block needs 64), and
            // zero-filled by the kernel: all zeroes is a valid Block (an array of u64). It is
            // borrowed mutably through `self` only.
            unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.count) }
        }
    }

    impl Drop for Blocks {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping made in `map`, which nothing borrows any more.
            unsafe {
                libc::munmap(
                    self.start.as_ptr().cast(),
                    self.count * std::mem::size_of::<Block>(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn small() -> Argon2<'static> {
        Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
    }

    #[test]
    fn hashes_interoperate_with_the_argon2_crate_both_ways() {
        let ours = hash_with(&small(), "correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(verify(&ours, "correct horse"));
        assert!(!verify(&ours, "correct horsE"));

        let salt = SaltString::generate(&mut OsRng);
        let theirs = small()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify(&theirs, "battery staple"));
        assert!(!verify(&theirs, "battery stapl"));
        // Another variant and version, as stored by older software.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(512, 2, 1, None).unwrap(),
        )
        .hash_password(b"old", &salt)
        .unwrap()
        .to_string();
        assert!(verify(&argon2i, "old"));
        assert!(!verify(&argon2i, "new"));
    }

    #[test]
    fn malformed_hashes_do_not_verify() {
        for bad in [
            "",
            "plain",
            "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ",
            "$md5$x$y",
        ] {
            assert!(!verify(bad, "x"), "{bad:?}");
        }
    }
}
