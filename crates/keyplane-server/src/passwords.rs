//! Argon2id password hashing, off the async runtime and bounded, so that a flood of password
//! logins queues here instead of starving the token path of threads and cores.
//!
//! At most half the cores hash at once; beyond [`MAX_WAITING`] queued requests, callers are told
//! to come back later instead of queueing without bound, and one client (address, or IPv6 /64)
//! has at most [`MAX_PER_CLIENT`] checks queued or running, and one account at most
//! [`MAX_PER_ACCOUNT`], so neither a few clients nor many clients guessing at one account can
//! fill the queue for everyone.
//!
//! An unknown account (or one without a password yet) takes no hashing slot at all: it waits as
//! long as a real check takes (measured) and fails. So a flood of made-up addresses costs the
//! server timers, not Argon2 capacity, and a real person signing in meanwhile is not queued
//! behind it; and the answer still takes as long for an unknown address as for a wrong password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Requests allowed to wait for a hashing slot.
pub const MAX_WAITING: usize = 64;

/// Checks one client may have queued or running at once.
pub const MAX_PER_CLIENT: usize = 4;

/// Checks of one account that may be queued or running at once, from all clients together.
pub const MAX_PER_ACCOUNT: usize = 2;

/// Too many password checks are queued; the caller should answer 429 or 503.
#[derive(Debug, thiserror::Error)]
#[error("password hashing is saturated")]
pub struct Saturated;

pub struct Passwords {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Checks queued or running per client; an entry lives only while its count is above 0.
    per_client: Shares<IpAddr>,
    /// Checks queued or running per account (a keyed hash of its email).
    per_account: Shares<u64>,
    /// How long one verification takes, in microseconds (a moving average; 0 before the first).
    typical_micros: Arc<AtomicU64>,
    /// One timed hash, made the first time an unknown account needs a duration before any real
    /// check was timed: shared by every such request, and outside the hashing slots.
    calibration: tokio::sync::OnceCell<u64>,
}

impl Default for Passwords {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_slots((cores / 2).max(1))
    }
}

/// OWASP's recommended Argon2id parameters: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters"),
    )
}

fn hash_now(password: &str) -> String {
    argon2()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .expect("Argon2id hashing with valid parameters succeeds")
        .to_string()
}

/// A hash of a random password: what unknown accounts are checked against.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_now(&uuid::Uuid::new_v4().to_string()))
}

fn verify_now(password: &str, phc: Option<&str>) -> bool {
    let known = phc.is_some();
    let parsed = PasswordHash::new(phc.unwrap_or(dummy_hash()));
    let Ok(parsed) = parsed else {
        tracing::error!("a stored password hash is not a PHC string");
        return false;
    };
    // `verify_password` compares in constant time.
    argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && known
}

/// Places in the queue held per key (a client, an account); a key holds an entry only while it
/// holds a place, so memory follows the queue's bound.
struct Shares<K> {
    counts: Mutex<HashMap<K, usize>>,
    most: usize,
}

impl<K: std::hash::Hash + Eq + Copy> Shares<K> {
    fn new(most: usize) -> Self {
        Self {
            counts: Mutex::default(),
            most,
        }
    }

    /// Takes one of `key`'s places, or refuses when it holds them all.
    fn take(&self, key: K) -> Result<Share<'_, K>, Saturated> {
        let mut counts = self.counts.lock().expect("not poisoned");
        let count = counts.entry(key).or_insert(0);
        if *count >= self.most {
            return Err(Saturated);
        }
        *count += 1;
        Ok(Share { shares: self, key })
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.counts.lock().expect("not poisoned").is_empty()
    }
}

/// A place in the queue, given back however the check ends.
struct Share<'a, K: std::hash::Hash + Eq + Copy> {
    shares: &'a Shares<K>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Copy> Drop for Share<'_, K> {
    fn drop(&mut self) {
        let mut counts = self.shares.counts.lock().expect("not poisoned");
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Passwords {
    fn with_slots(slots: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            per_client: Shares::new(MAX_PER_CLIENT),
            per_account: Shares::new(MAX_PER_ACCOUNT),
            typical_micros: Arc::default(),
            calibration: tokio::sync::OnceCell::new(),
        }
    }

    /// How long a check takes: measured on real checks, or timed once on a dummy hash.
    async fn typical(&self) -> Duration {
        let measured = self.typical_micros.load(Ordering::Acquire);
        let micros = if measured > 0 {
            measured
        } else {
            *self
                .calibration
                .get_or_init(|| async {
                    tokio::task::spawn_blocking(|| {
                        let started = Instant::now();
                        let _ = verify_now("calibration", Some(dummy_hash()));
                        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
                    })
                    .await
                    .expect("password hashing does not panic")
                })
                .await
        };
        Duration::from_micros(micros)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Saturated> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Saturated);
        }
        // Leaves the queue however this future ends, cancelled requests included.
        let waiting = WaitingGuard(&self.waiting);
        let permit = self.slots.clone().acquire_owned().await;
        drop(waiting);
        let permit = permit.expect("the semaphore is never closed");
        let result = tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .expect("password hashing does not panic");
        Ok(result)
    }

    /// An Argon2id PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String, Saturated> {
        self.run(move || hash_now(&password)).await
    }

    /// Whether `password` matches `phc`, for a request from `client` (its throttling unit).
    /// `account` (a keyed hash of the email) is given when this client has failed for that
    /// account before: such checks share the account's places, so that guesses at one account
    /// cannot fill the queue, while a client with a clean record is never held back by them
    /// (knowing someone's address must not be enough to lock them out). `None` for `phc` (no
    /// such account) fails after as long as a check takes, without taking a place in the queue.
    pub async fn verify(
        &self,
        password: String,
        phc: Option<String>,
        account: Option<u64>,
        client: Option<IpAddr>,
    ) -> Result<bool, Saturated> {
        if phc.is_none() {
            tokio::time::sleep(self.typical().await).await;
            return Ok(false);
        }
        let _account = account
            .map(|account| self.per_account.take(account))
            .transpose()?;
        let _client = client
            .map(|client| self.per_client.take(client))
            .transpose()?;
        let typical = self.typical_micros.clone();
        self.run(move || {
            let started = Instant::now();
            let matches = verify_now(&password, phc.as_deref());
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            // A moving average over about the last eight checks.
            let _ = typical.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                Some(if old == 0 {
                    took
                } else {
                    old - old / 8 + took / 8
                })
            });
            matches
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_their_password() {
        let passwords = Passwords::default();
        let phc = passwords.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            passwords
                .verify("correct horse".into(), Some(phc.clone()), Some(1), None)
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(phc), Some(1), None)
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("correct horse".into(), None, Some(1), None)
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("x".into(), Some("not a phc".into()), Some(1), None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_queue() {
        let passwords = Passwords::with_slots(0);
        let waiting = passwords.verify("x".into(), Some(hash_now("correct horse")), Some(1), None);
        // Polled once it queues (no slot is free), then dropped: a client that went away.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), waiting)
                .await
                .is_err()
        );
        assert_eq!(passwords.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn refuses_beyond_the_queue_bound() {
        let passwords = Passwords::with_slots(0);
        passwords.waiting.store(MAX_WAITING, Ordering::Release);
        let phc = Some(hash_now("correct horse"));
        assert!(
            passwords
                .verify("x".into(), phc, Some(1), None)
                .await
                .is_err()
        );
        assert_eq!(passwords.waiting.load(Ordering::Acquire), MAX_WAITING);
    }

    #[tokio::test]
    async fn one_client_holds_at_most_its_share_of_the_queue() {
        let passwords = Passwords::with_slots(0);
        let (crowd, other): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let phc = || Some(hash_now("correct horse"));
        let mut queued = Vec::new();
        for account in 0..MAX_PER_CLIENT as u64 {
            let mut check =
                Box::pin(passwords.verify("x".into(), phc(), Some(account), Some(crowd)));
            // Polled once: it takes its share and queues (no slot is free).
            assert!(futures_poll_once(&mut check).await.is_none());
            queued.push(check);
        }
        assert!(
            passwords
                .verify("x".into(), phc(), Some(100), Some(crowd))
                .await
                .is_err()
        );
        let mut elsewhere = Box::pin(passwords.verify("x".into(), phc(), Some(101), Some(other)));
        assert!(
            futures_poll_once(&mut elsewhere).await.is_none(),
            "queued, not refused"
        );
        drop(queued);
        drop(elsewhere);
        assert!(passwords.per_client.is_empty() && passwords.per_account.is_empty());
    }

    #[tokio::test]
    async fn one_account_holds_at_most_its_share_of_the_queue_whoever_asks() {
        let passwords = Passwords::with_slots(0);
        let client = |n: u8| Some(IpAddr::from([192, 0, 2, n]));
        let phc = || Some(hash_now("correct horse"));
        let mut queued = Vec::new();
        for n in 0..MAX_PER_ACCOUNT as u8 {
            let mut check = Box::pin(passwords.verify("x".into(), phc(), Some(7), client(n)));
            assert!(futures_poll_once(&mut check).await.is_none());
            queued.push(check);
        }
        let refused = passwords
            .verify("x".into(), phc(), Some(7), client(99))
            .await;
        assert!(refused.is_err(), "a third check of the same account");
        let mut other_account = Box::pin(passwords.verify("x".into(), phc(), Some(8), client(99)));
        assert!(futures_poll_once(&mut other_account).await.is_none());
    }

    #[tokio::test]
    async fn unknown_accounts_take_no_hashing_slot() {
        let passwords = Passwords::with_slots(1);
        // With every slot taken, an unknown account still gets its answer.
        let taken = passwords.slots.clone().acquire_owned().await.unwrap();
        assert!(
            !passwords
                .verify("x".into(), None, Some(1), None)
                .await
                .unwrap()
        );
        assert_eq!(passwords.waiting.load(Ordering::Acquire), 0);
        drop(taken);
        let phc = hash_now("correct horse");
        assert!(
            !passwords
                .verify("x".into(), Some(phc), Some(1), None)
                .await
                .unwrap()
        );
        assert!(passwords.typical_micros.load(Ordering::Acquire) > 0);
    }

    /// Polls a future once: `Some` with its output when it is ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(
        future: &mut F,
    ) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
