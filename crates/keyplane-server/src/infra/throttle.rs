//! Throttling of failed authentication, per key and per client address.
//!
//! Repeated failures for one key or one client address are slowed, then answered 429 with
//! `Retry-After`; a flood of failures never locks out the rightful owner for longer than that.
//!
//! Each tracked key has a GCRA "theoretical arrival time" (`tat`): every failure pushes it
//! `forgive_every` further into the future, and the backlog `tat - now` drains at that fixed rate,
//! so the failures still outstanding are `ceil(backlog / forgive_every)`. A caller asks
//! [`Throttle::check`] *before* an attempt and calls [`Throttle::record_failure`] *after* one that
//! failed; the check consumes nothing, so only failures count, never successes or refusals.
//! Attempts in flight at the same time all pass the same check, so concurrent attempts can
//! overshoot `max_failures` by their number; the failures they record still count.
//!
//! There is no permanent lock-out: the backlog is capped at `max_failures * forgive_every`, so
//! however many failures are recorded, a refused key is accepted again at most `forgive_every`
//! after the flood stops, and the `Retry-After` it is given says exactly when.
//!
//! Memory is bounded: keys live in a fixed number of shards, each holding at most its share of
//! [`ThrottlePolicy::capacity`]. A shard that is full first drops expired entries (`tat <= now`);
//! if it is still full, the new key is not tracked, so only keys first seen during such a flood
//! fail open, and the per-address throttle still applies to them. Hashing uses std's
//! [`RandomState`], which resists HashDoS.

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Shards per throttle: enough to keep lock contention low, few enough to keep them cheap.
const SHARDS: usize = 16;

/// How a [`Throttle`] treats failures.
#[derive(Clone, Copy, Debug)]
pub struct ThrottlePolicy {
    /// Failures tolerated at full speed.
    pub free_failures: u32,
    /// Failures after which attempts are refused (429) until the backlog drains below this.
    /// Zero is treated as one.
    pub max_failures: u32,
    /// One failure is forgiven per `forgive_every` (the drain rate).
    pub forgive_every: Duration,
    /// Delay added per failure beyond `free_failures`, capped at `max_delay`.
    pub delay_step: Duration,
    pub max_delay: Duration,
    /// Most keys tracked at once; beyond it, new keys are not tracked (fail open) until entries
    /// expire.
    pub capacity: usize,
}

impl ThrottlePolicy {
    /// Defaults for failures against one key: refused after 20, drained at one per 3 s.
    pub fn per_key() -> Self {
        Self {
            free_failures: 5,
            max_failures: 20,
            forgive_every: Duration::from_secs(3),
            delay_step: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            capacity: 100_000,
        }
    }

    /// Defaults for failures from one client address: refused after 50, drained at one per
    /// two seconds. The drain is slower than the longest delay, so a client that waits out each
    /// slowed answer and goes on failing one request at a time still gains a failure on the
    /// drain every attempt and reaches the refusal (after about 90 attempts); with a drain as
    /// fast as the delay it was slowed forever and never told.
    pub fn per_address() -> Self {
        Self {
            free_failures: 10,
            max_failures: 50,
            forgive_every: Duration::from_secs(2),
            delay_step: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            capacity: 100_000,
        }
    }

    fn max_failures(&self) -> u32 {
        self.max_failures.max(1)
    }

    /// Failures still outstanding for a backlog: `ceil(backlog / forgive_every)`.
    fn outstanding(&self, backlog: Duration) -> u32 {
        let step = self.forgive_every.as_nanos();
        if step == 0 {
            return 0;
        }
        u32::try_from(backlog.as_nanos().div_ceil(step)).unwrap_or(u32::MAX)
    }

    fn verdict(&self, backlog: Duration) -> Verdict {
        let outstanding = self.outstanding(backlog);
        let max_failures = self.max_failures();
        if outstanding >= max_failures {
            let tolerated = self.forgive_every.saturating_mul(max_failures - 1);
            Verdict::Refuse {
                retry_after: whole_seconds_up(backlog.saturating_sub(tolerated)),
            }
        } else if outstanding > self.free_failures {
            let excess = outstanding - self.free_failures;
            Verdict::Delay(self.delay_step.saturating_mul(excess).min(self.max_delay))
        } else {
            Verdict::Allow
        }
    }
}

/// Rounds up to whole seconds, at least one: the value goes into a `Retry-After` header.
fn whole_seconds_up(duration: Duration) -> Duration {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    Duration::from_secs(seconds.max(1))
}

/// What to do with an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead at full speed.
    Allow,
    /// Go ahead after waiting this long.
    Delay(Duration),
    /// Answer 429 with `Retry-After` set to `retry_after` (whole seconds, at least one).
    Refuse { retry_after: Duration },
}

struct Shard<K> {
    state: Mutex<ShardState<K>>,
    capacity: usize,
}

struct ShardState<K> {
    /// Each key's theoretical arrival time.
    tats: HashMap<K, Instant>,
    /// No entry's `tat` is earlier than this (`None` when empty), so a full shard can tell
    /// without a scan that nothing has expired yet.
    earliest: Option<Instant>,
}

impl<K: Hash + Eq> ShardState<K> {
    fn purge_expired(&mut self, now: Instant) {
        if self.earliest.is_some_and(|earliest| earliest > now) {
            return;
        }
        self.tats.retain(|_, tat| *tat > now);
        self.earliest = self.tats.values().min().copied();
    }
}

/// Failure throttle over keys of type `K` (a key id, a client address, ...). See the module
/// documentation.
pub struct Throttle<K> {
    policy: ThrottlePolicy,
    /// Picks the shard; each shard's map has its own `RandomState`, so the shard choice and the
    /// placement within a shard are not correlated.
    hasher: RandomState,
    shards: Box<[Shard<K>]>,
}

impl<K> fmt::Debug for Throttle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("policy", &self.policy)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq> Throttle<K> {
    pub fn new(policy: ThrottlePolicy) -> Self {
        // No more shards than keys, so that no shard is left without room.
        Self::with_shards(policy, SHARDS.min(policy.capacity).max(1))
    }

    /// `policy.capacity` is split over `shards` so that the shares add up to it exactly.
    fn with_shards(policy: ThrottlePolicy, shards: usize) -> Self {
        let (share, remainder) = (policy.capacity / shards, policy.capacity % shards);
        let shards = (0..shards)
            .map(|index| Shard {
                state: Mutex::new(ShardState {
                    tats: HashMap::new(),
                    earliest: None,
                }),
                capacity: share + usize::from(index < remainder),
            })
            .collect();
        Self {
            policy,
            hasher: RandomState::new(),
            shards,
        }
    }

    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// Does not consume anything: what to do with an attempt for `key` at `now`.
    pub fn check(&self, key: &K, now: Instant) -> Verdict {
        let backlog = lock(&self.shard(key).state)
            .tats
            .get(key)
            .map_or(Duration::ZERO, |tat| tat.saturating_duration_since(now));
        self.policy.verdict(backlog)
    }

    /// Whether `key` has failures still outstanding at `now`.
    pub fn has_failures(&self, key: &K, now: Instant) -> bool {
        lock(&self.shard(key).state)
            .tats
            .get(key)
            .is_some_and(|tat| *tat > now)
    }

    /// Records one failure for `key` at `now`.
    pub fn record_failure(&self, key: K, now: Instant) {
        let policy = &self.policy;
        // The backlog never exceeds `max_failures` failures, so a flood cannot push the end of a
        // refusal further than one `forgive_every` past its last failure.
        let limit = policy.forgive_every.saturating_mul(policy.max_failures());
        let next_tat = |backlog: Duration| {
            now.checked_add(backlog.saturating_add(policy.forgive_every).min(limit))
        };

        let shard = self.shard(&key);
        let mut state = lock(&shard.state);
        if !state.tats.contains_key(&key) && state.tats.len() >= shard.capacity {
            state.purge_expired(now);
            if state.tats.len() >= shard.capacity {
                return;
            }
        }
        match state.tats.entry(key) {
            Entry::Occupied(mut entry) => {
                if let Some(tat) = next_tat(entry.get().saturating_duration_since(now)) {
                    entry.insert(tat);
                }
            }
            Entry::Vacant(entry) => {
                if let Some(tat) = next_tat(Duration::ZERO) {
                    entry.insert(tat);
                    state.earliest = Some(state.earliest.map_or(tat, |earliest| earliest.min(tat)));
                }
            }
        }
    }

    /// Drops the entries that have expired by `now`; they would be dropped anyway when their
    /// shard runs out of room. For a periodic sweep.
    pub fn purge_expired(&self, now: Instant) {
        for shard in &self.shards {
            lock(&shard.state).purge_expired(now);
        }
    }

    /// Entries currently tracked, including expired ones not purged yet (for tests and a
    /// metric).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(&shard.state).tats.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &K) -> &Shard<K> {
        // The remainder is below `shards.len()`, so it fits in a `usize`.
        let index = self.hasher.hash_one(key) % self.shards.len() as u64;
        &self.shards[index as usize]
    }
}

/// The maps stay consistent whatever panicked while holding a lock, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Failed-authentication throttles of one node. Credentials are keyed by a keyed hash (constant
/// memory per entry); API keys and accounts have separate tables, so a flood of made-up keys
/// cannot crowd out the accounts whose passwords can be guessed.
pub struct Throttles {
    /// IPv4 addresses, and IPv6 addresses by /64 (what one client usually holds).
    by_address: Throttle<IpAddr>,
    pub by_key: Throttle<u64>,
    /// An account from one address: refused when throttled.
    pub by_account_at_address: Throttle<u64>,
    /// An account from anywhere: only slowed, never refused, so that nobody can lock a person
    /// out by knowing their email address.
    pub by_account: Throttle<u64>,
    hasher: std::collections::hash_map::RandomState,
}

/// The unit a client address is throttled by.
pub fn client_unit(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

impl Throttles {
    pub fn new(by_address: ThrottlePolicy, by_credential: ThrottlePolicy) -> Self {
        Self {
            by_address: Throttle::new(by_address),
            by_key: Throttle::new(by_credential),
            by_account_at_address: Throttle::new(by_credential),
            by_account: Throttle::new(by_credential),
            hasher: Default::default(),
        }
    }

    pub fn credential(&self, credential: &str) -> u64 {
        self.hasher.hash_one(credential)
    }

    /// An account as tried from one client.
    pub fn account_at(&self, email: &str, ip: Option<IpAddr>) -> u64 {
        self.hasher
            .hash_one((email.to_lowercase(), ip.map(client_unit)))
    }

    /// Before an attempt: refuse a throttled address, slow down a suspicious one.
    pub fn check_address(&self, ip: Option<IpAddr>, now: Instant) -> Verdict {
        match ip {
            Some(ip) => self.by_address.check(&client_unit(ip), now),
            None => Verdict::Allow,
        }
    }

    pub fn record_address_failure(&self, ip: Option<IpAddr>, now: Instant) {
        if let Some(ip) = ip {
            self.by_address.record_failure(client_unit(ip), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            free_failures: 2,
            max_failures: 8,
            forgive_every: 10 * SECOND,
            delay_step: Duration::from_millis(100),
            max_delay: Duration::from_millis(250),
            capacity: 1_000,
        }
    }

    fn fail(throttle: &Throttle<&'static str>, key: &'static str, times: u32, now: Instant) {
        for _ in 0..times {
            throttle.record_failure(key, now);
        }
    }

    /// Attempts a client makes, one at a time, waiting out each delay (plus `round_trip`) and
    /// failing every time, until it is refused; `None` if it is not refused within 1,000.
    fn attempts_until_refused(policy: ThrottlePolicy, round_trip: Duration) -> Option<u32> {
        let throttle = Throttle::new(policy);
        let mut now = Instant::now();
        for attempt in 1..=1_000 {
            match throttle.check(&"client", now) {
                Verdict::Refuse { .. } => return Some(attempt),
                Verdict::Delay(delay) => now += delay,
                Verdict::Allow => {}
            }
            now += round_trip;
            throttle.record_failure("client", now);
        }
        None
    }

    #[test]
    fn a_patient_client_that_keeps_failing_is_refused_in_the_end() {
        for round_trip in [Duration::ZERO, Duration::from_millis(50)] {
            for (name, policy) in [
                ("per address", ThrottlePolicy::per_address()),
                ("per key", ThrottlePolicy::per_key()),
            ] {
                let attempts = attempts_until_refused(policy, round_trip);
                assert!(
                    attempts.is_some_and(|n| n <= 150),
                    "{name}, {round_trip:?} a round: refused after {attempts:?} attempts"
                );
            }
        }
    }

    #[test]
    fn allows_up_to_free_failures() {
        let throttle = Throttle::new(policy());
        let now = Instant::now();
        assert_eq!(throttle.check(&"k", now), Verdict::Allow);
        fail(&throttle, "k", 2, now);
        assert_eq!(throttle.check(&"k", now), Verdict::Allow);
        fail(&throttle, "k", 1, now);
        assert_ne!(throttle.check(&"k", now), Verdict::Allow);
    }

    #[test]
    fn delays_grow_then_cap() {
        let throttle = Throttle::new(policy());
        let now = Instant::now();
        fail(&throttle, "k", 2, now);
        let expected = [100, 200, 250, 250, 250];
        for millis in expected {
            fail(&throttle, "k", 1, now);
            let delay = Duration::from_millis(millis);
            assert_eq!(throttle.check(&"k", now), Verdict::Delay(delay));
        }
    }

    #[test]
    fn refuses_at_max_failures_with_retry_after() {
        let throttle = Throttle::new(policy());
        let start = Instant::now();
        fail(&throttle, "k", 7, start);
        assert!(matches!(throttle.check(&"k", start), Verdict::Delay(_)));
        fail(&throttle, "k", 1, start);
        let refuse = |seconds| Verdict::Refuse {
            retry_after: seconds * SECOND,
        };
        // Eight outstanding until one is forgiven, 10 s later.
        assert_eq!(throttle.check(&"k", start), refuse(10));
        // 6.5 s left, rounded up.
        assert_eq!(
            throttle.check(&"k", start + 3 * SECOND + SECOND / 2),
            refuse(7)
        );
        // Never less than a second.
        let almost = start + 10 * SECOND - Duration::from_millis(1);
        assert_eq!(throttle.check(&"k", almost), refuse(1));
        let delay = Verdict::Delay(Duration::from_millis(250));
        assert_eq!(throttle.check(&"k", start + 10 * SECOND), delay);
    }

    #[test]
    fn flood_refuses_no_longer_than_retry_after() {
        let throttle = Throttle::new(policy());
        let start = Instant::now();
        fail(&throttle, "k", 10_000, start);
        let refusal = throttle.check(&"k", start);
        assert_eq!(
            refusal,
            Verdict::Refuse {
                retry_after: 10 * SECOND
            }
        );
        assert!(matches!(
            throttle.check(&"k", start + 10 * SECOND),
            Verdict::Delay(_)
        ));
    }

    #[test]
    fn drains_back_to_allow() {
        let throttle = Throttle::new(policy());
        let start = Instant::now();
        fail(&throttle, "k", 8, start);
        assert!(matches!(
            throttle.check(&"k", start),
            Verdict::Refuse { .. }
        ));
        // Five forgiven, three outstanding.
        let delay = Verdict::Delay(Duration::from_millis(100));
        assert_eq!(throttle.check(&"k", start + 50 * SECOND), delay);
        assert_eq!(throttle.check(&"k", start + 60 * SECOND), Verdict::Allow);
        let later = start + 80 * SECOND;
        assert_eq!(throttle.check(&"k", later), Verdict::Allow);
        throttle.purge_expired(later);
        assert!(throttle.is_empty());
    }

    #[test]
    fn failures_after_draining_count_from_zero() {
        let throttle = Throttle::new(policy());
        let start = Instant::now();
        fail(&throttle, "k", 8, start);
        let later = start + 200 * SECOND;
        fail(&throttle, "k", 2, later);
        assert_eq!(throttle.check(&"k", later), Verdict::Allow);
    }

    #[test]
    fn keys_are_independent() {
        let throttle = Throttle::new(policy());
        let now = Instant::now();
        fail(&throttle, "a", 8, now);
        fail(&throttle, "b", 3, now);
        assert!(matches!(throttle.check(&"a", now), Verdict::Refuse { .. }));
        let delay = Verdict::Delay(Duration::from_millis(100));
        assert_eq!(throttle.check(&"b", now), delay);
        assert_eq!(throttle.check(&"c", now), Verdict::Allow);
    }

    #[test]
    fn check_does_not_consume() {
        let throttle = Throttle::new(policy());
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(throttle.check(&"unseen", now), Verdict::Allow);
        }
        assert!(throttle.is_empty());
        fail(&throttle, "k", 3, now);
        let delay = Verdict::Delay(Duration::from_millis(100));
        for _ in 0..100 {
            assert_eq!(throttle.check(&"k", now), delay);
        }
        assert_eq!(throttle.len(), 1);
    }

    #[test]
    fn full_shard_fails_open_then_purges_expired_entries() {
        let throttle = Throttle::with_shards(
            ThrottlePolicy {
                capacity: 4,
                ..policy()
            },
            1,
        );
        let start = Instant::now();
        // "a" expires after 10 s, the others after 80 s.
        fail(&throttle, "a", 1, start);
        for key in ["b", "c", "d"] {
            fail(&throttle, key, 8, start);
        }
        assert_eq!(throttle.len(), 4);

        // Full and nothing expired: the new key is not tracked.
        fail(&throttle, "e", 8, start + SECOND);
        assert_eq!(throttle.len(), 4);
        assert_eq!(throttle.check(&"e", start + SECOND), Verdict::Allow);
        // Known keys are still tracked.
        fail(&throttle, "b", 1, start + SECOND);
        assert!(matches!(
            throttle.check(&"b", start + SECOND),
            Verdict::Refuse { .. }
        ));

        // Once "a" has expired, it makes room for "e".
        let later = start + 10 * SECOND;
        fail(&throttle, "e", 8, later);
        assert_eq!(throttle.len(), 4);
        assert_eq!(throttle.check(&"a", later), Verdict::Allow);
        assert!(matches!(
            throttle.check(&"e", later),
            Verdict::Refuse { .. }
        ));
        // The others are still tracked: seven failures outstanding.
        let delay = Verdict::Delay(Duration::from_millis(250));
        assert_eq!(throttle.check(&"d", later), delay);
    }

    #[test]
    fn capacity_bounds_memory() {
        let throttle = Throttle::new(ThrottlePolicy {
            capacity: 100,
            ..policy()
        });
        let start = Instant::now();
        for key in 0..10_000_u32 {
            throttle.record_failure(key, start);
        }
        assert!(throttle.len() <= 100);

        // All of them expire; new keys take their place without exceeding the bound.
        let later = start + 10 * SECOND;
        for key in 10_000..20_000_u32 {
            throttle.record_failure(key, later);
        }
        assert!(throttle.len() <= 100);
        throttle.purge_expired(later);
        assert!(!throttle.is_empty());
    }

    #[test]
    fn degenerate_policies_do_not_panic() {
        let now = Instant::now();
        let throttle = |policy| Throttle::new(policy);

        let no_drain = throttle(ThrottlePolicy {
            forgive_every: Duration::ZERO,
            ..policy()
        });
        fail(&no_drain, "k", 100, now);
        assert_eq!(no_drain.check(&"k", now), Verdict::Allow);

        let endless = throttle(ThrottlePolicy {
            forgive_every: Duration::MAX,
            ..policy()
        });
        fail(&endless, "k", 3, now);
        assert_eq!(endless.check(&"k", now), Verdict::Allow);

        let steep = throttle(ThrottlePolicy {
            delay_step: Duration::MAX,
            ..policy()
        });
        fail(&steep, "k", 7, now);
        let delay = Verdict::Delay(Duration::from_millis(250));
        assert_eq!(steep.check(&"k", now), delay);

        let strict = throttle(ThrottlePolicy {
            max_failures: 0,
            ..policy()
        });
        assert_eq!(strict.check(&"k", now), Verdict::Allow);
        fail(&strict, "k", 5, now);
        let refuse = Verdict::Refuse {
            retry_after: 10 * SECOND,
        };
        assert_eq!(strict.check(&"k", now), refuse);

        let untracked = throttle(ThrottlePolicy {
            capacity: 0,
            ..policy()
        });
        fail(&untracked, "k", 100, now);
        assert!(untracked.is_empty());
    }

    #[test]
    fn defaults_are_consistent() {
        for policy in [ThrottlePolicy::per_key(), ThrottlePolicy::per_address()] {
            assert!(policy.free_failures < policy.max_failures);
            assert!(policy.delay_step <= policy.max_delay);
            assert!(policy.capacity >= SHARDS);
        }
    }

    #[test]
    fn clients_are_throttled_by_ipv4_address_or_ipv6_slash_64() {
        let unit = |text: &str| client_unit(text.parse().unwrap()).to_string();
        assert_eq!(unit("192.0.2.7"), "192.0.2.7");
        assert_eq!(unit("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(unit("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(unit("2001:db8:1:2::1"), unit("2001:db8:1:2:ffff::9"));
        assert_ne!(unit("2001:db8:1:2::1"), unit("2001:db8:1:3::1"));
    }
}
