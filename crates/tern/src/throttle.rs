//! Failed-login throttling. Each failure from an address or for a user is counted over a
//! window; answers to failures are delayed more with each one; past a threshold the address,
//! or the user, is locked out for a while (answered with `-ERR [LOGIN-DELAY]`). A user lockout
//! never applies to an address that logged in as that user successfully recently, so an
//! attacker guessing passwords cannot lock the real user out.
//!
//! Loopback is not counted per address: everything behind a local proxy shares it, so one
//! guesser would lock every user out. Behind a load balancer speaking the PROXY protocol the
//! address counted is the real client's; per-user counting applies everywhere.

use crate::config::AuthSection;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
// tokio's clock: the same as the system's when serving, and one that tests can pause and
// advance (`tokio::time::advance`) to cross windows and lockouts without sleeping.
use tokio::time::Instant;

/// Tracked addresses and users at most; beyond it the oldest state is dropped.
const MAX_TRACKED: usize = 100_000;
/// Addresses remembered per user as known good.
const GOOD_ADDRESSES: usize = 8;
const GOOD_ADDRESS_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_DELAY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counter {
    failures: u32,
    since: Option<Instant>,
    locked_until: Option<Instant>,
}

#[derive(Default)]
struct UserState {
    counter: Counter,
    good: Vec<(IpAddr, Instant)>,
}

#[derive(Default)]
struct State {
    addresses: HashMap<IpAddr, Counter>,
    users: HashMap<String, UserState>,
}

pub struct LoginThrottle {
    max_per_ip: u32,
    max_per_user: u32,
    window: Duration,
    lockout: Duration,
    delay: Duration,
    state: Mutex<State>,
}

impl Counter {
    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until.filter(|&t| t > now).map(|t| t - now)
    }

    /// Counts a failure; returns the failures in the current window.
    fn fail(&mut self, now: Instant, window: Duration, max: u32, lockout: Duration) -> u32 {
        if self.since.is_none_or(|s| now.duration_since(s) > window) {
            self.failures = 0;
            self.since = Some(now);
        }
        self.failures += 1;
        if max > 0 && self.failures >= max {
            self.locked_until = Some(now + lockout);
            self.failures = 0;
            self.since = None;
        }
        self.failures
    }
}

impl LoginThrottle {
    pub fn new(cfg: &AuthSection) -> Self {
        Self {
            max_per_ip: cfg.max_failures_per_ip,
            max_per_user: cfg.max_failures_per_user,
            window: Duration::from_secs(cfg.failure_window_secs),
            lockout: Duration::from_secs(cfg.lockout_secs),
            delay: Duration::from_millis(cfg.failure_delay_ms),
            state: Mutex::new(State::default()),
        }
    }

    /// Why a login from `ip` as `user` is refused without checking the password, if it is.
    pub fn refusal(&self, ip: IpAddr, user: &str) -> Option<String> {
        let now = Instant::now();
        let state = self.state.lock().ok()?;
        let address_lock = counted_per_address(ip)
            .then(|| state.addresses.get(&ip).and_then(|c| c.locked(now)))
            .flatten();
        if let Some(left) = address_lock {
            return Some(format!(
                "too many failed logins from your address; try again in {} seconds",
                left.as_secs() + 1
            ));
        }
        let u = state.users.get(user)?;
        let left = u.counter.locked(now)?;
        let known = u
            .good
            .iter()
            .any(|(a, t)| *a == ip && now.duration_since(*t) < GOOD_ADDRESS_TTL);
        (!known).then(|| {
            format!(
                "too many failed logins for this user; try again in {} seconds",
                left.as_secs() + 1
            )
        })
    }

    /// Records a failure; returns how long to wait before answering it.
    pub fn failed(&self, ip: IpAddr, user: &str) -> Duration {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return self.delay;
        };
        if state.addresses.len() + state.users.len() > MAX_TRACKED {
            state.addresses.retain(|_, c| c.locked(now).is_some());
            state
                .users
                .retain(|_, u| u.counter.locked(now).is_some() || !u.good.is_empty());
            if state.users.len() > MAX_TRACKED {
                state.users.clear();
            }
        }
        let (window, lockout) = (self.window, self.lockout);
        let ip_failures = if counted_per_address(ip) {
            state
                .addresses
                .entry(ip)
                .or_default()
                .fail(now, window, self.max_per_ip, lockout)
        } else {
            1
        };
        if !user.is_empty() && user.len() <= 320 {
            state
                .users
                .entry(user.to_string())
                .or_default()
                .counter
                .fail(now, window, self.max_per_user, lockout);
        }
        (self.delay * ip_failures.max(1)).min(MAX_DELAY)
    }

    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.addresses.remove(&ip);
        let u = state.users.entry(user.to_string()).or_default();
        u.good
            .retain(|(a, t)| *a != ip && now.duration_since(*t) < GOOD_ADDRESS_TTL);
        if u.good.len() >= GOOD_ADDRESSES {
            u.good.remove(0);
        }
        u.good.push((ip, now));
    }
}

/// Whether failures from this address are counted against it (see the module docs).
fn counted_per_address(ip: IpAddr) -> bool {
    !ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_ip: u32, max_user: u32) -> LoginThrottle {
        let cfg = AuthSection {
            max_failures_per_ip: max_ip,
            max_failures_per_user: max_user,
            lockout_secs: 60,
            failure_delay_ms: 100,
            ..Default::default()
        };
        LoginThrottle::new(&cfg)
    }

    #[test]
    fn delays_grow_and_address_locks() {
        let t = throttle(3, 100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(t.failed(ip, "a@x"), Duration::from_millis(100));
        assert_eq!(t.failed(ip, "a@x"), Duration::from_millis(200));
        assert!(t.refusal(ip, "b@x").is_none());
        t.failed(ip, "a@x");
        assert!(t.refusal(ip, "b@x").unwrap().contains("your address"));
        assert!(t.refusal("192.0.2.2".parse().unwrap(), "b@x").is_none());
    }

    #[test]
    fn user_lock_spares_known_good_addresses() {
        let t = throttle(100, 3);
        let home: IpAddr = "198.51.100.7".parse().unwrap();
        t.succeeded(home, "victim@x");
        for i in 0..3 {
            t.failed(format!("203.0.113.{i}").parse().unwrap(), "victim@x");
        }
        assert!(t
            .refusal("203.0.113.99".parse().unwrap(), "victim@x")
            .unwrap()
            .contains("this user"));
        assert!(
            t.refusal(home, "victim@x").is_none(),
            "the victim's own address still gets in"
        );
    }

    #[test]
    fn loopback_is_not_locked_out_per_address_but_users_still_are() {
        let t = throttle(3, 5);
        for local in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = local.parse().unwrap();
            for i in 0..4 {
                t.failed(ip, &format!("guess{i}@x"));
            }
            assert!(t.refusal(ip, "someone-else@x").is_none(), "{local}");
        }
        // The 12 failures above spread over 4 users; 5 for one user locks that user.
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..5 {
            t.failed(ip, "victim@x");
        }
        assert!(t.refusal(ip, "victim@x").unwrap().contains("this user"));
        assert!(t.refusal(ip, "other@x").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn lockouts_end_and_windows_forget() {
        let t = throttle(3, 100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            t.failed(ip, "a@x");
        }
        assert!(t.refusal(ip, "a@x").is_some());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(t.refusal(ip, "a@x").unwrap().contains("in 2 seconds"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            t.refusal(ip, "a@x").is_none(),
            "the lockout lasts lockout_secs"
        );
        // Failures further apart than the window never add up to a lockout.
        let window = Duration::from_secs(AuthSection::default().failure_window_secs);
        for _ in 0..5 {
            t.failed(ip, "a@x");
            t.failed(ip, "a@x");
            tokio::time::advance(window + Duration::from_secs(1)).await;
        }
        assert!(t.refusal(ip, "a@x").is_none());
    }

    #[test]
    fn zero_disables_lockouts() {
        let t = throttle(0, 0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..50 {
            t.failed(ip, "a@x");
        }
        assert!(t.refusal(ip, "a@x").is_none());
    }
}
