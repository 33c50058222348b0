//! Wall-clock time as the API speaks it: unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch, as every timestamp of the API is expressed.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
