//! Group commit for refresh tokens. Every login with an API key, a password or a refresh token
//! stores one refresh token, and on SQLite with `synchronous=FULL` each transaction costs a disk
//! flush: one transaction per login capped token issuance at the disk's flush rate. Requests
//! therefore hand their token to one writer task, which stores whatever has queued up since its
//! last commit in a single transaction and then answers each request. A request is still
//! answered only after its token is durable; under load one flush serves many requests, and
//! when idle a request waits for nothing but its own commit.

use std::sync::Arc;

use keyplane_core::records::RefreshIssue;
use keyplane_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for a commit, at most; beyond it callers wait for room (backpressure).
const QUEUE: usize = 4_096;
/// Tokens per transaction, at most.
const BATCH: usize = 512;

type Reply = oneshot::Sender<Result<bool, StoreError>>;

#[derive(Clone)]
pub struct RefreshTokenWriter {
    sender: mpsc::Sender<(RefreshIssue, Reply)>,
}

impl RefreshTokenWriter {
    /// Starts the writer task on the current runtime.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(store, receiver));
        Self { sender }
    }

    /// Stores `issue` (see [`Store::issue_refresh_tokens`]) and returns once it is committed:
    /// false when its parent had already been spent.
    pub async fn issue(&self, issue: RefreshIssue) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::unavailable("the refresh token writer has stopped");
        self.sender
            .send((issue, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_batches(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<(RefreshIssue, Reply)>) {
    let mut pending = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut pending, BATCH).await > 0 {
        // Let every request that is ready to run reach this queue before committing: under
        // load a commit then carries most of the requests in flight instead of the few that
        // arrived during the previous flush, and each commit costs several hand-offs to the
        // database thread besides the flush. An idle server yields to nobody and commits at
        // once.
        loop {
            tokio::task::yield_now().await;
            let before = pending.len();
            while pending.len() < BATCH
                && let Ok(item) = receiver.try_recv()
            {
                pending.push(item);
            }
            if pending.len() == before || pending.len() == BATCH {
                break;
            }
        }
        let (batch, replies): (Vec<RefreshIssue>, Vec<Reply>) = pending.drain(..).unzip();
        match store.issue_refresh_tokens(&batch).await {
            Ok(stored) => {
                for (reply, stored) in replies.into_iter().zip(stored) {
                    let _ = reply.send(Ok(stored));
                }
            }
            Err(error) => {
                tracing::error!(%error, count = batch.len(), "storing refresh tokens failed");
                for reply in replies {
                    let _ = reply.send(Err(error.for_each_caller()));
                }
            }
        }
    }
}
