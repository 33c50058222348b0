//! Argon2id password hashing, off the async runtime and bounded, so that a flood of password
//! logins queues here instead of starving the token path of threads and cores.
//!
//! At most half the cores hash at once; beyond [`MAX_WAITING`] queued requests, callers are told
//! to come back later instead of queueing without bound. An unknown account is checked against a
//! dummy hash, so it costs what a wrong password costs.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Requests allowed to wait for a hashing slot.
pub const MAX_WAITING: usize = 64;

/// Too many password checks are queued; the caller should answer 429 or 503.
#[derive(Debug, thiserror::Error)]
#[error("password hashing is saturated")]
pub struct Saturated;

pub struct Passwords {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Default for Passwords {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            slots: Arc::new(Semaphore::new((cores / 2).max(1))),
            waiting: AtomicUsize::new(0),
        }
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

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Passwords {
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

    /// Whether `password` matches `phc`; `None` (no such account) costs the same and fails.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, Saturated> {
        self.run(move || verify_now(&password, phc.as_deref()))
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
                .verify("correct horse".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(phc))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("correct horse".into(), None)
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("x".into(), Some("not a phc".into()))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_queue() {
        let passwords = Passwords {
            slots: Arc::new(Semaphore::new(0)),
            waiting: AtomicUsize::new(0),
        };
        let waiting = passwords.verify("x".into(), None);
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
        let passwords = Passwords {
            slots: Arc::new(Semaphore::new(0)),
            waiting: AtomicUsize::new(MAX_WAITING),
        };
        assert!(passwords.verify("x".into(), None).await.is_err());
        assert_eq!(passwords.waiting.load(Ordering::Acquire), MAX_WAITING);
    }
}
