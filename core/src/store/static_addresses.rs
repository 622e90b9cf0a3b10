//! Static address rows, and the paid invoice auto-created for each deposit to one.

use alloy::primitives::Address;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::codec::Text;
use super::{Conn, StoreError, invoices, merchants};
use crate::config::AssetRef;
use crate::invoice::{Invoice, InvoiceDetails, InvoiceStatus};
use crate::money::BaseUnits;
use crate::static_address::{StaticAddress, StaticAddressStatus};
use crate::time::now_ms;

const COLUMNS: &str = "id, merchant_id, customer_id, chain, chain_id, asset, deposit_address_id, address, metadata, \
    callback_url, status, created_at, disabled_at";

#[derive(sqlx::FromRow)]
struct Row {
    id: Text<Uuid>,
    merchant_id: Text<Uuid>,
    customer_id: String,
    chain: String,
    chain_id: i64,
    asset: String,
    deposit_address_id: Text<Uuid>,
    address: Text<Address>,
    metadata: Option<String>,
    callback_url: Option<String>,
    status: StaticAddressStatus,
    created_at: i64,
    disabled_at: Option<i64>,
}

impl TryFrom<Row> for StaticAddress {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<Self, StoreError> {
        Ok(StaticAddress {
            id: r.id.0,
            merchant_id: r.merchant_id.0,
            customer_id: r.customer_id,
            chain: r.chain,
            chain_id: r.chain_id as u64,
            asset: r.asset,
            deposit_address_id: r.deposit_address_id.0,
            address: r.address.0,
            metadata: r
                .metadata
                .map(|m| {
                    serde_json::from_str(&m).map_err(|e| StoreError::Corrupt(format!("static_addresses.metadata: {e}")))
                })
                .transpose()?,
            callback_url: r.callback_url,
            status: r.status,
            created_at: r.created_at,
            disabled_at: r.disabled_at,
        })
    }
}

#[tracing::instrument(skip_all, fields(static_address_id = %s.id))]
pub async fn insert(conn: &mut Conn, s: &StaticAddress) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO static_addresses ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    )))
    .bind(Text(s.id))
    .bind(Text(s.merchant_id))
    .bind(&s.customer_id)
    .bind(&s.chain)
    .bind(s.chain_id as i64)
    .bind(&s.asset)
    .bind(Text(s.deposit_address_id))
    .bind(s.address.to_checksum(None))
    .bind(s.metadata.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string()))
    .bind(&s.callback_url)
    .bind(s.status)
    .bind(s.created_at)
    .bind(s.disabled_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip(conn))]
pub async fn get(conn: &mut Conn, merchant_id: Uuid, id: Uuid) -> Result<Option<StaticAddress>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM static_addresses WHERE id = $1 AND merchant_id = $2"
    )))
    .bind(Text(id))
    .bind(Text(merchant_id))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(StaticAddress::try_from).transpose()
}

/// The static address using a deposit address (the watcher's lookup).
#[tracing::instrument(skip(conn))]
pub async fn by_deposit_address(
    conn: &mut Conn,
    deposit_address_id: Uuid,
) -> Result<Option<StaticAddress>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM static_addresses WHERE deposit_address_id = $1"
    )))
    .bind(Text(deposit_address_id))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(StaticAddress::try_from).transpose()
}

/// The active static address at `address` on `chain_id`, if any.
#[tracing::instrument(skip(conn))]
pub async fn find_active_by_address(
    conn: &mut Conn,
    chain_id: u64,
    address: &str,
) -> Result<Option<StaticAddress>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM static_addresses WHERE chain_id = $1 AND address = $2 AND status = 'active'"
    )))
    .bind(chain_id as i64)
    .bind(address)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(StaticAddress::try_from).transpose()
}

/// Newest first; `starting_after` is a cursor (ids are time-ordered).
#[tracing::instrument(skip(conn))]
pub async fn list(
    conn: &mut Conn,
    merchant_id: Uuid,
    customer_id: Option<&str>,
    status: Option<StaticAddressStatus>,
    starting_after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<StaticAddress>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM static_addresses WHERE merchant_id = $1 AND ($2 IS NULL OR customer_id = $2) \
         AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
    )))
    .bind(Text(merchant_id))
    .bind(customer_id)
    .bind(status.map(|s| s.as_str()))
    .bind(starting_after.map(Text))
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(StaticAddress::try_from).collect()
}

/// A transfer to a static address, as its page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticDeposit {
    pub id: Uuid,
    pub chain_id: u64,
    pub tx_hash: String,
    pub block_number: u64,
    pub asset: String,
    pub amount: BaseUnits,
    /// `detected`, `confirmed`, `reorged`, `reversed` or `rejected`.
    pub state: String,
    /// The invoice it auto-created, once confirmed.
    pub invoice_id: Option<Uuid>,
    pub detected_at: i64,
}

#[derive(sqlx::FromRow)]
struct StaticDepositRow {
    id: Text<Uuid>,
    chain_id: i64,
    tx_hash: String,
    block_number: i64,
    asset: String,
    amount_base_units: Text<BaseUnits>,
    state: String,
    invoice_id: Option<Text<Uuid>>,
    detected_at: i64,
}

/// The newest `limit` transfers to merchant `merchant_id`'s static address `id`, newest first.
#[tracing::instrument(skip(conn))]
pub async fn deposits(
    conn: &mut Conn,
    merchant_id: Uuid,
    id: Uuid,
    limit: u32,
) -> Result<Vec<StaticDeposit>, StoreError> {
    let rows: Vec<StaticDepositRow> = sqlx::query_as(
        "SELECT d.id, d.chain_id, d.tx_hash, d.block_number, d.asset, d.amount_base_units, d.state, d.invoice_id, \
                d.detected_at \
         FROM deposits d JOIN static_addresses s ON s.id = d.static_address_id \
         WHERE s.id = $1 AND s.merchant_id = $2 ORDER BY d.id DESC LIMIT $3",
    )
    .bind(Text(id))
    .bind(Text(merchant_id))
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StaticDeposit {
            id: r.id.0,
            chain_id: r.chain_id as u64,
            tx_hash: r.tx_hash,
            block_number: r.block_number as u64,
            asset: r.asset,
            amount: r.amount_base_units.0,
            state: r.state,
            invoice_id: r.invoice_id.map(|i| i.0),
            detected_at: r.detected_at,
        })
        .collect())
}

/// Disables an active address: later deposits are no longer credited to an auto-invoice.
/// Idempotent: true only for the call that changed it (a compare-and-set on `active`, so of two
/// concurrent calls exactly one sees true).
#[tracing::instrument(skip(conn))]
pub async fn disable(conn: &mut Conn, merchant_id: Uuid, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE static_addresses SET status = 'disabled', disabled_at = COALESCE(disabled_at, $1) \
         WHERE id = $2 AND merchant_id = $3 AND status = 'active'",
    )
    .bind(now_ms())
    .bind(Text(id))
    .bind(Text(merchant_id))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Auto-creates the `paid` invoice for one confirmed deposit of `amount` to `static_address`.
/// Call in the transaction that records the deposit, so the two commit together. The merchant's
/// current fee schedule for the asset applies; the invoice is priced in the deposited asset itself.
#[tracing::instrument(skip_all, fields(static_address_id = %static_address.id))]
pub async fn create_deposit_invoice(
    conn: &mut Conn,
    static_address: &StaticAddress,
    asset: AssetRef<'_>,
    amount: BaseUnits,
) -> Result<Invoice, StoreError> {
    let merchant = merchants::get(conn, static_address.merchant_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("static address {} has no merchant", static_address.id)))?;
    let whole: Decimal = amount.to_display(asset.decimals).parse().map_err(|_| {
        StoreError::Corrupt(format!("deposit of {amount} base units is too large for an invoice amount"))
    })?;
    let now = now_ms();
    let mut invoice = Invoice {
        id: Uuid::now_v7(),
        merchant_id: merchant.id,
        external_id: None,
        status: InvoiceStatus::Paid,
        payment_flags: Vec::new(),
        amount: whole,
        currency: asset.symbol.to_owned(),
        conversion_rate: Decimal::ONE,
        chain: static_address.chain.clone(),
        chain_id: static_address.chain_id,
        asset: asset.symbol.to_owned(),
        token_address: asset.token_address,
        decimals: asset.decimals,
        deposit_address_id: static_address.deposit_address_id,
        address: static_address.address,
        amount_base_units: amount,
        fee_base_units: BaseUnits::ZERO,
        merchant_amount_base_units: amount,
        amount_paid_base_units: amount,
        fee_schedule: Default::default(),
        details: InvoiceDetails {
            customer_id: Some(static_address.customer_id.clone()),
            metadata: static_address.metadata.clone(),
            callback_url: static_address.callback_url.clone(),
            ..InvoiceDetails::default()
        },
        receiver_override_address: None,
        static_address_id: Some(static_address.id),
        view: crate::invoice_views::InvoiceView::Invoice,
        mark: None,
        options: Vec::new(),
        session_token: Invoice::new_session_token(),
        created_at: now,
        expires_at: now,
        finished_at: Some(now),
        updated_at: now,
    };
    let schedule = merchants::fee_schedule(conn, &merchant, asset.symbol, asset.decimals).await?;
    invoice.apply_fee_schedule(schedule).map_err(|e| StoreError::Corrupt(format!("merchant fee: {e}")))?;
    invoices::insert(conn, &invoice).await?;
    Ok(invoice)
}
