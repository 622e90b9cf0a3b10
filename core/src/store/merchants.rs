//! Merchants: the operator's customers, who own API keys, invoices and balances.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::codec::{Text, opt};
use super::{Conn, StoreError, parse_column};
use crate::fees::FeeSchedule;
use crate::merchant::{Merchant, MerchantSettings, MerchantStatus};
use crate::money::BaseUnits;
use crate::time::now_ms;

#[derive(sqlx::FromRow)]
struct MerchantRow {
    id: Text<Uuid>,
    name: String,
    company_name: Option<String>,
    status: MerchantStatus,
    fee_percent: Text<Decimal>,
    payment_tolerance_percent: Text<Decimal>,
    min_invoice_amount: Option<Text<Decimal>>,
    max_invoice_amount: Option<Text<Decimal>>,
    default_return_url: Option<String>,
    checkout_origins: Option<String>,
    created_at: i64,
}

impl TryFrom<MerchantRow> for Merchant {
    type Error = StoreError;
    fn try_from(row: MerchantRow) -> Result<Self, StoreError> {
        Ok(Merchant {
            id: row.id.0,
            name: row.name,
            company_name: row.company_name,
            status: row.status,
            fee_percent: row.fee_percent.0,
            payment_tolerance_percent: row.payment_tolerance_percent.0,
            min_invoice_amount: opt(row.min_invoice_amount),
            max_invoice_amount: opt(row.max_invoice_amount),
            default_return_url: row.default_return_url,
            checkout_origins: match row.checkout_origins {
                Some(json) => serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("merchants.checkout_origins: {e}")))?,
                None => Vec::new(),
            },
            created_at: row.created_at,
        })
    }
}

const COLUMNS: &str = "id, name, company_name, status, fee_percent, payment_tolerance_percent, min_invoice_amount, \
    max_invoice_amount, default_return_url, checkout_origins, created_at";

#[derive(Debug, Clone)]
pub struct NewMerchant {
    pub name: String,
    pub company_name: Option<String>,
    pub fee_percent: Decimal,
    pub min_invoice_amount: Option<Decimal>,
    pub max_invoice_amount: Option<Decimal>,
}

#[tracing::instrument(skip(conn, new), fields(name = %new.name))]
pub async fn insert(conn: &mut Conn, new: &NewMerchant) -> Result<Merchant, StoreError> {
    let merchant = Merchant {
        id: Uuid::now_v7(),
        name: new.name.clone(),
        company_name: new.company_name.clone(),
        status: MerchantStatus::Active,
        fee_percent: new.fee_percent,
        payment_tolerance_percent: Decimal::ZERO,
        min_invoice_amount: new.min_invoice_amount,
        max_invoice_amount: new.max_invoice_amount,
        default_return_url: None,
        checkout_origins: Vec::new(),
        created_at: now_ms(),
    };
    sqlx::query(
        "INSERT INTO merchants (id, name, company_name, status, fee_percent, payment_tolerance_percent, \
         min_invoice_amount, max_invoice_amount, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(Text(merchant.id))
    .bind(&merchant.name)
    .bind(&merchant.company_name)
    .bind(merchant.status)
    .bind(Text(merchant.fee_percent))
    .bind(Text(merchant.payment_tolerance_percent))
    .bind(merchant.min_invoice_amount.map(Text))
    .bind(merchant.max_invoice_amount.map(Text))
    .bind(merchant.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(merchant)
}

#[tracing::instrument(skip(conn))]
pub async fn get(conn: &mut Conn, id: Uuid) -> Result<Option<Merchant>, StoreError> {
    let row: Option<MerchantRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM merchants WHERE id = $1")))
            .bind(Text(id))
            .fetch_optional(&mut *conn)
            .await?;
    row.map(Merchant::try_from).transpose()
}

/// Finds a merchant by id or, failing that, by exact name (for the CLI's `--merchant`).
/// Several merchants with the same name make the name ambiguous: that is a conflict.
#[tracing::instrument(skip(conn))]
pub async fn find(conn: &mut Conn, id_or_name: &str) -> Result<Option<Merchant>, StoreError> {
    if let Ok(id) = id_or_name.parse::<Uuid>() {
        return get(conn, id).await;
    }
    let rows: Vec<MerchantRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM merchants WHERE name = $1 LIMIT 2")))
            .bind(id_or_name)
            .fetch_all(&mut *conn)
            .await?;
    match rows.len() {
        0 => Ok(None),
        1 => rows.into_iter().next().map(Merchant::try_from).transpose(),
        _ => Err(StoreError::Conflict("merchant name (several merchants share it; use the id)")),
    }
}

#[tracing::instrument(skip(conn))]
pub async fn list(conn: &mut Conn) -> Result<Vec<Merchant>, StoreError> {
    let rows: Vec<MerchantRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM merchants ORDER BY id")))
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter().map(Merchant::try_from).collect()
}

#[tracing::instrument(skip(conn))]
pub async fn set_status(conn: &mut Conn, id: Uuid, status: MerchantStatus) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE merchants SET status = $1 WHERE id = $2")
        .bind(status)
        .bind(Text(id))
        .execute(&mut *conn)
        .await?;
    super::key_changes::changed();
    if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// Sets how many percent short a payment may be and still count as paid.
#[tracing::instrument(skip(conn))]
pub async fn set_payment_tolerance(conn: &mut Conn, id: Uuid, percent: Decimal) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE merchants SET payment_tolerance_percent = $1 WHERE id = $2")
        .bind(Text(percent))
        .bind(Text(id))
        .execute(&mut *conn)
        .await?;
    super::key_changes::changed();
    if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// A merchant's fee setting for one asset symbol, as the operator entered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetFee {
    pub asset: String,
    pub percent: Decimal,
    /// In whole tokens.
    pub fixed: Decimal,
}

/// Sets (or replaces) the merchant's fee for `asset`. Validate with [`crate::fees::validate`] first.
#[tracing::instrument(skip(conn))]
pub async fn set_asset_fee(conn: &mut Conn, merchant_id: Uuid, fee: &AssetFee) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO merchant_fees (merchant_id, asset, fee_percent, fee_fixed, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (merchant_id, asset) DO UPDATE SET fee_percent = $3, fee_fixed = $4, updated_at = $5",
    )
    .bind(Text(merchant_id))
    .bind(&fee.asset)
    .bind(fee.percent.normalize().to_string())
    .bind(fee.fixed.normalize().to_string())
    .bind(now_ms())
    .execute(&mut *conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
        _ => StoreError::Database(e),
    })?;
    Ok(())
}

/// The merchant's per-asset fee settings.
#[tracing::instrument(skip(conn))]
pub async fn asset_fees(conn: &mut Conn, merchant_id: Uuid) -> Result<Vec<AssetFee>, StoreError> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT asset, fee_percent, fee_fixed FROM merchant_fees WHERE merchant_id = $1 ORDER BY asset")
            .bind(Text(merchant_id))
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter()
        .map(|(asset, percent, fixed)| {
            Ok(AssetFee {
                asset,
                percent: parse_column("merchant_fees.fee_percent", &percent)?,
                fixed: parse_column("merchant_fees.fee_fixed", &fixed)?,
            })
        })
        .collect()
}

/// The schedule a new invoice of `merchant` in `asset` (with `decimals`) is created under: the
/// asset's own setting, else the merchant's percent with no fixed part.
#[tracing::instrument(skip(conn, merchant), fields(merchant_id = %merchant.id))]
pub async fn fee_schedule(
    conn: &mut Conn,
    merchant: &Merchant,
    asset: &str,
    decimals: u8,
) -> Result<FeeSchedule, StoreError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT fee_percent, fee_fixed FROM merchant_fees WHERE merchant_id = $1 AND UPPER(asset) = UPPER($2) \
             ORDER BY asset = $2 DESC LIMIT 1",
    )
    .bind(Text(merchant.id))
    .bind(asset)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((percent, fixed)) = row else {
        return Ok(FeeSchedule { percent: merchant.fee_percent, fixed: BaseUnits::ZERO });
    };
    let fixed: Decimal = parse_column("merchant_fees.fee_fixed", &fixed)?;
    Ok(FeeSchedule {
        percent: parse_column("merchant_fees.fee_percent", &percent)?,
        fixed: BaseUnits::from_decimal_round_down(fixed, decimals)
            .map_err(|e| StoreError::Corrupt(format!("merchant_fees.fee_fixed = {fixed}: {e}")))?,
    })
}

/// Sets the origins whose browser code may call the payer API for the merchant's invoices.
#[tracing::instrument(skip(conn))]
pub async fn set_checkout_origins(conn: &mut Conn, id: Uuid, origins: &[String]) -> Result<(), StoreError> {
    let value = (!origins.is_empty()).then(|| serde_json::json!(origins).to_string());
    let done = sqlx::query("UPDATE merchants SET checkout_origins = $1 WHERE id = $2")
        .bind(value)
        .bind(Text(id))
        .execute(&mut *conn)
        .await?;
    super::key_changes::changed();
    if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// Sets what the dashboard's Settings page changes (checked by the caller: `merchant::company_name`,
/// `merchant::checkout_origins`, a URL check for the return URL).
#[tracing::instrument(skip(conn, settings))]
pub async fn set_settings(conn: &mut Conn, id: Uuid, settings: &MerchantSettings) -> Result<(), StoreError> {
    let origins = &settings.checkout_origins;
    let origins = (!origins.is_empty()).then(|| serde_json::json!(origins).to_string());
    let done = sqlx::query(
        "UPDATE merchants SET company_name = $1, default_return_url = $2, checkout_origins = $3 WHERE id = $4",
    )
    .bind(&settings.company_name)
    .bind(&settings.default_return_url)
    .bind(origins)
    .bind(Text(id))
    .execute(&mut *conn)
    .await?;
    super::key_changes::changed();
    if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// The checkout origins of the merchant who owns `invoice_id` (empty when none or no invoice).
#[tracing::instrument(skip(conn))]
pub async fn checkout_origins_for_invoice(conn: &mut Conn, invoice_id: Uuid) -> Result<Vec<String>, StoreError> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT m.checkout_origins FROM invoices i JOIN merchants m ON m.id = i.merchant_id WHERE i.id = $1",
    )
    .bind(Text(invoice_id))
    .fetch_optional(&mut *conn)
    .await?;
    match row.and_then(|(origins,)| origins) {
        Some(json) => {
            serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("merchants.checkout_origins: {e}")))
        }
        None => Ok(Vec::new()),
    }
}
