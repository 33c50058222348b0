//! Infrastructure: the parts that know no use case. TLS and the listener, failed-attempt
//! throttles, the password-hashing pool, signing keys, the group commit of refresh tokens, the
//! background audit queue and usage log, the per-node caches, mail, metrics, telemetry and
//! private files. Nothing here imports `service` or `http`.

pub mod audit_queue;
pub mod files;
pub mod group_commit;
pub mod listener;
pub mod mail;
pub mod metrics;
pub mod passwords;
pub mod signing;
pub mod subjects;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod usage;
