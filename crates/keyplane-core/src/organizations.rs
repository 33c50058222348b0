//! Organizations as a domain: the fields and their rules, creation and partial updates.

use crate::ids::{OrganizationId, UserId};
use crate::paging::{Listing, Position};
use crate::records::{Metadata, Organization};
use crate::values::{Env, ValidationError, check_text};

/// The most organizations one management chain holds, root included: a deeper one is refused
/// at creation, so every organization in a manager's list can be reached through it.
pub const MAX_MANAGEMENT_LEVELS: usize = 64;

/// Whether `organization` may have `env` enabled by a caller acting for `caller`. LIVE means
/// real money or real data: a managed organization gets it from the organization that manages
/// it (which answers for it), never from itself, and only from a manager that has LIVE itself,
/// or an organization without LIVE could hand it on through one it creates. `manager_has_live`
/// is read for the organization's manager (ignored when it has none).
pub fn may_enable(
    organization: &Organization,
    env: Env,
    caller: OrganizationId,
    manager_has_live: bool,
) -> bool {
    env != Env::Live
        || organization.managed_by.is_none()
        || (organization.id != caller && manager_has_live)
}

/// The fields a create or update carries. On create `None` means "not given"; on update the
/// outer `Option` of an optional field is "not given" and the inner one "clear it".
#[derive(Clone, Debug, Default)]
pub struct OrganizationFields {
    pub name: Option<String>,
    pub address_line1: Option<String>,
    pub zip: Option<String>,
    pub town: Option<String>,
    pub country_code: Option<String>,
    pub display_name: Option<Option<String>>,
    pub address_line2: Option<Option<String>>,
    pub state: Option<Option<String>>,
    pub vat_id: Option<Option<String>>,
    pub tax_number: Option<Option<String>>,
    pub economy_id: Option<Option<String>>,
    pub contact_person_id: Option<Option<String>>,
    pub billing_address_id: Option<Option<String>>,
    pub metadata: Option<Metadata>,
}

/// Country codes: ISO 3166-1 alpha-3, upper case, checked against the real list.
pub fn validate_country_code(code: &str) -> Result<(), ValidationError> {
    let known = code.len() == 3
        && code.bytes().all(|b| b.is_ascii_uppercase())
        && isocountry::CountryCode::for_alpha3(code).is_ok();
    if known {
        Ok(())
    } else {
        Err(ValidationError::new(
            "country_code",
            "must be an ISO 3166-1 alpha-3 code, such as DEU",
        ))
    }
}

/// A field that must be present (on create).
pub fn required(field: &str, value: &Option<String>) -> Result<(), ValidationError> {
    if value.is_none() {
        return Err(ValidationError::new(field, "is required"));
    }
    Ok(())
}

/// Length limits of each text field (characters): required fields at least one.
const LIMITS: [(&str, usize, usize); 13] = [
    ("name", 3, 100),
    ("address_line1", 1, 200),
    ("zip", 1, 20),
    ("town", 1, 100),
    ("country_code", 3, 3),
    ("display_name", 1, 100),
    ("address_line2", 1, 200),
    ("state", 1, 100),
    ("vat_id", 1, 50),
    ("tax_number", 1, 50),
    ("economy_id", 1, 50),
    ("contact_person_id", 1, 100),
    ("billing_address_id", 1, 100),
];

fn check(field: &str, value: &str) -> Result<(), ValidationError> {
    let (_, min, max) = LIMITS
        .iter()
        .find(|(name, _, _)| *name == field)
        .expect("every field has a limit");
    check_text(field, value, *min, *max)
}

impl OrganizationFields {
    /// Checks every field that is given.
    fn validate(&self) -> Result<(), ValidationError> {
        let required = [
            ("name", &self.name),
            ("address_line1", &self.address_line1),
            ("zip", &self.zip),
            ("town", &self.town),
            ("country_code", &self.country_code),
        ];
        for (field, value) in required {
            if let Some(value) = value {
                check(field, value)?;
            }
        }
        let optional = [
            ("display_name", &self.display_name),
            ("address_line2", &self.address_line2),
            ("state", &self.state),
            ("vat_id", &self.vat_id),
            ("tax_number", &self.tax_number),
            ("economy_id", &self.economy_id),
            ("contact_person_id", &self.contact_person_id),
            ("billing_address_id", &self.billing_address_id),
        ];
        for (field, value) in optional {
            if let Some(Some(value)) = value {
                check(field, value)?;
            }
        }
        if let Some(code) = &self.country_code {
            validate_country_code(code)?;
        }
        if let Some(metadata) = &self.metadata {
            crate::api_keys::validate_metadata(metadata)?;
        }
        Ok(())
    }

    /// Applies the given fields to `organization`.
    fn apply(self, o: &mut Organization) {
        let set = |target: &mut String, value: Option<String>| {
            if let Some(value) = value {
                *target = value;
            }
        };
        set(&mut o.name, self.name);
        let set_some = |target: &mut Option<String>, value: Option<String>| {
            if let Some(value) = value {
                *target = Some(value);
            }
        };
        set_some(&mut o.address_line1, self.address_line1);
        set_some(&mut o.zip, self.zip);
        set_some(&mut o.town, self.town);
        set_some(&mut o.country_code, self.country_code);
        let replace = |target: &mut Option<String>, value: Option<Option<String>>| {
            if let Some(value) = value {
                *target = value;
            }
        };
        replace(&mut o.display_name, self.display_name);
        replace(&mut o.address_line2, self.address_line2);
        replace(&mut o.state, self.state);
        replace(&mut o.vat_id, self.vat_id);
        replace(&mut o.tax_number, self.tax_number);
        replace(&mut o.economy_id, self.economy_id);
        replace(&mut o.contact_person_id, self.contact_person_id);
        replace(&mut o.billing_address_id, self.billing_address_id);
        if let Some(metadata) = self.metadata {
            o.metadata = metadata;
        }
    }
}

/// Sort orders of an organization list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrganizationOrder {
    Name,
    CreatedAt,
    Town,
    Zip,
    DisplayName,
}

impl OrganizationOrder {
    pub const ALL: [(&'static str, OrganizationOrder); 5] = [
        ("name", OrganizationOrder::Name),
        ("created_at", OrganizationOrder::CreatedAt),
        ("town", OrganizationOrder::Town),
        ("zip", OrganizationOrder::Zip),
        ("display_name", OrganizationOrder::DisplayName),
    ];
}

/// One page of the organizations a caller can see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationQuery {
    pub order_by: OrganizationOrder,
    pub descending: bool,
    pub limit: u32,
    pub offset: u64,
    pub managed_by: Option<OrganizationId>,
    /// `Some(true)`: managed ones only; `Some(false)`: unmanaged ones only.
    pub managed: Option<bool>,
    pub env: Option<Env>,
    /// Start after this organization (cursor paging; `offset` is then 0).
    pub after: Option<Position>,
}

impl Listing for OrganizationQuery {
    fn shape(&self) -> String {
        format!(
            "organizations order_by={:?} descending={} managed_by={:?} managed={:?} env={:?}",
            self.order_by, self.descending, self.managed_by, self.managed, self.env
        )
    }
}

/// A new organization managed by `manager`, with env `TEST` only.
pub fn create(
    fields: OrganizationFields,
    manager: OrganizationId,
    created_by_user: Option<UserId>,
    now: i64,
) -> Result<Organization, ValidationError> {
    for (field, value) in [
        ("name", &fields.name),
        ("address_line1", &fields.address_line1),
        ("zip", &fields.zip),
        ("town", &fields.town),
        ("country_code", &fields.country_code),
    ] {
        required(field, value)?;
    }
    fields.validate()?;
    let mut organization = Organization::named(String::new(), vec![Env::Test], now);
    organization.managed_by = Some(manager);
    organization.created_by_user = created_by_user;
    fields.apply(&mut organization);
    Ok(organization)
}

/// A partial update; required fields cannot be cleared.
pub fn update(
    organization: &mut Organization,
    fields: OrganizationFields,
) -> Result<(), ValidationError> {
    fields.validate()?;
    fields.apply(organization);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> OrganizationFields {
        OrganizationFields {
            name: Some("Venue".into()),
            address_line1: Some("Via Vincenzo Monti 10".into()),
            zip: Some("20145".into()),
            town: Some("Milano".into()),
            country_code: Some("ITA".into()),
            ..Default::default()
        }
    }

    #[test]
    fn country_codes_come_from_the_real_list() {
        for good in ["DEU", "ITA", "AUT", "USA"] {
            assert!(validate_country_code(good).is_ok(), "{good}");
        }
        for bad in ["XXX", "deu", "DE", "DEUT", "", "QQQ"] {
            assert!(validate_country_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn creation_needs_the_address_and_names_the_missing_field() {
        let manager = OrganizationId::new();
        let organization = create(complete(), manager, None, 1).unwrap();
        assert_eq!(organization.managed_by, Some(manager));
        assert_eq!(organization.envs, vec![Env::Test]);
        assert_eq!(organization.town.as_deref(), Some("Milano"));
        for field in ["name", "address_line1", "zip", "town", "country_code"] {
            let mut fields = complete();
            match field {
                "name" => fields.name = None,
                "address_line1" => fields.address_line1 = None,
                "zip" => fields.zip = None,
                "town" => fields.town = None,
                _ => fields.country_code = None,
            }
            assert_eq!(create(fields, manager, None, 1).unwrap_err().field, field);
        }
        let mut long = complete();
        long.name = Some("x".repeat(101));
        assert_eq!(create(long, manager, None, 1).unwrap_err().field, "name");
        let mut control = complete();
        control.vat_id = Some(Some("IT\u{7}1".into()));
        assert_eq!(
            create(control, manager, None, 1).unwrap_err().field,
            "vat_id"
        );
    }

    #[test]
    fn updates_change_only_what_is_given_and_may_clear_optional_fields() {
        let mut organization = create(
            OrganizationFields {
                display_name: Some(Some("Shown".into())),
                ..complete()
            },
            OrganizationId::new(),
            None,
            1,
        )
        .unwrap();
        update(
            &mut organization,
            OrganizationFields {
                town: Some("Roma".into()),
                display_name: Some(None),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(organization.town.as_deref(), Some("Roma"));
        assert_eq!(organization.display_name, None);
        assert_eq!(organization.name, "Venue");
    }

    #[test]
    fn live_comes_only_from_a_manager_that_has_it() {
        use crate::records::Organization;
        let manager = Organization::named("m".into(), vec![Env::Test, Env::Live], 0);
        let mut managed = Organization::named("c".into(), vec![Env::Test], 0);
        managed.managed_by = Some(manager.id);
        assert!(may_enable(&managed, Env::Live, manager.id, true));
        assert!(!may_enable(&managed, Env::Live, manager.id, false));
        assert!(
            !may_enable(&managed, Env::Live, managed.id, true),
            "not from itself"
        );
        assert!(may_enable(&managed, Env::Test, managed.id, false));
        let root = Organization::named("r".into(), vec![Env::Test], 0);
        assert!(may_enable(&root, Env::Live, root.id, false));
    }
}
