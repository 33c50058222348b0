//! What a subject (an API key or a member) may do now, and which of the tokens issued to it
//! still count: the one rule bearer checks and refresh rotations share.

use crate::api_keys::SecretState;
use crate::values::Role;

/// What a subject may do now: its role, and the version of its tokens (tokens issued under
/// another version are dead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub role: Role,
    pub token_version: i64,
    /// For an API key: which of its secrets still count.
    pub secret: Option<SecretState>,
}

impl Standing {
    /// When what was issued to this subject under `token_version`, with the API key secret of
    /// `key_generation`, ends at the latest: `Some(None)` never of itself, `Some(Some(end))` with
    /// the grace of the rotation that replaced that secret; `None` when it has ended (issued
    /// before a disable or to an earlier membership, or with a secret rotated away).
    pub fn end_for(
        &self,
        token_version: i64,
        key_generation: Option<i64>,
        now: i64,
    ) -> Option<Option<i64>> {
        if token_version != self.token_version {
            return None;
        }
        let end = match (self.secret, key_generation) {
            (Some(secret), Some(generation)) => secret.end_of(generation)?,
            _ => None,
        };
        match end {
            Some(end) if end <= now => None,
            end => Some(end),
        }
    }
}
