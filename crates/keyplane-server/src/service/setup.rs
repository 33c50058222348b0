//! The console's first run: the first organization and its owner, made in the browser (contract
//! §10). It does what `keyplane bootstrap` does ([`crate::service::bootstrap`]) and then accepts
//! the owner's invitation ([`crate::service::people::accept`]) with the password and names given.

use keyplane_core::ValidationError;

use crate::service::bootstrap::{Address, BootstrapError};
use crate::service::context::RequestContext;
use crate::state::AppState;

/// What the console's first-run page asks for: the organization (every field required, as on
/// any organization's create) and its owner.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    pub organization_name: Option<String>,
    pub address: Address,
    pub email: Option<String>,
    pub password: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("the owner could not be signed up: {0}")]
    Owner(#[from] crate::service::people::UserError),
}

/// The console's first run: what `keyplane bootstrap` does (its first `test` key is made and
/// its secret never shown), then the owner accepts their invitation with the password and
/// names given, through [`crate::service::people::accept`]. Everything is validated before
/// anything is written, so a refused form leaves the store empty. The owner's membership.
pub async fn set_up(
    state: &AppState,
    context: &RequestContext,
    setup: Setup,
) -> Result<keyplane_core::records::Membership, SetupError> {
    use keyplane_core::organizations::required;
    let invalid = |e: ValidationError| SetupError::Bootstrap(BootstrapError::Invalid(e));
    for (field, value) in [
        ("name", &setup.organization_name),
        ("address_line1", &setup.address.address_line1),
        ("zip", &setup.address.zip),
        ("town", &setup.address.town),
        ("country_code", &setup.address.country_code),
        ("email", &setup.email),
        ("password", &setup.password),
        ("first_name", &setup.first_name),
        ("last_name", &setup.last_name),
    ] {
        required(field, value).map_err(invalid)?;
    }
    let password = setup.password.unwrap_or_default();
    keyplane_core::values::check_password(&password).map_err(invalid)?;
    for (field, value) in [
        ("first_name", &setup.first_name),
        ("last_name", &setup.last_name),
    ] {
        keyplane_core::values::check_text(field, value.as_deref().unwrap_or_default(), 1, 100)
            .map_err(invalid)?;
    }
    let (_, token) = crate::service::bootstrap::create_first(
        state.store(),
        state.secrets(),
        setup.organization_name.as_deref().unwrap_or_default(),
        setup.email.as_deref().unwrap_or_default(),
        setup.address,
        state.public_url(),
    )
    .await?;
    let (_, membership) = crate::service::people::accept(
        state,
        context,
        token.expose(),
        password,
        setup.first_name,
        setup.last_name,
    )
    .await?;
    Ok(membership)
}
