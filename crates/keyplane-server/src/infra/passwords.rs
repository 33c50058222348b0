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
use std::collections::VecDeque;
use tokio::sync::oneshot;

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
    slots: Arc<FairSlots>,
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

/// The hashing slots, handed out in turn to the clients waiting for one (round robin), not in
/// arrival order: a client with many checks queued gets one slot in turn like a client with
/// one, so a newcomer waits for one check per waiting client, not for the whole queue.
struct FairSlots {
    state: Mutex<FairState>,
}

#[derive(Default)]
struct FairState {
    free: usize,
    /// Waiters per client, oldest first.
    waiters: HashMap<Option<IpAddr>, VecDeque<oneshot::Sender<()>>>,
    /// Clients with waiters, in turn.
    turn: VecDeque<Option<IpAddr>>,
}

/// A waiter's place in turn. A waiter that goes away after its slot was sent, before it took
/// it, hands the slot on; one that goes away before is skipped when its turn comes.
struct Turn {
    receiver: Option<oneshot::Receiver<()>>,
    slots: Arc<FairSlots>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.receiver.take()
            && receiver.try_recv().is_ok()
        {
            self.slots.release();
        }
    }
}

/// A hashing slot, handed to the next waiter in turn (or freed) when dropped.
struct Slot(Arc<FairSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl FairSlots {
    fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(FairState {
                free: slots,
                ..Default::default()
            }),
        })
    }

    /// A slot for `client`, at once when one is free and nobody waits, else in its turn.
    async fn acquire(self: &Arc<Self>, client: Option<IpAddr>) -> Slot {
        let waiting = {
            let mut state = self.state.lock().expect("not poisoned");
            if state.free > 0 && state.turn.is_empty() {
                state.free -= 1;
                None
            } else {
                let (sender, receiver) = oneshot::channel();
                let queue = state.waiters.entry(client).or_default();
                queue.push_back(sender);
                if queue.len() == 1 {
                    state.turn.push_back(client);
                }
                Some(receiver)
            }
        };
        if let Some(receiver) = waiting {
            let mut turn = Turn {
                receiver: Some(receiver),
                slots: self.clone(),
            };
            // The sender is dropped without sending only by `release` skipping a waiter that
            // went away, so a waiter still here is always sent its slot.
            if let Some(receiver) = turn.receiver.as_mut() {
                let _ = receiver.await;
            }
            turn.receiver = None;
        }
        Slot(self.clone())
    }

    /// Hands the slot to the next waiter in turn that is still waiting, or frees it.
    fn release(&self) {
        let mut state = self.state.lock().expect("not poisoned");
        while let Some(client) = state.turn.pop_front() {
            let Some(queue) = state.waiters.get_mut(&client) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                state.waiters.remove(&client);
            } else {
                state.turn.push_back(client);
            }
            if let Some(next) = next
                && next.send(()).is_ok()
            {
                return;
            }
        }
        state.free += 1;
    }
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
        let first = *count == 0;
        *count += 1;
        Ok(Share {
            shares: self,
            key,
            first,
        })
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
    /// The key held no place before this one.
    first: bool,
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
            slots: FairSlots::new(slots),
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

    /// Runs `work` in a hashing slot, in `client`'s turn. The queue holds [`MAX_WAITING`]
    /// checks; a client that holds no place in it yet (`newcomer`) may still join up to twice
    /// that, so that clients filling the queue cannot keep a newcomer out.
    async fn run<T: Send + 'static>(
        &self,
        client: Option<IpAddr>,
        newcomer: bool,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Saturated> {
        let bound = if newcomer {
            2 * MAX_WAITING
        } else {
            MAX_WAITING
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= bound {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Saturated);
        }
        // Leaves the queue however this future ends, cancelled requests included.
        let waiting = WaitingGuard(&self.waiting);
        let slot = self.slots.acquire(client).await;
        drop(waiting);
        let result = tokio::task::spawn_blocking(move || {
            let result = work();
            drop(slot);
            result
        })
        .await
        .expect("password hashing does not panic");
        Ok(result)
    }

    /// An Argon2id PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String, Saturated> {
        self.run(None, false, move || hash_now(&password)).await
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
        let share = client
            .map(|client| self.per_client.take(client))
            .transpose()?;
        let newcomer = share.as_ref().is_some_and(|share| share.first);
        let typical = self.typical_micros.clone();
        self.run(client, newcomer, move || {
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
    async fn slots_go_round_the_waiting_clients_in_turn() {
        let slots = FairSlots::new(1);
        let held = slots.acquire(None).await;
        let (crowd, newcomer): (Option<IpAddr>, Option<IpAddr>) = (
            Some("192.0.2.1".parse().unwrap()),
            Some("192.0.2.2".parse().unwrap()),
        );
        let mut crowd_waiting = Vec::new();
        for _ in 0..3 {
            let mut waiter = Box::pin(slots.acquire(crowd));
            assert!(futures_poll_once(&mut waiter).await.is_none());
            crowd_waiting.push(waiter);
        }
        let mut newcomer_waiting = Box::pin(slots.acquire(newcomer));
        assert!(futures_poll_once(&mut newcomer_waiting).await.is_none());
        // The first of the crowd, then the newcomer, though it came after all of the crowd.
        drop(held);
        let first = futures_poll_once(&mut crowd_waiting[0])
            .await
            .expect("its turn");
        assert!(futures_poll_once(&mut crowd_waiting[1]).await.is_none());
        drop(first);
        assert!(
            futures_poll_once(&mut newcomer_waiting).await.is_some(),
            "the newcomer's turn"
        );
        // A waiter that goes away hands its turn on.
        drop(newcomer_waiting);
        drop(crowd_waiting.remove(0));
        assert!(futures_poll_once(&mut crowd_waiting[0]).await.is_some());
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
        let taken = passwords.slots.acquire(None).await;
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
