//! An outgoing transaction of the settler's (`ChainTx`) and its signed attempts: what it is for,
//! where it is in its life (`intent` -> `signed` -> `broadcast` -> `mined` -> `confirmed` or
//! `failed`). The rows and the conditional state changes are in `store::chain_txs`.

use uuid::Uuid;

use crate::money::BaseUnits;
use crate::text_enum::text_enum;
use crate::time::now_ms;

/// Why a transaction is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Payout,
    Refund,
    Sweep,
    GasTopup,
    Passthrough,
    /// The treasury's excess over its `hot_max` sent to the operator's cold address.
    ColdTransfer,
}

text_enum! {
    Purpose as "purpose" {
        Payout = "payout", Refund = "refund", Sweep = "sweep", GasTopup = "gas_topup", Passthrough = "passthrough",
        ColdTransfer = "cold_transfer",
    }
}

/// Where a transaction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxState {
    Intent,
    Signed,
    Broadcast,
    Mined,
    Confirmed,
    Failed,
}

text_enum! {
    TxState as "state" {
        Intent = "intent", Signed = "signed", Broadcast = "broadcast", Mined = "mined", Confirmed = "confirmed",
        Failed = "failed",
    }
}

impl TxState {
    /// Not yet confirmed or failed.
    pub fn is_open(self) -> bool {
        !matches!(self, TxState::Confirmed | TxState::Failed)
    }
}

/// One outgoing transaction. Addresses are stored EIP-55 checksummed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainTx {
    pub id: Uuid,
    pub chain_id: u64,
    pub signer_address: String,
    pub purpose: Purpose,
    pub payout_id: Option<Uuid>,
    pub invoice_id: Option<Uuid>,
    pub merchant_id: Option<Uuid>,
    /// The recipient of the value (for a token: the token's recipient, not the contract).
    pub to_address: String,
    /// The asset symbol moved.
    pub asset: String,
    pub value: BaseUnits,
    /// `None` for the native coin.
    pub token_address: Option<String>,
    pub state: TxState,
    pub nonce: Option<u64>,
    /// Must be confirmed before this one is signed.
    pub depends_on: Option<Uuid>,
    /// The most gas this transaction may cost, in the native coin's base units.
    pub max_gas_cost: BaseUnits,
    pub mined_tx_hash: Option<String>,
    pub mined_block: Option<u64>,
    /// What its gas cost, once mined.
    pub gas_cost: Option<BaseUnits>,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ChainTx {
    /// A new intent.
    #[allow(clippy::too_many_arguments)]
    pub fn intent(
        chain_id: u64,
        signer_address: String,
        purpose: Purpose,
        to_address: String,
        asset: &str,
        value: BaseUnits,
        token_address: Option<String>,
        max_gas_cost: BaseUnits,
    ) -> ChainTx {
        let now = now_ms();
        ChainTx {
            id: Uuid::now_v7(),
            chain_id,
            signer_address,
            purpose,
            payout_id: None,
            invoice_id: None,
            merchant_id: None,
            to_address,
            asset: asset.to_owned(),
            value,
            token_address,
            state: TxState::Intent,
            nonce: None,
            depends_on: None,
            max_gas_cost,
            mined_tx_hash: None,
            mined_block: None,
            gas_cost: None,
            failure_reason: None,
            created_at: now,
            updated_at: now,
        }
    }
}
/// One signed version of a transaction. Fee bumps add attempts with the same nonce.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: Uuid,
    pub transaction_id: Uuid,
    pub tx_hash: String,
    /// The signed transaction, `0x`-hex: rebroadcast as is after a restart.
    pub raw_tx: String,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
    pub gas_limit: u64,
    pub broadcast_at: Option<i64>,
    pub broadcast_block: Option<u64>,
    pub created_at: i64,
}
