//! The static address lifecycle: create (a fresh HD address for one customer, its
//! `static_address.created` event) and disable (later deposits are no longer credited to an
//! auto-created invoice; `static_address.disabled` once), in the caller's transaction. The
//! merchant API (`/api/v1/static-addresses`) and the dashboard's Static addresses page call these,
//! each after checking its request in its own terms (the API its key's mode, the dashboard the
//! member's role). The types and the resource are [`crate::static_address`]'s, the rows
//! [`crate::store::static_addresses`]'.

use uuid::Uuid;

use crate::config::{AssetRef, ChainConfig, Config};
use crate::deposit_address::AddressPurpose;
use crate::outbox::{self, EventType, Subject};
use crate::static_address::{StaticAddress, StaticAddressResource, StaticAddressStatus};
use crate::store::{StoreError, Tx, deposit_addresses, static_addresses};
use crate::time::now_ms;
use crate::wallet::HdWallet;

/// A static address to make, as the caller checked it.
#[derive(Debug, Clone)]
pub struct NewStaticAddress<'a> {
    /// 1 to 128 characters.
    pub customer_id: String,
    pub chain: &'a ChainConfig,
    /// An asset `chain` accepts.
    pub asset: AssetRef<'a>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub callback_url: Option<String>,
}

/// Makes merchant `merchant_id`'s static address with a fresh deposit address, and records
/// `static_address.created`, in `tx`. Returns it with the resource the event carries.
pub async fn create(
    tx: &mut Tx,
    wallet: &HdWallet,
    merchant_id: Uuid,
    new: NewStaticAddress<'_>,
) -> Result<(StaticAddress, StaticAddressResource), StoreError> {
    let deposit = deposit_addresses::allocate(tx, wallet, AddressPurpose::Static).await?;
    let address = StaticAddress {
        id: Uuid::now_v7(),
        merchant_id,
        customer_id: new.customer_id,
        chain: new.chain.name.clone(),
        chain_id: new.chain.chain_id,
        asset: new.asset.symbol.to_owned(),
        deposit_address_id: deposit.id,
        address: deposit.address,
        metadata: new.metadata,
        callback_url: new.callback_url,
        status: StaticAddressStatus::Active,
        created_at: now_ms(),
        disabled_at: None,
    };
    static_addresses::insert(tx, &address).await?;
    let resource = StaticAddressResource::build(&address, new.asset.token_address);
    outbox::record(tx, merchant_id, EventType::StaticAddressCreated, Subject::static_address(&address), &resource)
        .await?;
    Ok((address, resource))
}

/// The resource of `address`, its token contract read from `config` (`None` when its chain or
/// asset is no longer configured, or it is the native coin).
pub fn resource(config: &Config, address: &StaticAddress) -> StaticAddressResource {
    let token = config.chain(&address.chain).and_then(|c| c.asset(&address.asset)).and_then(|a| a.token_address);
    StaticAddressResource::build(address, token)
}

/// What [`disable`] did.
#[derive(Debug, Clone)]
pub struct Disabled {
    pub address: StaticAddress,
    pub resource: StaticAddressResource,
    /// False when the address was disabled already: nothing was written or announced.
    pub changed: bool,
}

/// Disables merchant `merchant_id`'s static address `id` in `tx` (idempotent: an address already
/// disabled stays as it is and nothing is announced; the first disabling records
/// `static_address.disabled`). `None` when the merchant has no such address.
pub async fn disable(
    tx: &mut Tx,
    config: &Config,
    merchant_id: Uuid,
    id: Uuid,
) -> Result<Option<Disabled>, StoreError> {
    // The store's compare-and-set decides: of two concurrent disables exactly one changes the
    // row (the other waits for its lock and then matches nothing), so one event is recorded.
    let changed = static_addresses::disable(tx, merchant_id, id).await?;
    let Some(address) = static_addresses::get(tx, merchant_id, id).await? else { return Ok(None) };
    let resource = resource(config, &address);
    if changed {
        outbox::record(tx, merchant_id, EventType::StaticAddressDisabled, Subject::static_address(&address), &resource)
            .await?;
    }
    Ok(Some(Disabled { address, resource, changed }))
}
