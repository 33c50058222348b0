//! Bodies several resources share.

use serde::Serialize;

/// The body of a successful delete or removal: `{"deleted": true}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"deleted": true}))]
pub struct Deleted {
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_is_one_field() {
        let body = serde_json::to_string(&Deleted { deleted: true }).unwrap();
        assert_eq!(body, r#"{"deleted":true}"#);
    }
}
