//! List query strings: `limit` 1–100 (default 100), `offset` ≥ 0 or `cursor` (not both),
//! `order_by`, `order` (`asc`|`desc`), and resource-specific filters. Parsed by hand because
//! filters may be repeated (`kind=a&kind=b`) as well as comma-separated, and anything unknown or
//! repeated is a 400 naming the parameter. [`Cursors`] opens and seals the cursors of one list.

use keyplane_core::OrganizationId;
use keyplane_core::paging::{Listing, MAX_CURSOR_LENGTH, Position};
use keyplane_core::secrets::ServerSecrets;

use crate::http::error::ApiError;
use crate::state::AppState;

/// The paging part of a list query.
pub struct Paging<O> {
    pub limit: u32,
    pub offset: u64,
    /// The `cursor` as given (opened by [`Cursors::open`] once the list is known).
    pub cursor: Option<String>,
    pub order_by: O,
    /// `None` when `order` was not given (each list has its default).
    pub descending: Option<bool>,
}

/// Parses `raw`. `orders` maps `order_by` names to values (the first is the default); every
/// other parameter goes to `filter`, which answers false for names it does not know.
pub fn parse<O: Copy>(
    raw: Option<&str>,
    orders: &[(&'static str, O)],
    mut filter: impl FnMut(&str, &str) -> Result<bool, ApiError>,
) -> Result<Paging<O>, ApiError> {
    let mut paging = Paging {
        limit: 100,
        offset: 0,
        cursor: None,
        order_by: orders[0].1,
        descending: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let name = name.trim_end_matches("[]").to_owned();
        let mut once = || {
            if seen.contains(&name) {
                return Err(ApiError::validation(&name, "must not be repeated"));
            }
            seen.push(name.clone());
            Ok(())
        };
        match name.as_str() {
            "limit" => {
                once()?;
                paging.limit = whole_number(&value)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| ApiError::validation("limit", "must be between 1 and 100"))?;
            }
            "offset" => {
                once()?;
                paging.offset = whole_number(&value)
                    .filter(|n| *n <= i64::MAX as u64)
                    .ok_or_else(|| {
                        ApiError::validation(
                            "offset",
                            "must be a whole number from 0 to 9223372036854775807",
                        )
                    })?;
            }
            "cursor" => {
                once()?;
                if value.is_empty() || value.len() > MAX_CURSOR_LENGTH {
                    return Err(ApiError::validation(
                        "cursor",
                        format!(
                            "must be the next_cursor of a list answer (1 to {MAX_CURSOR_LENGTH} characters)"
                        ),
                    ));
                }
                paging.cursor = Some(value.into_owned());
            }
            "order_by" => {
                once()?;
                paging.order_by = orders
                    .iter()
                    .find(|(text, _)| *text == value)
                    .map(|(_, order)| *order)
                    .ok_or_else(|| {
                        let names: Vec<&str> = orders.iter().map(|(text, _)| *text).collect();
                        ApiError::validation(
                            "order_by",
                            format!("must be one of: {}", names.join(" ")),
                        )
                    })?;
            }
            "order" => {
                once()?;
                paging.descending = match value.as_ref() {
                    "asc" => Some(false),
                    "desc" => Some(true),
                    _ => return Err(ApiError::validation("order", "must be asc or desc")),
                };
            }
            other => {
                if !filter(other, &value)? {
                    return Err(ApiError::validation(
                        other,
                        "is not a known query parameter",
                    ));
                }
            }
        }
    }
    if paging.cursor.is_some() && seen.iter().any(|name| name == "offset") {
        return Err(ApiError::validation(
            "cursor",
            "cannot be combined with offset (a cursor says where the page starts)",
        ));
    }
    Ok(paging)
}

/// The cursors of one list: a cursor opens only for the list it came from, the same kind of
/// list in the same organization, in the same order and with the same filters (the `limit` may
/// change from page to page).
pub struct Cursors<'a> {
    secrets: &'a ServerSecrets,
    shape: String,
}

impl<'a> Cursors<'a> {
    /// The cursors of the list `listing` of `scope`'s items.
    pub fn new(state: &'a AppState, scope: OrganizationId, listing: &impl Listing) -> Self {
        Self {
            secrets: state.secrets(),
            shape: format!("{scope} {}", listing.shape()),
        }
    }

    /// Where the page a request's `cursor` asks for starts; a 400 naming `cursor` for anything
    /// but a cursor this list gave (and nothing about why, or about what it holds).
    pub fn open(&self, cursor: Option<&str>) -> Result<Option<Position>, ApiError> {
        cursor
            .map(|cursor| {
                self.secrets
                    .open_cursor(&self.shape, cursor)
                    .ok_or_else(|| {
                        ApiError::validation(
                            "cursor",
                            "is not a next_cursor of this list; repeat the query it came from \
                         (same order and filters) with it",
                        )
                    })
            })
            .transpose()
    }

    /// The `next_cursor` of a page whose next page starts at `next`.
    pub fn seal(&self, next: Option<&Position>) -> Option<String> {
        next.map(|position| self.secrets.seal_cursor(&self.shape, position))
    }
}

/// Adds the comma-separated values of an array filter; a value given twice is a 400.
/// A number written plainly: decimal digits only, no sign and no leading zero (`0` itself is
/// fine), so one value has one spelling.
fn whole_number(text: &str) -> Option<u64> {
    let plain = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    plain.then(|| text.parse().ok()).flatten()
}

pub fn add_values<T: std::str::FromStr<Err = keyplane_core::ValidationError> + PartialEq>(
    values: &mut Vec<T>,
    field: &str,
    text: &str,
) -> Result<(), ApiError> {
    for part in text.split(',') {
        let value: T = part
            .parse()
            .map_err(|error: keyplane_core::ValidationError| {
                ApiError::validation(field, error.message)
            })?;
        if values.contains(&value) {
            return Err(ApiError::validation(
                field,
                format!("{part} is given twice"),
            ));
        }
        values.push(value);
    }
    Ok(())
}

/// A single-valued filter: given twice is a 400.
pub fn set_once<T>(slot: &mut Option<T>, field: &str, value: T) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(ApiError::validation(field, "must not be repeated"));
    }
    *slot = Some(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::whole_number;

    #[test]
    fn numbers_have_one_spelling() {
        assert_eq!(whole_number("0"), Some(0));
        assert_eq!(whole_number("100"), Some(100));
        assert_eq!(whole_number("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "+1",
            "-1",
            "01",
            "1.0",
            " 1",
            "1e2",
            "18446744073709551616",
            "0x10",
        ] {
            assert_eq!(whole_number(bad), None, "{bad:?}");
        }
    }
}
