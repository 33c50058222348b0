//! Audit events that accompany no change of their own, such as failed logins and tokens issued
//! without a refresh token (Fiskil, OAuth client credentials), are written by a
//! background task in batches, off the response path. A failed login therefore costs the same
//! whether or not the key exists (no write to wait for), and a flood of failures becomes a few
//! batched inserts instead of one transaction each. The queue is bounded: beyond it events are
//! counted as dropped rather than held in memory. Events that record a change are never sent
//! here: they are written in the change's own transaction.

use std::sync::Arc;
use std::time::Duration;

use keyplane_core::records::AuditEvent;
use keyplane_store::Store;
use tokio::sync::{mpsc, oneshot};

/// Events waiting to be written, at most.
const QUEUE: usize = 10_000;
/// Events written per transaction, at most.
const BATCH: usize = 1_024;
/// How long the writer gathers more events after the first one of a batch (unless a flush is
/// waiting): the difference between a transaction per handful of events under load, each a
/// disk flush and several hand-offs to the database thread, and a few per second.
const LINGER: Duration = Duration::from_millis(50);

enum Message {
    Event(AuditEvent),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditQueue {
    sender: mpsc::Sender<Message>,
}

impl AuditQueue {
    /// Starts the writer task on the current runtime.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(store, receiver));
        Self { sender }
    }

    /// Queues an event; drops it (with a warning) when the queue is full.
    pub fn record(&self, event: AuditEvent) {
        if self.sender.try_send(Message::Event(event)).is_err() {
            tracing::warn!("audit queue full: dropped an event");
        }
    }

    /// Waits until every event queued before this call has been written (or failed to be).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_batches(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<Message>) {
    let mut messages = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut messages, BATCH).await > 0 {
        let deadline = tokio::time::Instant::now() + LINGER;
        let is_flush = |message: &Message| matches!(message, Message::Flush(_));
        let mut flush_waiting = messages.iter().any(is_flush);
        while messages.len() < BATCH && !flush_waiting {
            let (before, room) = (messages.len(), BATCH - messages.len());
            let more = receiver.recv_many(&mut messages, room);
            match tokio::time::timeout_at(deadline, more).await {
                Ok(0) | Err(_) => break,
                Ok(_) => flush_waiting = messages[before..].iter().any(is_flush),
            }
        }
        let mut events = Vec::with_capacity(messages.len());
        let mut flushes = Vec::new();
        for message in messages.drain(..) {
            match message {
                Message::Event(event) => events.push(event),
                Message::Flush(done) => flushes.push(done),
            }
        }
        if !events.is_empty()
            && let Err(error) = store.record_audit_events(&events).await
        {
            tracing::error!(%error, count = events.len(), "writing audit events failed");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
