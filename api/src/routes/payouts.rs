//! `POST /api/v1/payouts`, `GET /api/v1/payouts/{id}`, `GET /api/v1/payouts`,
//! `POST /api/v1/payouts/{id}/cancel` and `POST /api/v1/invoices/{id}/refunds`.
//!
//! A payout (or refund) is created in one database transaction with the chain transaction's
//! intent that will send it and the ledger reservation that pays for it (`payout_reserve`:
//! available -> reserved, amount plus the network fee reserve of a native payout). The settler
//! signs and sends it from the treasury; until it is signed the merchant can cancel it, which
//! releases the reservation in the same way.

use alloy::primitives::Address;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::config::ChainConfig;
use depositd_core::evm::parse_address;
use depositd_core::invoice::Invoice;
use depositd_core::invoicing::resolve_asset;
use depositd_core::money::{BaseUnits, MoneyError};
use depositd_core::payout::{Payout, PayoutKind, PayoutResource, PayoutStatus};
use depositd_core::payouts::{self, NewPayout};
use depositd_core::store::chain_txs;
use depositd_core::store::{self, Conn, StoreError, invoices};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::{self, Page, PathId};
use crate::idempotency::{self, Create, Creation, IdempotencyGuard, Parent};
use crate::query::{self, List, ListQuery};
use crate::state::AppState;
use crate::validate;

/// The request body of a payout. Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayout {
    /// An enabled chain; default: the server's default chain.
    pub chain: Option<String>,
    /// An asset accepted on the chain (`ETH`, `USDC`...).
    pub asset: String,
    /// Decimal string in whole units of the asset (`"12.5"`), more than zero, with at most the
    /// asset's decimals. JSON numbers are refused (money is never a float).
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: serde_json::Value,
    /// The recipient: a 0x address (mixed case must be a valid EIP-55 checksum; never the zero address).
    pub destination: String,
    /// Your reference, unique among your payouts; 1 to 128 characters.
    pub external_id: Option<String>,
    /// At most 50 keys with string, number or boolean values, at most 5 KB serialized.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

impl Creation for CreatePayout {
    const SCOPE: Scope = Scope::PayoutsWrite;
    const ENDPOINT: &'static str = "POST /api/v1/payouts";
}

/// The request body of a refund: the invoice gives the chain and asset (for an invoice with
/// several payment options, the option paid; `asset`/`chain` name it when several were).
/// Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// Decimal string in whole units of the refunded asset, more than zero, at most what was paid
    /// in it and not yet refunded.
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: serde_json::Value,
    /// Where the refund goes: a 0x address (mixed case must be a valid EIP-55 checksum).
    pub address: String,
    /// Your reference, unique among your payouts and refunds; 1 to 128 characters.
    pub external_id: Option<String>,
    /// At most 50 keys with string, number or boolean values, at most 5 KB serialized.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The payment option refunded, by asset: one the invoice offered. Needed only when the
    /// invoice was paid in several options; default: the one it was paid in (its own asset for an
    /// invoice payable one way).
    pub asset: Option<String>,
    /// The payment option refunded, by chain (with `asset`, when the invoice offered an asset on
    /// several chains); default as for `asset`.
    pub chain: Option<String>,
}

impl Creation for CreateRefund {
    const SCOPE: Scope = Scope::PayoutsWrite;
    const ENDPOINT: &'static str = "POST /api/v1/invoices/{id}/refunds";
}

/// The invoice a refund is of, from the path.
pub struct RefundedInvoice(Uuid);

impl Parent for RefundedInvoice {
    const IN_PATH: bool = true;

    fn parse(id: Option<&str>) -> Result<Self, ApiError> {
        extract::path_id("invoice", id.unwrap_or_default()).map(RefundedInvoice)
    }

    /// The key covers the invoice too: the same key and body for another invoice is a
    /// conflict, never a replay of the first invoice's refund.
    fn claim(&self, body: serde_json::Value) -> serde_json::Value {
        serde_json::json!({ "invoice_id": self.0, "body": body })
    }
}

/// An amount in whole units of an asset with `decimals`: a plain decimal string, more than zero,
/// with at most `decimals` places; converted to base units exactly (no float, no rounding, the
/// whole U256 range).
fn amount(value: &serde_json::Value, decimals: u8, asset: &str) -> Result<BaseUnits, ApiError> {
    let invalid = |message: String| ApiError::invalid("amount", "invalid_amount", message);
    let serde_json::Value::String(text) = value else {
        return Err(invalid(format!(
            "amount must be a decimal string of whole {asset} such as \"1.5\" (JSON numbers are not accepted)"
        )));
    };
    let units = BaseUnits::from_whole_units(text, decimals).map_err(|e| match e {
        MoneyError::NotADecimal(_) => {
            invalid("amount must be a plain positive decimal such as \"1.5\" (no sign, exponent or separators)".into())
        }
        MoneyError::TooPrecise { places, decimals } => {
            invalid(format!("amount has {places} decimal places; {asset} has at most {decimals}"))
        }
        _ => invalid("amount is too large".into()),
    })?;
    if units.is_zero() {
        return Err(ApiError::invalid("amount", "amount_out_of_range", "amount must be more than zero"));
    }
    Ok(units)
}

/// A destination address (`param` names the field).
fn destination(param: &str, value: &str) -> Result<Address, ApiError> {
    parse_address(value.trim()).map_err(|e| ApiError::invalid(param, "invalid_address", format!("{param} {e}")))
}

/// The payout lifecycle's context on `chain`.
pub(crate) fn payout_ctx<'a>(state: &'a AppState, chain: &'a ChainConfig) -> payouts::Context<'a> {
    payouts::Context {
        chain,
        settler: &state.config.settings.settler,
        treasury: state.wallet.treasury_address(),
        public_url: &state.config.settings.api.public_url,
        sessions: &state.sessions,
    }
}

/// Creates a validated payout or refund (`depositd_core::payouts::create`) and answers 201
/// (stored with the idempotency key, if any, in the same transaction).
async fn create_outgoing(
    state: &AppState,
    guard: Option<IdempotencyGuard>,
    chain: &ChainConfig,
    new: NewPayout,
) -> Result<Response, ApiError> {
    let mut tx = idempotency::begin(&state.store, &guard).await?;
    let (_, resource) = payouts::create(&mut tx, payout_ctx(state, chain), new).await?;
    let body = serde_json::to_string(&resource).map_err(ApiError::internal)?;
    idempotency::commit(guard, tx, StatusCode::CREATED, body).await
}

#[utoipa::path(
    post, path = "/api/v1/payouts", tag = "payouts",
    params(("Idempotency-Key" = Option<String>, Header, description = "Safe retries: the same key and body replay the first response")),
    request_body = CreatePayout,
    responses(
        (status = 201, description = "Payout created; its amount and network fee reserve are held from the available balance", body = PayoutResource),
        (status = 400, description = "Invalid parameters, or insufficient_funds", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks payouts:write, or its mode does not match the chain (key_mode_mismatch)", body = crate::error::ErrorBody),
        (status = 409, description = "Idempotency or external_id conflict", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "No recent network fee estimate (fee_estimate_unavailable)", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Create { auth, request, guard, .. }: Create<CreatePayout>,
) -> Result<Response, ApiError> {
    let chain_param = request.chain.is_some().then_some("chain");
    let (chain, new) = validate_payout(&state, auth.merchant.id, Some(auth.key.mode), request, |chain| {
        auth.may_create_on(chain, chain_param)
    })?;
    create_outgoing(&state, guard, chain, new).await
}

/// A payout request checked (the API's and the dashboard's): its chain and asset (of `mode`, for
/// a key), then `allowed` on the chain, then the amount, destination, reference and metadata.
pub(crate) fn validate_payout(
    state: &AppState,
    merchant_id: Uuid,
    mode: Option<KeyMode>,
    request: CreatePayout,
    allowed: impl FnOnce(&ChainConfig) -> Result<(), ApiError>,
) -> Result<(&ChainConfig, NewPayout), ApiError> {
    let (chain, asset) = resolve_asset(&state.config, request.chain.as_deref(), Some(request.asset.as_str()), mode)?;
    allowed(chain)?;
    let new = NewPayout {
        kind: PayoutKind::Payout,
        merchant_id,
        refund_of: None,
        asset: asset.symbol.to_owned(),
        decimals: asset.decimals,
        token_address: asset.token_address,
        amount: amount(&request.amount, asset.decimals, asset.symbol)?,
        destination: destination("destination", &request.destination)?,
        external_id: validate::text("external_id", request.external_id, 128)?,
        metadata: validate::metadata(request.metadata)?,
    };
    Ok((chain, new))
}

#[utoipa::path(
    post, path = "/api/v1/invoices/{id}/refunds", tag = "payouts",
    params(
        ("id" = Uuid, Path, description = "Invoice id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Safe retries: the same key, invoice and body replay the first response"),
    ),
    request_body = CreateRefund,
    responses(
        (status = 201, description = "Refund created (a payout of kind refund); its amount and network fee reserve are held from the available balance", body = PayoutResource),
        (status = 400, description = "Invalid parameters, invoice_not_paid, refund_exceeds_paid (beyond what was paid in the refunded asset and not yet refunded), refund_option_not_offered (asset/chain not an option of the invoice) or insufficient_funds", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks payouts:write, or its mode does not match the chain (key_mode_mismatch)", body = crate::error::ErrorBody),
        (status = 404, description = "No such invoice", body = crate::error::ErrorBody),
        (status = 409, description = "Idempotency or external_id conflict, or refund_option_ambiguous (paid in several options: name one with asset/chain)", body = crate::error::ErrorBody),
        (status = 503, description = "No recent network fee estimate (fee_estimate_unavailable)", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create_refund(
    State(state): State<AppState>,
    Create { auth, parent: RefundedInvoice(invoice_id), request, guard }: Create<CreateRefund, RefundedInvoice>,
) -> Result<Response, ApiError> {
    let (chain, new) =
        validate_refund(&state, auth.merchant.id, invoice_id, request, |chain| auth.may_create_on(chain, None)).await?;
    create_outgoing(&state, guard, chain, new).await
}

/// A refund request of merchant `merchant_id`'s invoice `invoice_id` checked (the API's and the
/// dashboard's): the invoice (404 when not the merchant's), the option refunded, the amount,
/// address, reference and metadata, then `allowed` on the refund's chain.
pub(crate) async fn validate_refund(
    state: &AppState,
    merchant_id: Uuid,
    invoice_id: Uuid,
    request: CreateRefund,
    allowed: impl FnOnce(&ChainConfig) -> Result<(), ApiError>,
) -> Result<(&ChainConfig, NewPayout), ApiError> {
    let invoice = {
        let mut conn = state.store.conn().await?;
        invoices::get(&mut conn, merchant_id, invoice_id).await?.ok_or_else(|| ApiError::not_found("invoice"))?
    };
    let named = request.chain.is_some() || request.asset.is_some();
    let target = match payouts::refund_target(&invoice, request.chain.as_deref(), request.asset.as_deref()) {
        // Several options, none paid.
        Err(payouts::PayoutError::RefundExceedsPaid(_)) if !named => return Err(not_paid(&invoice)),
        target => target?,
    };
    let amount = amount(&request.amount, target.decimals, &target.asset)?;
    let destination = destination("address", &request.address)?;
    let external_id = validate::text("external_id", request.external_id, 128)?;
    let metadata = validate::metadata(request.metadata)?;
    let chain = refundable(state, &invoice, &target)?;
    allowed(chain)?;
    let new = NewPayout {
        kind: PayoutKind::Refund,
        merchant_id,
        asset: target.asset,
        decimals: target.decimals,
        token_address: target.token_address,
        amount,
        destination,
        external_id,
        metadata,
        refund_of: Some(invoice),
    };
    Ok((chain, new))
}

/// The chain a refund of `invoice` in `target` is sent on: its asset must still be enabled, and
/// something must have been paid to the invoice.
fn refundable<'a>(
    state: &'a AppState,
    invoice: &Invoice,
    target: &payouts::RefundTarget,
) -> Result<&'a ChainConfig, ApiError> {
    let Some(chain) = state.config.chain(&target.chain).filter(|c| c.asset(&target.asset).is_some()) else {
        return Err(ApiError::InvalidRequest {
            code: "unsupported_asset",
            message: format!("{} on {} is no longer enabled on this server", target.asset, target.chain),
            param: None,
        });
    };
    if invoice.amount_paid_base_units.is_zero() && target.paid.is_zero() {
        return Err(not_paid(invoice));
    }
    Ok(chain)
}

fn not_paid(invoice: &Invoice) -> ApiError {
    ApiError::InvalidRequest {
        code: "invoice_not_paid",
        message: format!(
            "nothing has been paid to this invoice (it is {}): there is nothing to refund",
            invoice.status
        ),
        param: None,
    }
}

/// The hash of a payout's transaction: the mined one, else its latest signed attempt.
async fn tx_hash(conn: &mut Conn, transaction_id: Uuid) -> Result<Option<String>, ApiError> {
    let Some(tx) = chain_txs::get(conn, transaction_id).await? else { return Ok(None) };
    if tx.mined_tx_hash.is_some() {
        return Ok(tx.mined_tx_hash);
    }
    Ok(chain_txs::attempts(conn, transaction_id).await?.pop().map(|a| a.tx_hash))
}

/// The payout resource, with its chain's name and asset's decimals from the configuration.
pub async fn resource(state: &AppState, conn: &mut Conn, payout: &Payout) -> Result<PayoutResource, ApiError> {
    let (Some(chain), Some(decimals)) = super::ledger::describe(&state.config, payout.chain_id, &payout.asset) else {
        return Err(ApiError::internal(std::io::Error::other(format!(
            "payout {}: {} on chain {} is no longer configured, so its amount cannot be shown",
            payout.id, payout.asset, payout.chain_id
        ))));
    };
    let hash = match payout.transaction_id {
        Some(id) => tx_hash(conn, id).await?,
        None => None,
    };
    Ok(PayoutResource::build(payout, &chain, decimals, hash))
}

#[utoipa::path(
    get, path = "/api/v1/payouts/{id}", tag = "payouts",
    params(("id" = Uuid, Path, description = "Payout (or refund) id")),
    responses(
        (status = 200, description = "The payout", body = PayoutResource),
        (status = 403, description = "The key lacks payouts:read", body = crate::error::ErrorBody),
        (status = 404, description = "No such payout", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<PayoutResource>, ApiError> {
    auth.require(Scope::PayoutsRead)?;
    let id = extract::path_id("payout", &id)?;
    let mut conn = state.store.conn().await?;
    let payout =
        store::payouts::get(&mut conn, auth.merchant.id, id).await?.ok_or_else(|| ApiError::not_found("payout"))?;
    Ok(Json(resource(&state, &mut conn, &payout).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PayoutList {
    /// Always `list`.
    #[schema(value_type = String)]
    object: &'static str,
    data: Vec<PayoutResource>,
    has_more: bool,
}

/// The query of `GET /api/v1/payouts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPayouts {
    /// Only payouts in this status: pending, submitted, confirmed, failed or cancelled
    #[serde(default, deserialize_with = "query::word")]
    #[param(value_type = Option<String>)]
    status: Option<PayoutStatus>,
    /// Only the refunds of this invoice
    #[serde(default, deserialize_with = "refunds_of")]
    invoice_id: Option<Uuid>,
    /// 1 to 100, default 20
    #[serde(default, deserialize_with = "query::limit")]
    limit: Option<u32>,
    /// Cursor: the last id of the previous page
    #[serde(default, deserialize_with = "query::starting_after")]
    starting_after: Option<Uuid>,
}

impl ListQuery for ListPayouts {
    const SCOPE: Scope = Scope::PayoutsRead;
}

/// `invoice_id` of [`ListPayouts`].
fn refunds_of<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Uuid>, D::Error> {
    let value = String::deserialize(deserializer)?;
    let id = value.parse().map_err(|_| serde::de::Error::custom(format!("invoice_id {value:?} is not a UUID")))?;
    Ok(Some(id))
}

#[utoipa::path(
    get, path = "/api/v1/payouts", tag = "payouts",
    params(ListPayouts),
    responses(
        (status = 200, description = "Payouts and refunds, newest first", body = PayoutList),
        (status = 400, description = "Invalid query parameter", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks payouts:read", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    List { auth, query }: List<ListPayouts>,
) -> Result<Json<PayoutList>, ApiError> {
    let page = Page::new(query.limit, query.starting_after);
    let mut conn = state.store.conn().await?;
    let found = store::payouts::list(
        &mut conn,
        auth.merchant.id,
        query.status,
        query.invoice_id,
        page.starting_after,
        page.fetch(),
    )
    .await?;
    let (found, has_more) = page.finish(found);
    let mut data = Vec::with_capacity(found.len());
    for payout in &found {
        data.push(resource(&state, &mut conn, payout).await?);
    }
    Ok(Json(PayoutList { object: "list", data, has_more }))
}

#[utoipa::path(
    post, path = "/api/v1/payouts/{id}/cancel", tag = "payouts",
    params(("id" = Uuid, Path, description = "Payout (or refund) id")),
    responses(
        (status = 200, description = "The cancelled payout; its reservation is back in the available balance", body = PayoutResource),
        (status = 403, description = "The key lacks payouts:write", body = crate::error::ErrorBody),
        (status = 404, description = "No such payout", body = crate::error::ErrorBody),
        (status = 409, description = "Already signed or finished (payout_not_cancellable)", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<PayoutResource>, ApiError> {
    auth.require(Scope::PayoutsWrite)?;
    let id = extract::path_id("payout", &id)?;
    let mut tx = state.store.begin().await?;
    let found =
        store::payouts::get(&mut tx, auth.merchant.id, id).await?.ok_or_else(|| ApiError::not_found("payout"))?;
    let chain = state.config.chains.iter().find(|c| c.chain_id == found.chain_id).ok_or_else(|| {
        ApiError::internal(std::io::Error::other(format!(
            "payout {id}: chain {} is no longer configured",
            found.chain_id
        )))
    })?;
    let (_, resource) = payouts::cancel(&mut tx, payout_ctx(&state, chain), auth.merchant.id, id).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Json(resource))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_and_bounded_by_the_assets_decimals() {
        let ok = |s: &str, d: u8| amount(&serde_json::json!(s), d, "X").unwrap().to_string();
        assert_eq!(ok("1.5", 6), "1500000");
        assert_eq!(ok("0.000001", 6), "1");
        assert_eq!(ok("007", 0), "7");
        assert_eq!(ok("1.000000000000000001", 18), "1000000000000000001");
        assert_eq!(
            ok("123456789012345678901234567890.123456789012345678", 18),
            "123456789012345678901234567890123456789012345678"
        );
        for bad in ["0.0000001", "-1", "1e3", "1,5", "", ".5", "1.", "1.2.3", "0x10", " "] {
            assert!(amount(&serde_json::json!(bad), 6, "X").is_err(), "{bad:?} must be refused");
        }
        for zero in ["0", "0.000"] {
            let error = amount(&serde_json::json!(zero), 6, "X").unwrap_err();
            assert!(matches!(error, ApiError::InvalidRequest { code: "amount_out_of_range", .. }), "{zero}");
        }
        assert!(amount(&serde_json::json!(1.5), 6, "X").is_err());
        assert!(amount(&serde_json::json!(1), 6, "X").is_err());
        // Beyond 256 bits.
        assert!(amount(&serde_json::json!("9".repeat(80)), 0, "X").is_err());
    }
}
