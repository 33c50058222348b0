//! Organizations: the resource, its list, the create/update body and the enable-env body.

use keyplane_core::records::Metadata;
use keyplane_core::values::Env;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// An organization as the API shows it; unset optional fields are omitted.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "_id": "0190c8e2-4f6b-7a1e-9c3d-2b5e8f1a4c70",
    "_type": "MANAGED_ORGANIZATION",
    "_envs": ["TEST"],
    "name": "Acme Bakery GmbH",
    "display_name": "Acme Bakery",
    "address_line1": "Hauptstraße 1",
    "zip": "10115",
    "town": "Berlin",
    "country_code": "DEU",
    "vat_id": "DE123456789",
    "metadata": {"customer_number": "C-1042"},
    "managed_by_organization_id": "0190c8e1-9b2a-7d4c-8e1f-3a6b5c9d2e81",
    "created_at": 1764547200,
    "created_by_user": "0190c8e1-c3d5-7e8f-a1b2-4d6e8f0a2c13"
}))]
pub struct OrganizationResource {
    pub _id: String,
    /// `ORGANIZATION`, or `MANAGED_ORGANIZATION` when managed by another.
    #[schema(example = "MANAGED_ORGANIZATION")]
    pub _type: &'static str,
    pub _envs: Vec<Env>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line2: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub town: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vat_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub economy_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_person_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_address_id: Option<String>,
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_by_organization_id: Option<String>,
    pub created_at: i64,
    /// The person who created it or, when an API key did, the person credited with that key;
    /// `""` when no person is (fiskaly clients expect a string).
    pub created_by_user: String,
}

/// `Some(None)` for an explicit `null`, `Some(Some(v))` for a value; absent fields stay `None`
/// through `#[serde(default)]`.
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The fields of a create or update body. On create every required field must be present; on
/// update a required field may not be `null`, an optional one may (it is cleared).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Acme Bakery GmbH",
    "address_line1": "Hauptstraße 1",
    "zip": "10115",
    "town": "Berlin",
    "country_code": "DEU",
    "display_name": "Acme Bakery",
    "vat_id": "DE123456789",
    "metadata": {"customer_number": "C-1042"},
    "managed_by_organization_id": "0190c8e1-9b2a-7d4c-8e1f-3a6b5c9d2e81"
}))]
pub struct OrganizationBody {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub address_line1: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub zip: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub town: Option<Option<String>>,
    /// ISO 3166-1 alpha-3.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub country_code: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub address_line2: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub state: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub vat_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub tax_number: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub economy_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub contact_person_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub billing_address_id: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// Create only: the managing organization (default: the caller's own).
    pub managed_by_organization_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"data": [{
        "_id": "0190c8e2-4f6b-7a1e-9c3d-2b5e8f1a4c70",
        "_type": "MANAGED_ORGANIZATION",
        "_envs": ["TEST"],
        "name": "Acme Bakery GmbH",
        "display_name": "Acme Bakery",
        "address_line1": "Hauptstraße 1",
        "zip": "10115",
        "town": "Berlin",
        "country_code": "DEU",
        "vat_id": "DE123456789",
        "metadata": {"customer_number": "C-1042"},
        "managed_by_organization_id": "0190c8e1-9b2a-7d4c-8e1f-3a6b5c9d2e81",
        "created_at": 1764547200,
        "created_by_user": "0190c8e1-c3d5-7e8f-a1b2-4d6e8f0a2c13"
    }], "count": 2, "next_cursor": "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX", "_type": "ORGANIZATION_LIST"}))]
pub struct OrganizationList {
    pub data: Vec<OrganizationResource>,
    /// Every organization that matches, not just this page.
    pub count: u64,
    /// Where the next page starts: pass it as `cursor` with the same query (same order and
    /// filters, without `offset`). Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX")]
    pub next_cursor: Option<String>,
    #[schema(example = "ORGANIZATION_LIST")]
    pub _type: &'static str,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"env": "LIVE"}))]
pub struct EnableEnv {
    pub env: Env,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_tells_null_from_absent() {
        let body: OrganizationBody =
            serde_json::from_str(r#"{"name": "Acme", "display_name": null}"#).unwrap();
        assert_eq!(body.name, Some(Some("Acme".to_owned())));
        assert_eq!(body.display_name, Some(None));
        assert_eq!(body.town, None);
    }

    #[test]
    fn a_body_refuses_unknown_fields() {
        assert!(serde_json::from_str::<OrganizationBody>(r#"{"nmae": "Acme"}"#).is_err());
    }
}
