//! The API key lifecycle: the one place the rules of creating and revoking a merchant's keys are
//! written, for the operator's CLI (`depositd api-key`), the merchant API (`/api/v1/api-keys`)
//! and the dashboard alike. Each surface names who acts ([`Grantor`]) and differs only in how it
//! parses and renders.
//!
//! The rules:
//! - the operator may create any key, `operator` scope included;
//! - a key with `api_keys:write` may create and revoke only keys of its own mode whose scopes it
//!   holds itself, never one with the `operator` scope: a key never mints more power than it has,
//!   and a test key never touches live keys;
//! - a dashboard member may create and revoke keys of either mode if its role manages keys, and
//!   only with scopes its role allows ([`scope_action`]: a key never does what its creator's role
//!   may not, so a developer cannot mint `payouts:write`, which moves money and is the owner's),
//!   never `operator`;
//! - revoking is final and idempotent (a second revocation changes nothing and records nothing);
//! - every creation and first revocation is an outbox event (`api_key.created`,
//!   `api_key.revoked`) carrying the key (never its secret) and who acted, in the caller's
//!   transaction.
//!
//! The secret is returned once, by [`create`], and exists nowhere else afterwards (the store keeps
//! its SHA-256 only: `store::api_keys`).

use secrecy::SecretString;
use uuid::Uuid;

use crate::api_key::{ApiKey, ApiKeyResource, KeyMode, Scope};
use crate::member::{Action, Role};
use crate::outbox::{self, EventType, Subject};
use crate::store::{StoreError, Tx, api_keys};

/// Who creates or revokes a key.
#[derive(Debug, Clone, Copy)]
pub enum Grantor<'a> {
    /// The operator (the CLI): any key.
    Operator,
    /// A merchant's API key: keys of its mode, within its own scopes.
    Key(&'a ApiKey),
    /// A dashboard member: keys whose every scope its role allows ([`scope_action`]).
    Member { user_id: Uuid, role: Role },
}

impl Grantor<'_> {
    /// The word recorded as `created_by` / `revoked_by`.
    pub fn actor(&self) -> String {
        match self {
            Grantor::Operator => "cli".to_owned(),
            Grantor::Key(key) => format!("api_key:{}", key.id),
            Grantor::Member { user_id, .. } => format!("user:{user_id}"),
        }
    }

    /// Whether this grantor may create (or revoke) a key of `mode` with `scopes`.
    pub fn may_manage(&self, mode: KeyMode, scopes: &[Scope]) -> Result<(), KeyError> {
        if matches!(self, Grantor::Operator) {
            return Ok(());
        }
        if scopes.contains(&Scope::Operator) {
            return Err(KeyError::OperatorScope);
        }
        if let Grantor::Key(key) = self {
            if key.mode != mode {
                return Err(KeyError::ModeNotHeld { held: key.mode, wanted: mode });
            }
            if let Some(missing) = scopes.iter().find(|s| !key.has_scope(**s)) {
                return Err(KeyError::ScopeNotHeld(*missing));
            }
        }
        if let Grantor::Member { role, .. } = self {
            if !role.may(Action::ManageKeys) {
                return Err(KeyError::RoleLacks { role: *role, scope: None });
            }
            if let Some(beyond) = scopes.iter().find(|s| !scope_action(**s).is_some_and(|a| role.may(a))) {
                return Err(KeyError::RoleLacks { role: *role, scope: Some(*beyond) });
            }
        }
        Ok(())
    }
}

/// The dashboard action a member's role needs to give a key `scope` (`None`: no member may,
/// the `operator` scope). A key does what its scopes allow, so granting a scope is doing it:
/// - `payouts:write` creates payouts and refunds (money leaves the balance): [`Action::MoveMoney`],
///   the owner's;
/// - `webhooks:write`: [`Action::ManageWebhooks`]; `api_keys:write`: [`Action::ManageKeys`] (such
///   a key mints only keys within its own scopes, so never more than its creator's role);
/// - `invoices:write` creates, cancels and marks invoices, which asks for money and sends none:
///   an integration's everyday scope, [`Action::ManageKeys`];
/// - every `:read` scope: [`Action::Read`].
pub fn scope_action(scope: Scope) -> Option<Action> {
    match scope {
        Scope::Operator => None,
        Scope::PayoutsWrite => Some(Action::MoveMoney),
        Scope::WebhooksWrite => Some(Action::ManageWebhooks),
        Scope::ApiKeysWrite | Scope::InvoicesWrite => Some(Action::ManageKeys),
        Scope::InvoicesRead | Scope::PayoutsRead | Scope::WebhooksRead | Scope::LedgerRead | Scope::ApiKeysRead => {
            Some(Action::Read)
        }
    }
}

/// What a new key is.
#[derive(Debug, Clone, Copy)]
pub struct NewKey<'a> {
    pub mode: KeyMode,
    pub scopes: &'a [Scope],
    pub name: Option<&'a str>,
}

/// Why a key cannot be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a key needs at least one scope")]
    NoScopes,
    #[error("the `operator` scope is the operator's alone (depositd api-key create --scope operator)")]
    OperatorScope,
    #[error("a {held} key cannot create or revoke {wanted} keys")]
    ModeNotHeld { held: KeyMode, wanted: KeyMode },
    #[error("this API key lacks the `{0}` scope, so it cannot create or revoke a key that has it")]
    ScopeNotHeld(Scope),
    #[error("{}", role_lacks(*role, *scope))]
    RoleLacks { role: Role, scope: Option<Scope> },
    #[error("no such API key")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn role_lacks(role: Role, scope: Option<Scope>) -> String {
    match scope {
        Some(scope) => format!(
            "your role ({role}) cannot create or revoke a key with the `{scope}` scope; ask an owner of your team"
        ),
        None => format!("your role ({role}) cannot create or revoke API keys"),
    }
}

/// Creates merchant `merchant_id`'s key `new` on behalf of `grantor`, and records
/// `api_key.created`, in `tx`. Returns the key and its secret (shown once).
#[tracing::instrument(skip(tx, new), fields(mode = %new.mode))]
pub async fn create(
    tx: &mut Tx,
    merchant_id: Uuid,
    grantor: Grantor<'_>,
    new: NewKey<'_>,
) -> Result<(ApiKey, SecretString), KeyError> {
    if new.scopes.is_empty() {
        return Err(KeyError::NoScopes);
    }
    grantor.may_manage(new.mode, new.scopes)?;
    let actor = grantor.actor();
    let (key, secret) =
        api_keys::create_by(tx, merchant_id, new.mode, new.scopes, new.name, Some(actor.as_str())).await?;
    let resource = ApiKeyResource::build(&key, None);
    outbox::record(tx, merchant_id, EventType::ApiKeyCreated, Subject::new("api_key", key.id), &resource).await?;
    tracing::info!(api_key_id = %key.id, %merchant_id, created_by = %actor, "API key created");
    Ok((key, secret))
}

/// Revokes merchant `merchant_id`'s key `id` on behalf of `grantor` (who must be allowed to
/// create such a key) and records `api_key.revoked`, in `tx`; an already revoked key is returned
/// as it is. Another merchant's key is [`KeyError::NotFound`].
#[tracing::instrument(skip(tx))]
pub async fn revoke(tx: &mut Tx, merchant_id: Uuid, id: Uuid, grantor: Grantor<'_>) -> Result<ApiKey, KeyError> {
    let key = api_keys::get(tx, merchant_id, id).await?.ok_or(KeyError::NotFound)?;
    grantor.may_manage(key.mode, &key.scopes)?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let actor = grantor.actor();
    api_keys::revoke_by(tx, id, Some(actor.as_str())).await?;
    // Counted again once committed: a request that read the row before the commit cannot keep it.
    tx.keys_were_changed();
    let key = api_keys::get(tx, merchant_id, id).await?.ok_or(KeyError::NotFound)?;
    let resource = ApiKeyResource::build(&key, None);
    outbox::record(tx, merchant_id, EventType::ApiKeyRevoked, Subject::new("api_key", key.id), &resource).await?;
    tracing::info!(api_key_id = %key.id, %merchant_id, revoked_by = %actor, "API key revoked");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(mode: KeyMode, scopes: &[Scope]) -> ApiKey {
        ApiKey {
            id: Uuid::now_v7(),
            merchant_id: Uuid::now_v7(),
            display_prefix: "dk_test_00000000".into(),
            mode,
            scopes: scopes.to_vec(),
            name: None,
            created_at: 0,
            last_used_at: None,
            created_by: None,
            revoked_at: None,
            revoked_by: None,
        }
    }

    #[test]
    fn a_key_grants_only_what_it_holds_in_its_own_mode() {
        let holder = key(KeyMode::Test, &[Scope::ApiKeysWrite, Scope::InvoicesRead]);
        let grantor = Grantor::Key(&holder);
        assert!(grantor.may_manage(KeyMode::Test, &[Scope::InvoicesRead]).is_ok());
        assert!(grantor.may_manage(KeyMode::Test, &[Scope::InvoicesRead, Scope::ApiKeysWrite]).is_ok());
        assert!(matches!(
            grantor.may_manage(KeyMode::Test, &[Scope::PayoutsWrite]),
            Err(KeyError::ScopeNotHeld(Scope::PayoutsWrite))
        ));
        assert!(matches!(
            grantor.may_manage(KeyMode::Live, &[Scope::InvoicesRead]),
            Err(KeyError::ModeNotHeld { held: KeyMode::Test, wanted: KeyMode::Live })
        ));
        let operator_key = key(KeyMode::Test, &[Scope::ApiKeysWrite, Scope::Operator]);
        assert!(matches!(
            Grantor::Key(&operator_key).may_manage(KeyMode::Test, &[Scope::Operator]),
            Err(KeyError::OperatorScope)
        ));
    }

    #[test]
    fn members_grant_what_their_role_allows_of_either_mode_and_the_operator_anything() {
        let member = Grantor::Member { user_id: Uuid::now_v7(), role: Role::Owner };
        assert!(member.may_manage(KeyMode::Live, &Scope::MERCHANT).is_ok());
        assert!(member.may_manage(KeyMode::Test, &[Scope::ApiKeysWrite]).is_ok());
        assert!(matches!(member.may_manage(KeyMode::Live, &[Scope::Operator]), Err(KeyError::OperatorScope)));
        let developer = Grantor::Member { user_id: Uuid::now_v7(), role: Role::Developer };
        assert!(matches!(
            developer.may_manage(KeyMode::Live, &[Scope::InvoicesRead, Scope::PayoutsWrite]),
            Err(KeyError::RoleLacks { role: Role::Developer, scope: Some(Scope::PayoutsWrite) })
        ));
        let everyday = [Scope::InvoicesWrite, Scope::WebhooksWrite, Scope::ApiKeysWrite, Scope::LedgerRead];
        assert!(developer.may_manage(KeyMode::Live, &everyday).is_ok());
        let viewer = Grantor::Member { user_id: Uuid::now_v7(), role: Role::Viewer };
        assert!(matches!(
            viewer.may_manage(KeyMode::Test, &[Scope::InvoicesRead]),
            Err(KeyError::RoleLacks { role: Role::Viewer, scope: None })
        ));
        assert!(Grantor::Operator.may_manage(KeyMode::Live, &Scope::ALL).is_ok());
        assert_eq!(Grantor::Operator.actor(), "cli");
        assert!(member.actor().starts_with("user:"));
    }

    #[test]
    fn no_default_key_can_mint_keys() {
        assert!(!Scope::MERCHANT.contains(&Scope::ApiKeysWrite));
        assert!(!Scope::MERCHANT.contains(&Scope::ApiKeysRead));
        assert!(!Scope::MERCHANT.contains(&Scope::Operator));
    }
}
