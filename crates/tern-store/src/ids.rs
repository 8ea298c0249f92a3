use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// 100 ns intervals between the UUID epoch (1582-10-15) and the Unix epoch.
const UUID_EPOCH_OFFSET: u64 = 0x01B2_1DD2_1381_4000;

/// A message, identified by a version-1 time-based UUID (Cassandra's `timeuuid`). Its order is
/// the order of its timestamp: a mailbox lists its messages by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId(Uuid);

/// A mailbox (each user has an INBOX), identified by a random UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId(pub Uuid);

/// A stored body, shared by every copy of one delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct BlobId(pub Uuid);

impl MailboxId {
    /// A new random (version 4) mailbox id.
    pub fn random() -> Self {
        MailboxId(Uuid::new_v4())
    }
}

impl std::fmt::Display for MailboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl BlobId {
    /// When the body was started, for ids made by [`IdGenerator`] (version-1 UUIDs).
    pub fn created(&self) -> Option<std::time::SystemTime> {
        MessageId::from_uuid(self.0)?.created()
    }
}

impl std::fmt::Display for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl MessageId {
    /// The id as a UUID (version 1).
    pub fn uuid(&self) -> Uuid {
        self.0
    }

    /// Accepts only version-1 UUIDs.
    pub fn from_uuid(u: Uuid) -> Option<Self> {
        (u.get_version_num() == 1).then_some(MessageId(u))
    }

    /// When the message was made (its delivery), from the id's time.
    pub fn created(&self) -> Option<std::time::SystemTime> {
        let ticks = self.timestamp().checked_sub(UUID_EPOCH_OFFSET)?;
        Some(UNIX_EPOCH + std::time::Duration::from_nanos(ticks.saturating_mul(100)))
    }

    /// 100 ns ticks since 1582-10-15.
    pub fn timestamp(&self) -> u64 {
        let b = self.0.as_bytes();
        let low = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64;
        let mid = u16::from_be_bytes([b[4], b[5]]) as u64;
        let high = (u16::from_be_bytes([b[6], b[7]]) & 0x0fff) as u64;
        (high << 48) | (mid << 32) | low
    }

    /// A 128-bit key that sorts like the id's time (then clock sequence and node), for ordered
    /// storage engines.
    pub fn sort_key(&self) -> u128 {
        let b = self.0.as_bytes();
        let tail = u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        ((self.timestamp() as u128) << 64) | tail as u128
    }

    /// The id whose [`MessageId::sort_key`] is `key`.
    pub fn from_sort_key(key: u128) -> Self {
        let ts = (key >> 64) as u64;
        let tail = (key as u64).to_be_bytes();
        MessageId(build_v1(ts, tail))
    }
}

fn build_v1(ts: u64, tail: [u8; 8]) -> Uuid {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&(ts as u32).to_be_bytes());
    b[4..6].copy_from_slice(&((ts >> 32) as u16).to_be_bytes());
    b[6..8].copy_from_slice(&((((ts >> 48) as u16) & 0x0fff) | 0x1000).to_be_bytes());
    b[8..16].copy_from_slice(&tail);
    Uuid::from_bytes(b)
}

/// Makes message ids on this node without coordination. Within a process, timestamps strictly
/// increase even if the wall clock steps back (the generator runs ahead until the clock catches
/// up); across processes and nodes, a random clock sequence and a random node id (multicast bit
/// set, as RFC 4122 section 4.5 asks for ids not derived from a MAC) keep ids apart.
pub struct IdGenerator {
    tail: [u8; 8],
    last: AtomicU64,
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGenerator {
    /// A generator with a fresh random clock sequence and node id.
    pub fn new() -> Self {
        let mut tail: [u8; 8] = rand::random();
        tail[0] = (tail[0] & 0x3f) | 0x80; // RFC 4122 variant
        tail[2] |= 0x01; // multicast bit of the node id
        Self {
            tail,
            last: AtomicU64::new(0),
        }
    }

    fn now_ticks() -> u64 {
        let since_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UUID_EPOCH_OFFSET + (since_unix.as_nanos() / 100) as u64
    }

    /// The next id: its timestamp is strictly greater than any this generator gave before.
    pub fn next_id(&self) -> MessageId {
        self.next_at(Self::now_ticks())
    }

    fn next_at(&self, now: u64) -> MessageId {
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let ts = now.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, ts, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return MessageId(build_v1(ts, self.tail)),
                Err(p) => prev = p,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v1_and_round_trip() {
        let g = IdGenerator::new();
        let id = g.next_id();
        assert_eq!(id.uuid().get_version_num(), 1);
        assert_eq!(id.uuid().get_variant(), uuid::Variant::RFC4122);
        assert_eq!(MessageId::from_sort_key(id.sort_key()), id);
        // uuid's own reading of the timestamp agrees with ours.
        let (secs, nanos) = id.uuid().get_timestamp().unwrap().to_unix();
        let ours = id.timestamp() - UUID_EPOCH_OFFSET;
        assert_eq!(ours / 10_000_000, secs);
        assert_eq!((ours % 10_000_000) * 100, nanos as u64);
    }

    #[test]
    fn monotonic_even_when_clock_steps_back() {
        let g = IdGenerator::new();
        let a = g.next_at(1_000_000);
        let b = g.next_at(500_000);
        let c = g.next_at(500_000);
        assert!(a.sort_key() < b.sort_key() && b.sort_key() < c.sort_key());
        assert_ne!(b, c);
    }

    #[test]
    fn concurrent_ids_are_unique() {
        let g = std::sync::Arc::new(IdGenerator::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..10_000).map(|_| g.next_id()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(all.insert(id));
            }
        }
    }
}
