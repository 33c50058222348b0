//! The page skeleton every console page shares (head, navigation, organization switcher), and
//! the pieces forms are built from: labelled fields with their errors beside them, the CSRF
//! field, times. Markup is written in Rust with maud, checked when the binary is compiled, and
//! escaped by default.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use keyplane_core::ValidationError;
use keyplane_core::records::{Metadata, Organization};
use keyplane_core::values::Role;
use maud::{DOCTYPE, Markup, html};

use crate::console::assets::{HTMX, SCRIPT, STYLE};
use crate::service::sessions::{self, Signed};
use crate::state::AppState;

/// The form field that carries the session's CSRF token (htmx sends the header
/// `X-CSRF-Token` instead).
pub const CSRF_FIELD: &str = "csrf_token";

/// The largest console form read; a form holds a few short fields.
pub const FORM_LIMIT: usize = 64 * 1024;

/// Which navigation link is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Organizations,
    ApiKeys,
    People,
    AuditLog,
    Account,
}

const SECTIONS: [(Section, &str, &str); 5] = [
    (
        Section::Organizations,
        "Organizations",
        "/console/organizations",
    ),
    (Section::ApiKeys, "API keys", "/console/api-keys"),
    (Section::People, "People", "/console/people"),
    (Section::AuditLog, "Audit log", "/console/audit-log"),
    (Section::Account, "Account", "/console/account"),
];

/// What the header of a signed-in page shows: the navigation, the organization switcher and
/// `Sign out`.
pub struct Chrome<'a> {
    pub signed: &'a Signed,
    pub organizations: &'a [(Organization, Role)],
    pub section: Section,
}

/// A whole page for a signed-in person: the navigation (with `section` marked), the
/// organization switcher, and `body`.
pub async fn signed_page(
    state: &AppState,
    signed: &Signed,
    section: Section,
    title: &str,
    body: Markup,
) -> Markup {
    let organizations = sessions::organizations(state, signed)
        .await
        .unwrap_or_default();
    let chrome = Chrome {
        signed,
        organizations: &organizations,
        section,
    };
    page(title, Some(&chrome), body)
}

/// A whole page. `chrome` is `None` on the pages before sign-in.
pub fn page(title: &str, chrome: Option<&Chrome<'_>>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx would otherwise add an inline style element, which the CSP refuses.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                @if let Some(chrome) = chrome {
                    meta name="csrf-token" content=(chrome.signed.session.csrf_token);
                }
                title { (title) " · Keyplane" }
                link rel="stylesheet" href=(STYLE.path());
                script src=(HTMX.path()) defer {}
                script src=(SCRIPT.path()) defer {}
            }
            body {
                a.skip href="#content" { "Skip to content" }
                @if let Some(chrome) = chrome {
                    (header(chrome))
                    main #content { (body) }
                } @else {
                    header.top { div.bar { span.brand { "Keyplane" } } }
                    main.narrow #content { (body) }
                }
            }
        }
    }
}

fn header(chrome: &Chrome<'_>) -> Markup {
    let current = chrome.signed.actor.organization_id;
    let current_name = chrome
        .organizations
        .iter()
        .find(|(o, _)| o.id == current)
        .map(|(o, _)| o.name.as_str())
        .unwrap_or("");
    html! {
        header.top {
            div.bar {
                a.brand href="/console" { "Keyplane" }
                nav.main aria-label="Main" {
                    ul {
                        @for (section, label, href) in SECTIONS {
                            li {
                                @if section == chrome.section {
                                    a href=(href) aria-current="page" { (label) }
                                } @else {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                    }
                }
                div.who {
                    @if chrome.organizations.len() > 1 {
                        form method="post" action="/console/organization" {
                            (csrf(chrome.signed))
                            label for="organization-switch" { "Organization" }
                            select #organization-switch name="organization_id" {
                                @for (organization, _) in chrome.organizations {
                                    option value=(organization.id) selected[organization.id == current] { (organization.name) }
                                }
                            }
                            button.quiet type="submit" { "Switch" }
                        }
                    } @else {
                        span { (current_name) " · " (role_name(chrome.signed.actor.role)) }
                    }
                    form method="post" action="/console/sign-out" {
                        (csrf(chrome.signed))
                        button.quiet type="submit" { "Sign out" }
                    }
                }
            }
        }
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Developer => "developer",
        Role::Viewer => "viewer",
    }
}

/// The hidden field that carries the session's CSRF token.
pub fn csrf(signed: &Signed) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(signed.session.csrf_token); }
}

/// A form's errors, each beside the field it concerns (by the API's field name); errors about
/// no field of the form go above it.
#[derive(Default)]
pub struct Errors {
    pub field: Option<(String, String)>,
    pub form: Option<String>,
}

impl Errors {
    /// The API's message for a field (`must be 12 to 256 characters`).
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some((field.to_owned(), message.into())),
            form: None,
        }
    }

    pub fn form(message: impl Into<String>) -> Self {
        Self {
            field: None,
            form: Some(message.into()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.field.is_none() && self.form.is_none()
    }

    fn for_field(&self, name: &str) -> Option<&str> {
        self.field
            .as_ref()
            .filter(|(field, _)| field == name)
            .map(|(_, message)| message.as_str())
    }

    /// The error for the form as a whole: its own, or a field's that the form has no input for.
    pub fn notice(&self, fields: &[&str]) -> Markup {
        let message = self.form.clone().or_else(|| {
            self.field
                .as_ref()
                .filter(|(field, _)| !fields.contains(&field.as_str()))
                .map(|(field, message)| format!("{field}: {message}"))
        });
        html! {
            @if let Some(message) = message {
                p.notice.error role="alert" { (message) }
            }
        }
    }
}

impl From<ValidationError> for Errors {
    /// Beside the form field it concerns: an error about a part of a field (`metadata.store`)
    /// goes beside that field, naming the part (`store: must be a string`).
    fn from(error: ValidationError) -> Self {
        match error.field.split_once('.') {
            Some((field, part)) => Errors::field(field, format!("{part}: {}", error.message)),
            None => Errors::field(&error.field, error.message),
        }
    }
}

/// One labelled input with its hint and its error beside it.
pub struct Field<'a> {
    pub label: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub value: &'a str,
    pub hint: Option<&'a str>,
    pub required: bool,
    pub autocomplete: Option<&'a str>,
}

impl<'a> Field<'a> {
    pub fn new(label: &'a str, name: &'a str, kind: &'a str, value: &'a str) -> Self {
        Self {
            label,
            name,
            kind,
            value,
            hint: None,
            required: true,
            autocomplete: None,
        }
    }

    pub fn hint(mut self, hint: &'a str) -> Self {
        self.hint = Some(hint);
        self
    }

    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }

    pub fn autocomplete(mut self, autocomplete: &'a str) -> Self {
        self.autocomplete = Some(autocomplete);
        self
    }

    pub fn render(&self, errors: &Errors) -> Markup {
        let id = format!("field-{}", self.name);
        let error = errors.for_field(self.name);
        let described = match (self.hint.is_some(), error.is_some()) {
            (true, true) => Some(format!("{id}-hint {id}-error")),
            (true, false) => Some(format!("{id}-hint")),
            (false, true) => Some(format!("{id}-error")),
            (false, false) => None,
        };
        html! {
            div.field {
                label for=(id) { (self.label) }
                @if self.kind == "textarea" {
                    textarea id=(id) name=(self.name) aria-describedby=[described.as_deref()]
                        aria-invalid=[error.map(|_| "true")] required[self.required] { (self.value) }
                } @else {
                    input id=(id) name=(self.name) type=(self.kind) value=(self.value)
                        aria-describedby=[described.as_deref()] aria-invalid=[error.map(|_| "true")]
                        required[self.required] autocomplete=[self.autocomplete];
                }
                @if let Some(hint) = self.hint {
                    p.hint id=(format!("{id}-hint")) { (hint) }
                }
                @if let Some(error) = error {
                    p.error id=(format!("{id}-error")) { (self.label) " " (error) }
                }
            }
        }
    }
}

/// The most pages a person can page to in any listing; the offset stays bounded.
pub const MAX_PAGE: u64 = 1000;

/// Which page of a listing a request asks for, and how many rows a page holds. Every paged
/// screen (API keys, organizations, people, invitations, the audit log) reads and shows it
/// with this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub page: u64,
    pub size: u32,
}

impl Paging {
    /// From a `page` parameter, read leniently: 1 when missing or unreadable, at most
    /// [`MAX_PAGE`].
    pub fn read(page: Option<&str>, size: u32) -> Self {
        let page = page
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, MAX_PAGE);
        Self { page, size }
    }

    /// Rows before this page.
    pub fn offset(self) -> u64 {
        (self.page - 1) * u64::from(self.size)
    }

    /// `Previous`, where this page stands (`Page 2 of 7 · 160 keys`) and `Next`. The links are
    /// plain addresses (they work without script); with htmx they swap `target` in place.
    pub fn nav(self, count: u64, noun: &str, target: &str, href: impl Fn(u64) -> String) -> Markup {
        let pages = count.div_ceil(u64::from(self.size)).max(1);
        let target_selector = format!("#{target}");
        html! {
            nav.pager aria-label="Pages" hx-boost="true" hx-target=(target_selector) hx-select=(target_selector) hx-swap="outerHTML" {
                @if self.page > 1 {
                    a href=(href(self.page - 1)) rel="prev" { "Previous" }
                }
                span { "Page " (self.page) " of " (pages) " · " (count) " " (noun) }
                @if self.page < pages.min(MAX_PAGE) {
                    a href=(href(self.page + 1)) rel="next" { "Next" }
                }
            }
        }
    }
}

/// A listing's order: the column (by the API's `order_by` name), what the store sorts by, and
/// the direction; read leniently from the `sort` and `order` parameters.
#[derive(Clone, Copy, Debug)]
pub struct Sorting<T> {
    pub name: &'static str,
    pub by: T,
    pub descending: bool,
}

impl<T: Copy> Sorting<T> {
    /// `sort` names one of `offered` (else `default`); `order` is `asc` or `desc` (else the
    /// column's first direction, see [`Sorting::header`]).
    pub fn read(
        sort: Option<&str>,
        order: Option<&str>,
        offered: &[(&'static str, T)],
        default: (&'static str, T),
    ) -> Self {
        let (name, by) = offered
            .iter()
            .copied()
            .find(|(name, _)| Some(*name) == sort)
            .unwrap_or(default);
        let descending = match order {
            Some("asc") => false,
            Some("desc") => true,
            _ => first_descending(name),
        };
        Self {
            name,
            by,
            descending,
        }
    }

    pub fn order(&self) -> &'static str {
        if self.descending { "desc" } else { "asc" }
    }

    /// A column header that sorts by `name`: its link turns the direction round on the sorted
    /// column and starts another column in its first direction; `aria-sort` says which is
    /// sorted and how. `href` gives the listing's address for a column and a direction.
    pub fn header(&self, name: &str, label: &str, href: impl Fn(&str, bool) -> String) -> Markup {
        let active = self.name == name;
        let descending = if active {
            !self.descending
        } else {
            first_descending(name)
        };
        let sorted = match (active, self.descending) {
            (false, _) => "none",
            (true, true) => "descending",
            (true, false) => "ascending",
        };
        html! {
            th scope="col" aria-sort=(sorted) {
                a href=(href(name, descending)) { (label) }
            }
        }
    }
}

/// A column of times starts newest first; any other A to Z.
fn first_descending(name: &str) -> bool {
    name == "created_at"
}

/// The answer to a form that changed something: see the result with a GET (Post/Redirect/Get),
/// so a reload never repeats the change.
pub fn see_other(path: &str) -> Response {
    Redirect::to(path).into_response()
}

/// A plain page for a refusal or an outage: what happened and what to do, never a stack trace.
pub fn refused(status: StatusCode, message: &str) -> Response {
    let body = page(
        "Not possible",
        None,
        html! {
            h1 { "That did not work" }
            p.notice.error role="alert" { (message) }
            p { a href="/console" { "Back to the console" } }
        },
    );
    (status, body).into_response()
}

/// A unix time as `2026-12-02 14:05 UTC`.
pub fn time(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(at) => format!(
            "{}-{:02}-{:02} {:02}:{:02} UTC",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute()
        ),
        Err(_) => unix.to_string(),
    }
}

/// A unix time as a `datetime-local` input's value, in UTC: `2026-12-02T14:05`.
pub fn datetime_input(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(at) => format!(
            "{}-{:02}-{:02}T{:02}:{:02}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute()
        ),
        Err(_) => String::new(),
    }
}

/// A form's `Metadata` text: empty (or only spaces) is none; otherwise a JSON object, whose
/// entries the use case then checks by the API's rules (strings only, limits).
pub fn parse_metadata(text: Option<&str>) -> Result<Option<Metadata>, ValidationError> {
    match text.map(str::trim).filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => serde_json::from_str::<Metadata>(text)
            .map(Some)
            .map_err(|_| ValidationError::new("metadata", "must be a JSON object")),
    }
}

/// `2026-12-31T23:59` (what a `datetime-local` input sends, seconds optional), read as UTC.
pub fn parse_datetime(text: &str) -> Option<i64> {
    let (date, clock) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
    );
    let mut clock_parts = clock.splitn(3, ':').map(str::parse::<u8>);
    let (hour, minute) = (clock_parts.next()?.ok()?, clock_parts.next()?.ok()?);
    let second = clock_parts.next().transpose().ok()?.unwrap_or(0);
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?)
            .ok()?;
    let clock = time::Time::from_hms(hour, minute, second).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_inputs_read_as_utc() {
        assert_eq!(parse_datetime("1970-01-02T00:00"), Some(86_400));
        assert_eq!(parse_datetime("2026-12-02T04:20:10"), Some(1_796_185_210));
        for bad in [
            "",
            "2026-12-02",
            "2026-13-01T00:00",
            "2026-02-30T00:00",
            "x-1-1T00:00",
            "2026-01-01T24:00",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn datetime_inputs_round_trip() {
        assert_eq!(datetime_input(1_796_185_200), "2026-12-02T04:20");
        assert_eq!(
            parse_datetime(&datetime_input(1_796_185_200)),
            Some(1_796_185_200)
        );
    }

    #[test]
    fn pages_are_read_leniently_and_bounded() {
        for (text, page) in [
            (None, 1),
            (Some(""), 1),
            (Some("abc"), 1),
            (Some("0"), 1),
            (Some("-3"), 1),
            (Some("7"), 7),
            (Some("99999999999999999999"), 1),
            (Some("1000000"), MAX_PAGE),
        ] {
            assert_eq!(Paging::read(text, 25).page, page, "{text:?}");
        }
        assert_eq!(Paging::read(Some("3"), 25).offset(), 50);
        let nav = Paging::read(Some("2"), 25)
            .nav(60, "keys", "keys", |p| format!("/x?page={p}"))
            .into_string();
        assert!(nav.contains(r#"href="/x?page=1" rel="prev""#), "{nav}");
        assert!(nav.contains(r#"href="/x?page=3" rel="next""#));
        assert!(nav.contains("Page 2 of 3 · 60 keys"));
        let last = Paging::read(Some("3"), 25)
            .nav(60, "keys", "keys", |p| format!("/x?page={p}"))
            .into_string();
        assert!(!last.contains("rel=\"next\""));
    }

    #[test]
    fn sorting_reads_offered_columns_and_headers_turn_the_direction_round() {
        const OFFERED: [(&str, u8); 2] = [("name", 0), ("created_at", 1)];
        let read = |sort, order| Sorting::read(sort, order, &OFFERED, OFFERED[0]);
        let default = read(None, None);
        assert_eq!((default.name, default.descending), ("name", false));
        let newest = read(Some("created_at"), None);
        assert_eq!(
            (newest.by, newest.descending),
            (1, true),
            "times newest first"
        );
        assert_eq!(read(Some("bogus"), Some("sideways")).name, "name");
        assert!(read(Some("name"), Some("desc")).descending);
        let href = |name: &str, descending: bool| format!("/x?sort={name}&d={descending}");
        let header = default.header("name", "Name", href).into_string();
        assert!(header.contains(r#"aria-sort="ascending""#), "{header}");
        assert!(header.contains("d=true"), "the sorted column turns round");
        let other = default.header("created_at", "Created", href).into_string();
        assert!(other.contains(r#"aria-sort="none""#) && other.contains("d=true"));
    }

    #[test]
    fn times_show_in_utc() {
        assert_eq!(time(86_400 + 3_660), "1970-01-02 01:01 UTC");
    }
}
