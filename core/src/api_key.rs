//! API keys as the domain sees them: test or live, the scopes a key grants. Generation, hashing
//! and lookup are in `store::api_keys`.

use uuid::Uuid;

use crate::config::ChainConfig;
use crate::text_enum::text_enum;

/// Test keys work with testnets and the dev chain; live keys with mainnets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    Test,
    Live,
}

text_enum! { KeyMode as "key mode" { Test = "test", Live = "live" } }

impl KeyMode {
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            KeyMode::Test => "dk_test_",
            KeyMode::Live => "dk_live_",
        }
    }

    /// The mode whose keys may create on `chain`: test on a testnet, live on a mainnet.
    pub fn for_chain(chain: &ChainConfig) -> KeyMode {
        if chain.testnet { KeyMode::Test } else { KeyMode::Live }
    }

    /// Whether a key of this mode may create something (an invoice, a static address, a payout,
    /// a refund) on `chain`. Reads are never restricted by mode.
    pub fn check(self, chain: &ChainConfig) -> Result<(), KeyModeMismatch> {
        if self == KeyMode::for_chain(chain) {
            Ok(())
        } else {
            Err(KeyModeMismatch { mode: self, chain: chain.name.clone() })
        }
    }
}

/// A test key used to create on a mainnet, or a live key on a testnet: test money and real money
/// never meet under one key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a {mode} key ({prefix}) cannot create on {kind} chain {chain}; use a {other} key ({other_prefix})",
    prefix = mode.prefix(),
    kind = if *mode == KeyMode::Test { "mainnet" } else { "testnet" },
    other = self.needed(),
    other_prefix = self.needed().prefix(),
)]
pub struct KeyModeMismatch {
    /// The key's mode.
    pub mode: KeyMode,
    /// The chain's name.
    pub chain: String,
}

impl KeyModeMismatch {
    /// The mode a key needs for the chain.
    pub fn needed(&self) -> KeyMode {
        match self.mode {
            KeyMode::Test => KeyMode::Live,
            KeyMode::Live => KeyMode::Test,
        }
    }
}

/// What a key may do. Each merchant endpoint requires one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    InvoicesRead,
    InvoicesWrite,
    PayoutsRead,
    PayoutsWrite,
    WebhooksRead,
    WebhooksWrite,
    /// Balances, ledger entries and deposits.
    LedgerRead,
    /// The operator's tools, across every merchant: transfers in suspense and their resolution
    /// (`/api/v1/operator/...`). Never part of a merchant's key by default ([`Scope::MERCHANT`]):
    /// only `depositd api-key create --scope operator` grants it.
    Operator,
    /// The merchant's API keys: list them (`GET /api/v1/api-keys`).
    ApiKeysRead,
    /// Create and revoke the merchant's API keys (`/api/v1/api-keys`), within what the key holds
    /// itself (`crate::api_keys`). Never part of a key by default ([`Scope::MERCHANT`]): a key that
    /// mints keys is asked for by name.
    ApiKeysWrite,
}

text_enum! {
    Scope as "scope" {
        InvoicesRead = "invoices:read", InvoicesWrite = "invoices:write", PayoutsRead = "payouts:read",
        PayoutsWrite = "payouts:write", WebhooksRead = "webhooks:read", WebhooksWrite = "webhooks:write",
        LedgerRead = "ledger:read", Operator = "operator", ApiKeysRead = "api_keys:read",
        ApiKeysWrite = "api_keys:write",
    }
}

impl Scope {
    /// The scopes a merchant's key gets when none are named: every one but [`Scope::Operator`] and
    /// the key management scopes (a key that can mint keys is always asked for by name).
    pub const MERCHANT: [Scope; 7] = [
        Scope::InvoicesRead,
        Scope::InvoicesWrite,
        Scope::PayoutsRead,
        Scope::PayoutsWrite,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::LedgerRead,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub merchant_id: Uuid,
    /// `dk_test_1a2b3c4d`: enough for a human to tell keys apart, useless to an attacker.
    pub display_prefix: String,
    pub mode: KeyMode,
    pub scopes: Vec<Scope>,
    pub name: Option<String>,
    pub created_at: i64,
    /// When the key last authenticated, to the minute (the API writes it at most once a minute
    /// per key: `depositd_api::key_cache`).
    pub last_used_at: Option<i64>,
    /// Who created it: `cli`, `api_key:<id>` or `user:<id>` (`crate::api_keys::Grantor`); `None`
    /// for keys from before this was recorded.
    pub created_by: Option<String>,
    pub revoked_at: Option<i64>,
    /// Who revoked it, in the words of `created_by`.
    pub revoked_by: Option<String>,
}

impl ApiKey {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// An API key as the API returns it and the `api_key.*` events carry it; timestamps are epoch
/// seconds. The secret is only in the answer that created the key. (No `Debug`: it can carry
/// that secret.)
#[derive(Clone, serde::Serialize, PartialEq, utoipa::ToSchema)]
pub struct ApiKeyResource {
    /// Always `api_key`.
    #[schema(value_type = String)]
    pub object: &'static str,
    pub id: Uuid,
    pub name: Option<String>,
    /// `test` or `live`.
    #[schema(value_type = String)]
    pub mode: &'static str,
    /// What the key may do, e.g. `invoices:read`.
    pub scopes: Vec<String>,
    /// `dk_test_1a2b3c4d`: the start of the key, to tell keys apart.
    pub display_prefix: String,
    /// `active` or `revoked`.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub created_at: i64,
    /// `cli`, `api_key:<id>` or `user:<id>`; null for keys from before this was recorded.
    pub created_by: Option<String>,
    /// To the minute.
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    /// The key itself (`dk_test_...`): only in the answer that created it. Store it then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl ApiKeyResource {
    pub fn build(key: &ApiKey, secret: Option<String>) -> ApiKeyResource {
        ApiKeyResource {
            object: "api_key",
            id: key.id,
            name: key.name.clone(),
            mode: key.mode.as_str(),
            scopes: key.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            display_prefix: key.display_prefix.clone(),
            status: if key.revoked_at.is_some() { "revoked" } else { "active" },
            created_at: key.created_at.div_euclid(1000),
            created_by: key.created_by.clone(),
            last_used_at: key.last_used_at.map(|t| t.div_euclid(1000)),
            revoked_at: key.revoked_at.map(|t| t.div_euclid(1000)),
            revoked_by: key.revoked_by.clone(),
            secret,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn shipped(name: &str) -> ChainConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../chains/{name}.toml"));
        ChainConfig::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn test_keys_create_on_testnets_and_live_keys_on_mainnets_only() {
        let (anvil, sepolia, base) = (shipped("anvil"), shipped("sepolia"), shipped("base"));
        assert_eq!(KeyMode::Test.check(&anvil), Ok(()));
        assert_eq!(KeyMode::Test.check(&sepolia), Ok(()));
        assert_eq!(KeyMode::Live.check(&base), Ok(()));

        let test_on_mainnet = KeyMode::Test.check(&base).unwrap_err();
        assert_eq!(test_on_mainnet, KeyModeMismatch { mode: KeyMode::Test, chain: "base".into() });
        assert_eq!(
            test_on_mainnet.to_string(),
            "a test key (dk_test_) cannot create on mainnet chain base; use a live key (dk_live_)"
        );
        let live_on_testnet = KeyMode::Live.check(&sepolia).unwrap_err();
        assert_eq!(
            live_on_testnet.to_string(),
            "a live key (dk_live_) cannot create on testnet chain sepolia; use a test key (dk_test_)"
        );
        assert_eq!(KeyMode::Live.check(&anvil).unwrap_err().needed(), KeyMode::Test);
    }
}
