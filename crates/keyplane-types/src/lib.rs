//! The JSON bodies of Keyplane's HTTP API: what requests carry and what responses answer, in one
//! place that the server and its clients (a client library, the CLI) share.
//!
//! Every type derives `ToSchema` (or `IntoParams`): the server's OpenAPI document is generated
//! from these definitions, so their names, field order, serde attributes and doc comments are
//! the contract. Conversions from domain records to resources stay in the server; this crate
//! knows nothing of HTTP frameworks, storage or async runtimes.
//!
//! One module per area: [`api_keys`], [`organizations`], [`people`], [`audit`], [`tokens`]
//! (`POST /api/v0/auth`, Fiskil's `POST /v1/token`, the JWKS), [`oauth`], [`errors`],
//! [`health`] and [`common`] (the body of a delete).

pub mod api_keys;
pub mod audit;
pub mod common;
pub mod errors;
pub mod health;
pub mod oauth;
pub mod organizations;
pub mod people;
pub mod tokens;

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use utoipa::PartialSchema;

    /// The example a type's schema documents, as the OpenAPI document shows it.
    fn example_of<T: PartialSchema>() -> serde_json::Value {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["example"].clone()
    }

    fn parses<T: PartialSchema + DeserializeOwned>() {
        let example = example_of::<T>();
        assert!(
            example.is_object(),
            "{} has no example",
            std::any::type_name::<T>()
        );
        if let Err(error) = serde_json::from_value::<T>(example) {
            panic!("{}: {error}", std::any::type_name::<T>());
        }
    }

    #[test]
    fn request_examples_are_accepted_bodies() {
        parses::<crate::api_keys::PutApiKey>();
        parses::<crate::api_keys::PostApiKey>();
        parses::<crate::api_keys::PatchApiKey>();
        parses::<crate::api_keys::RotateApiKey>();
        parses::<crate::organizations::OrganizationBody>();
        parses::<crate::organizations::EnableEnv>();
        parses::<crate::people::InviteBody>();
        parses::<crate::people::UpdateUserBody>();
        parses::<crate::people::AcceptBody>();
        parses::<crate::tokens::AuthRequest>();
        parses::<crate::tokens::FiskilTokenRequest>();
    }
}
