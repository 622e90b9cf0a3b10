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
}

text_enum! {
    Scope as "scope" {
        InvoicesRead = "invoices:read", InvoicesWrite = "invoices:write", PayoutsRead = "payouts:read",
        PayoutsWrite = "payouts:write", WebhooksRead = "webhooks:read", WebhooksWrite = "webhooks:write",
        LedgerRead = "ledger:read", Operator = "operator",
    }
}

impl Scope {
    /// The scopes a merchant's key gets when none are named: every one but [`Scope::Operator`].
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
    pub revoked_at: Option<i64>,
}

impl ApiKey {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
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
