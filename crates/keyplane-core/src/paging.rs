//! Keyset paging: where a page ends ([`Position`]: the sort key of its last item), the page a
//! list answers ([`Page`]), and the opaque cursor that carries a position to the next request.
//!
//! A cursor is `base64url(payload ‖ tag)`: the payload is the position as a JSON array, the tag
//! HMAC-SHA-256 under a key derived from the master key over the payload and the list's
//! *shape* (which list, in which organization, in which order, with which filters). A cursor
//! therefore opens only for the list it came from: a forged, altered, truncated or foreign one
//! (another organization, another list, other filters or order) does not open. The payload holds
//! only the sort value(s) and id of an item the caller was shown.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::secrets::ServerSecrets;

/// Longer cursors are refused before they are decoded.
pub const MAX_CURSOR_LENGTH: usize = 1024;

const TAG_LENGTH: usize = 32;

/// One value of a sort key, as the database sorts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SortValue {
    /// Unset: sorts after every set value, in either direction.
    Null,
    Int(i64),
    Text(String),
}

impl From<Option<String>> for SortValue {
    fn from(value: Option<String>) -> Self {
        value.map_or(SortValue::Null, SortValue::Text)
    }
}

/// Where a page ends: the sort key of its last item, column by column, ending with a column
/// that is unique within the list (so the next page starts strictly after it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position(pub Vec<SortValue>);

/// One page of a list: its items, how many items match in all, and where the next page starts
/// (`None` on the last page).
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub count: u64,
    pub next: Option<Position>,
}

impl<T> Page<T> {
    /// A page from rows read with `limit + 1`: the extra row only tells that a further page
    /// exists, and the next page starts after the last row kept.
    pub fn from_rows(
        mut items: Vec<T>,
        limit: u32,
        count: u64,
        position: impl Fn(&T) -> Position,
    ) -> Self {
        let limit = limit as usize;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(position)
        } else {
            None
        };
        Page { items, count, next }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            count: self.count,
            next: self.next,
        }
    }
}

/// What must stay the same from one page of a list to the next: the order and the filters
/// (not the limit, and not the position). Written out field by field so that it stays stable.
pub trait Listing {
    fn shape(&self) -> String;
}

impl ServerSecrets {
    /// The cursor of `position` in the list of this `shape`.
    pub fn seal_cursor(&self, shape: &str, position: &Position) -> String {
        let values: Vec<Value> = position
            .0
            .iter()
            .map(|value| match value {
                SortValue::Null => Value::Null,
                SortValue::Int(int) => Value::from(*int),
                SortValue::Text(text) => Value::from(text.as_str()),
            })
            .collect();
        let mut bytes = Value::Array(values).to_string().into_bytes();
        let tag = cursor_tag(self.cursor_key(), shape, &bytes);
        bytes.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position a cursor holds, if it was made by [`ServerSecrets::seal_cursor`] (of any node
    /// sharing the master key) for a list of this `shape`; `None` for anything else.
    pub fn open_cursor(&self, shape: &str, cursor: &str) -> Option<Position> {
        if cursor.len() > MAX_CURSOR_LENGTH {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        let split = bytes.len().checked_sub(TAG_LENGTH)?;
        let (payload, tag) = bytes.split_at(split);
        hmac::verify(self.cursor_key(), &cursor_message(shape, payload), tag).ok()?;
        let Value::Array(values) = serde_json::from_slice(payload).ok()? else {
            return None;
        };
        values
            .into_iter()
            .map(|value| match value {
                Value::Null => Some(SortValue::Null),
                Value::Number(number) => number.as_i64().map(SortValue::Int),
                Value::String(text) => Some(SortValue::Text(text)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(Position)
    }
}

/// What a cursor's tag covers: a label, the shape, and the payload (the shape cannot run into
/// the payload: its length comes first).
fn cursor_message(shape: &str, payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(32 + shape.len() + payload.len());
    message.extend_from_slice(b"keyplane/v1/list-cursor\0");
    message.extend_from_slice(&(shape.len() as u64).to_be_bytes());
    message.extend_from_slice(shape.as_bytes());
    message.extend_from_slice(payload);
    message
}

fn cursor_tag(key: &hmac::Key, shape: &str, payload: &[u8]) -> hmac::Tag {
    hmac::sign(key, &cursor_message(shape, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::MasterKey;

    fn position() -> Position {
        Position(vec![
            SortValue::Null,
            SortValue::Int(-7),
            SortValue::Text("Zoë \"quoted\"".into()),
        ])
    }

    #[test]
    fn a_cursor_opens_for_its_own_list_only() {
        let secrets = MasterKey::generate().derive();
        let cursor = secrets.seal_cursor("org-1 keys name asc", &position());
        assert_eq!(
            secrets.open_cursor("org-1 keys name asc", &cursor),
            Some(position())
        );
        assert_eq!(secrets.open_cursor("org-2 keys name asc", &cursor), None);
        assert_eq!(secrets.open_cursor("org-1 keys name desc", &cursor), None);
        // Another deployment's key.
        let other = MasterKey::generate().derive();
        assert_eq!(other.open_cursor("org-1 keys name asc", &cursor), None);
    }

    #[test]
    fn altered_truncated_or_junk_cursors_do_not_open() {
        let secrets = MasterKey::generate().derive();
        let shape = "shape";
        let cursor = secrets.seal_cursor(shape, &position());
        let bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
        for index in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[index] ^= 1;
            let altered = URL_SAFE_NO_PAD.encode(altered);
            assert_eq!(secrets.open_cursor(shape, &altered), None, "byte {index}");
        }
        for cut in 0..cursor.len() {
            assert_eq!(
                secrets.open_cursor(shape, &cursor[..cut]),
                None,
                "cut {cut}"
            );
        }
        for junk in ["", "!!!", "AAAA", &URL_SAFE_NO_PAD.encode([0u8; 64])] {
            assert_eq!(secrets.open_cursor(shape, junk), None, "{junk:?}");
        }
        let long = "A".repeat(MAX_CURSOR_LENGTH + 1);
        assert_eq!(secrets.open_cursor(shape, &long), None);
    }

    #[test]
    fn a_page_read_with_one_row_more_knows_its_next() {
        let page = Page::from_rows(vec![1, 2, 3], 2, 9, |n| Position(vec![SortValue::Int(*n)]));
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next, Some(Position(vec![SortValue::Int(2)])));
        let last = Page::from_rows(vec![1, 2], 2, 2, |n| Position(vec![SortValue::Int(*n)]));
        assert_eq!(last.next, None);
    }
}
