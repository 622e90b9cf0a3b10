//! API keys as the domain sees them: test or live, the scopes a key grants. Generation, hashing
//! and lookup are in `store::api_keys`.

use uuid::Uuid;

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
}

text_enum! {
    Scope as "scope" {
        InvoicesRead = "invoices:read", InvoicesWrite = "invoices:write", PayoutsRead = "payouts:read",
        PayoutsWrite = "payouts:write", WebhooksRead = "webhooks:read", WebhooksWrite = "webhooks:write",
        LedgerRead = "ledger:read",
    }
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
