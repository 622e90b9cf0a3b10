//! Invoice rows.

use alloy::primitives::Address;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::codec::{Text, opt};
use super::{Conn, StoreError, parse_column};
use crate::fees::FeeSchedule;
use crate::invoice::{
    Invoice, InvoiceDetails, InvoiceMark, InvoiceStatus, MarkStatus, PaymentFlag, PaymentOption, PaymentView,
};
use crate::invoice_views::InvoiceView;
use crate::money::BaseUnits;
use crate::time::now_ms;

const COLUMNS: &str = "id, merchant_id, external_id, status, payment_flags, amount, currency, conversion_rate, \
    chain, chain_id, asset, token_address, decimals, deposit_address_id, address, amount_base_units, fee_base_units, \
    merchant_amount_base_units, amount_paid_base_units, description, customer_id, customer_email, metadata, title, \
    footer, return_url, use_return_url, success_url, fail_url, callback_url, questions, receiver_override_address, \
    static_address_id, session_token, created_at, expires_at, finished_at, updated_at, fee_percent, fee_fixed_base_units, answers, api_view, customer_name, \
    marked_status, marked_reason, marked_at, marked_by_key_id, marked_by, option_count";

#[derive(sqlx::FromRow)]
struct InvoiceRow {
    id: Text<Uuid>,
    merchant_id: Text<Uuid>,
    external_id: Option<String>,
    status: InvoiceStatus,
    payment_flags: String,
    amount: Text<Decimal>,
    currency: String,
    conversion_rate: Text<Decimal>,
    chain: String,
    chain_id: i64,
    asset: String,
    token_address: Option<Text<Address>>,
    decimals: i64,
    deposit_address_id: Text<Uuid>,
    address: Text<Address>,
    amount_base_units: Text<BaseUnits>,
    fee_base_units: Text<BaseUnits>,
    merchant_amount_base_units: Text<BaseUnits>,
    amount_paid_base_units: Text<BaseUnits>,
    description: Option<String>,
    customer_id: Option<String>,
    customer_email: Option<String>,
    metadata: Option<String>,
    title: Option<String>,
    footer: Option<String>,
    return_url: Option<String>,
    use_return_url: Option<String>,
    success_url: Option<String>,
    fail_url: Option<String>,
    callback_url: Option<String>,
    questions: Option<String>,
    receiver_override_address: Option<Text<Address>>,
    static_address_id: Option<Text<Uuid>>,
    session_token: String,
    created_at: i64,
    expires_at: i64,
    finished_at: Option<i64>,
    updated_at: i64,
    fee_percent: Text<Decimal>,
    fee_fixed_base_units: Text<BaseUnits>,
    answers: Option<String>,
    api_view: InvoiceView,
    customer_name: Option<String>,
    marked_status: Option<MarkStatus>,
    marked_reason: Option<String>,
    marked_at: Option<i64>,
    marked_by_key_id: Option<Text<Uuid>>,
    marked_by: Option<String>,
    option_count: i64,
}

fn json_column<T: serde::de::DeserializeOwned>(
    column: &'static str,
    value: Option<String>,
) -> Result<Option<T>, StoreError> {
    value
        .map(|v| serde_json::from_str(&v).map_err(|e| StoreError::Corrupt(format!("invoices.{column}: {e}"))))
        .transpose()
}

impl TryFrom<InvoiceRow> for Invoice {
    type Error = StoreError;
    fn try_from(r: InvoiceRow) -> Result<Self, StoreError> {
        let mark = match (r.marked_status, r.marked_reason, r.marked_at, r.marked_by_key_id, r.marked_by) {
            (None, None, None, None, None) => None,
            (Some(status), Some(reason), Some(marked_at), Some(by_key_id), Some(by)) => {
                Some(InvoiceMark { status, reason, marked_at, by_key_id: by_key_id.0, by })
            }
            _ => return Err(StoreError::Corrupt(format!("invoices.marked_* of {} are partly set", r.id.0))),
        };
        Ok(Invoice {
            id: r.id.0,
            merchant_id: r.merchant_id.0,
            external_id: r.external_id,
            status: r.status,
            payment_flags: r
                .payment_flags
                .split(',')
                .filter(|f| !f.is_empty())
                .map(|f| parse_column("invoices.payment_flags", f))
                .collect::<Result<_, _>>()?,
            amount: r.amount.0,
            currency: r.currency,
            conversion_rate: r.conversion_rate.0,
            chain: r.chain,
            chain_id: r.chain_id as u64,
            asset: r.asset,
            token_address: opt(r.token_address),
            decimals: u8::try_from(r.decimals)
                .map_err(|_| StoreError::Corrupt(format!("invoices.decimals {}", r.decimals)))?,
            deposit_address_id: r.deposit_address_id.0,
            address: r.address.0,
            amount_base_units: r.amount_base_units.0,
            fee_base_units: r.fee_base_units.0,
            merchant_amount_base_units: r.merchant_amount_base_units.0,
            amount_paid_base_units: r.amount_paid_base_units.0,
            fee_schedule: FeeSchedule { percent: r.fee_percent.0, fixed: r.fee_fixed_base_units.0 },
            details: InvoiceDetails {
                description: r.description,
                customer_id: r.customer_id,
                customer_email: r.customer_email,
                customer_name: r.customer_name,
                metadata: json_column("metadata", r.metadata)?,
                title: r.title,
                footer: r.footer,
                return_url: r.return_url,
                use_return_url: r.use_return_url.map(|v| v == "true"),
                success_url: r.success_url,
                fail_url: r.fail_url,
                callback_url: r.callback_url,
                questions: json_column("questions", r.questions)?,
                answers: json_column("answers", r.answers)?,
            },
            receiver_override_address: opt(r.receiver_override_address),
            static_address_id: opt(r.static_address_id),
            view: r.api_view,
            mark,
            // Read by `load_options` when `option_count` says there are any.
            options: Vec::with_capacity(r.option_count.clamp(0, 16) as usize),
            session_token: r.session_token,
            created_at: r.created_at,
            expires_at: r.expires_at,
            finished_at: r.finished_at,
            updated_at: r.updated_at,
        })
    }
}

fn flags_column(flags: &[PaymentFlag]) -> String {
    let mut flags: Vec<&str> = flags.iter().map(|f| f.as_str()).collect();
    flags.sort_unstable();
    flags.dedup();
    flags.join(",")
}

/// Inserts a new invoice. A second invoice with the same `external_id` for the merchant is a
/// [`StoreError::Conflict`].
pub async fn insert(conn: &mut Conn, invoice: &Invoice) -> Result<(), StoreError> {
    insert_many(conn, &[invoice]).await
}

/// Inserts new invoices (made in one transaction), a statement per
/// [`super::statement_chunks`]. An `external_id` the merchant already has (or twice among
/// them) is a [`StoreError::Conflict`], and the caller rolls back.
#[tracing::instrument(skip_all, fields(count = invoices.len()))]
pub async fn insert_many(conn: &mut Conn, invoices: &[&Invoice]) -> Result<(), StoreError> {
    for chunk in super::statement_chunks(invoices) {
        let sql = format!("INSERT INTO invoices ({COLUMNS}) VALUES {}", super::value_rows(chunk.len(), 49, 1));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for invoice in chunk {
            query = bind_row(query, invoice);
        }
        query.execute(&mut *conn).await.map_err(|e| StoreError::on_conflict(e, "external_id"))?;
    }
    for invoice in invoices {
        for (position, option) in invoice.options.iter().enumerate() {
            sqlx::query(
                "INSERT INTO invoice_payment_options (invoice_id, option_index, chain, chain_id, asset, token_address, decimals, \
                 address, amount_base_units, fee_base_units, fee_percent, fee_fixed_base_units, conversion_rate, \
                 amount_paid_base_units) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(Text(invoice.id))
            .bind(position as i64)
            .bind(&option.chain)
            .bind(option.chain_id as i64)
            .bind(&option.asset)
            .bind(option.token_address.map(|a| a.to_checksum(None)))
            .bind(option.decimals as i64)
            .bind(option.address.to_checksum(None))
            .bind(option.amount_base_units)
            .bind(option.fee_base_units)
            .bind(Text(option.fee_schedule.percent))
            .bind(option.fee_schedule.fixed)
            .bind(Text(option.conversion_rate))
            .bind(option.amount_paid_base_units)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Which of `external_ids` merchant `merchant_id` already has an invoice with.
#[tracing::instrument(skip_all, fields(count = external_ids.len()))]
pub async fn external_ids_taken(
    conn: &mut Conn,
    merchant_id: Uuid,
    external_ids: &[&str],
) -> Result<Vec<String>, StoreError> {
    let mut taken = Vec::new();
    for chunk in super::statement_chunks(external_ids) {
        let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql =
            format!("SELECT external_id FROM invoices WHERE merchant_id = $1 AND external_id IN ({})", list.join(", "));
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(Text(merchant_id));
        for id in chunk {
            query = query.bind(*id);
        }
        let rows: Vec<(String,)> = query.fetch_all(&mut *conn).await?;
        taken.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(taken)
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds `invoice`'s row, in [`COLUMNS`]' order.
fn bind_row<'q>(query: AnyQuery<'q>, invoice: &Invoice) -> AnyQuery<'q> {
    let d = &invoice.details;
    let json = |v: &Option<_>| v.as_ref().map(|v: &serde_json::Value| v.to_string());
    query
        .bind(Text(invoice.id))
        .bind(Text(invoice.merchant_id))
        .bind(&invoice.external_id)
        .bind(invoice.status)
        .bind(flags_column(&invoice.payment_flags))
        .bind(Text(invoice.amount))
        .bind(&invoice.currency)
        .bind(Text(invoice.conversion_rate))
        .bind(&invoice.chain)
        .bind(invoice.chain_id as i64)
        .bind(&invoice.asset)
        .bind(invoice.token_address.map(|a| a.to_checksum(None)))
        .bind(invoice.decimals as i64)
        .bind(Text(invoice.deposit_address_id))
        .bind(invoice.address.to_checksum(None))
        .bind(invoice.amount_base_units)
        .bind(invoice.fee_base_units)
        .bind(invoice.merchant_amount_base_units)
        .bind(invoice.amount_paid_base_units)
        .bind(&d.description)
        .bind(&d.customer_id)
        .bind(&d.customer_email)
        .bind(json(&d.metadata.clone().map(serde_json::Value::Object)))
        .bind(&d.title)
        .bind(&d.footer)
        .bind(&d.return_url)
        .bind(d.use_return_url.map(Text))
        .bind(&d.success_url)
        .bind(&d.fail_url)
        .bind(&d.callback_url)
        .bind(json(&d.questions.as_ref().map(|q| serde_json::json!(q))))
        .bind(invoice.receiver_override_address.map(|a| a.to_checksum(None)))
        .bind(invoice.static_address_id.map(Text))
        .bind(&invoice.session_token)
        .bind(invoice.created_at)
        .bind(invoice.expires_at)
        .bind(invoice.finished_at)
        .bind(invoice.updated_at)
        .bind(Text(invoice.fee_schedule.percent))
        .bind(invoice.fee_schedule.fixed)
        .bind(json(&d.answers.as_ref().map(|a| serde_json::json!(a))))
        .bind(invoice.view)
        .bind(&d.customer_name)
        .bind(invoice.mark.as_ref().map(|m| m.status))
        .bind(invoice.mark.as_ref().map(|m| m.reason.clone()))
        .bind(invoice.mark.as_ref().map(|m| m.marked_at))
        .bind(invoice.mark.as_ref().map(|m| Text(m.by_key_id)))
        .bind(invoice.mark.as_ref().map(|m| m.by.clone()))
        .bind(invoice.options.len() as i64)
}

#[derive(sqlx::FromRow)]
struct OptionRow {
    chain: String,
    chain_id: i64,
    asset: String,
    token_address: Option<Text<Address>>,
    decimals: i64,
    address: Text<Address>,
    amount_base_units: Text<BaseUnits>,
    fee_base_units: Text<BaseUnits>,
    fee_percent: Text<Decimal>,
    fee_fixed_base_units: Text<BaseUnits>,
    conversion_rate: Text<Decimal>,
    amount_paid_base_units: Text<BaseUnits>,
}

impl TryFrom<OptionRow> for PaymentOption {
    type Error = StoreError;
    fn try_from(r: OptionRow) -> Result<Self, StoreError> {
        Ok(PaymentOption {
            chain: r.chain,
            chain_id: r.chain_id as u64,
            asset: r.asset,
            token_address: opt(r.token_address),
            decimals: u8::try_from(r.decimals)
                .map_err(|_| StoreError::Corrupt(format!("invoice_payment_options.decimals {}", r.decimals)))?,
            address: r.address.0,
            amount_base_units: r.amount_base_units.0,
            fee_base_units: r.fee_base_units.0,
            fee_schedule: FeeSchedule { percent: r.fee_percent.0, fixed: r.fee_fixed_base_units.0 },
            conversion_rate: r.conversion_rate.0,
            amount_paid_base_units: r.amount_paid_base_units.0,
        })
    }
}

/// Reads an invoice row and, when it has payment options, its options.
async fn complete(conn: &mut Conn, row: InvoiceRow) -> Result<Invoice, StoreError> {
    let count = row.option_count;
    let mut invoice = Invoice::try_from(row)?;
    if count > 0 {
        let rows: Vec<OptionRow> = sqlx::query_as(
            "SELECT chain, chain_id, asset, token_address, decimals, address, amount_base_units, fee_base_units, \
             fee_percent, fee_fixed_base_units, conversion_rate, amount_paid_base_units \
             FROM invoice_payment_options WHERE invoice_id = $1 ORDER BY option_index",
        )
        .bind(Text(invoice.id))
        .fetch_all(&mut *conn)
        .await?;
        if rows.len() as i64 != count {
            return Err(StoreError::Corrupt(format!(
                "invoice {} has {} payment options, its row says {count}",
                invoice.id,
                rows.len()
            )));
        }
        invoice.options = rows.into_iter().map(PaymentOption::try_from).collect::<Result<_, _>>()?;
    }
    Ok(invoice)
}

async fn complete_opt(conn: &mut Conn, row: Option<InvoiceRow>) -> Result<Option<Invoice>, StoreError> {
    match row {
        Some(row) => Ok(Some(complete(conn, row).await?)),
        None => Ok(None),
    }
}

/// Holds invoice `id` until the transaction ends (`FOR UPDATE` on PostgreSQL; SQLite's one writer
/// holds everything already): crediting takes it before it reads a multi-option invoice, whose
/// payment state spans several rows, so two chains' watchers crediting it at once take turns.
#[tracing::instrument(skip(conn))]
pub async fn lock(conn: &mut Conn, id: Uuid) -> Result<(), StoreError> {
    let sql = format!("SELECT id FROM invoices WHERE id = $1{}", super::Backend::of(conn).for_update());
    let _: Option<(String,)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(Text(id)).fetch_optional(&mut *conn).await?;
    Ok(())
}

/// One of a merchant's invoices (another merchant's id is simply not found).
#[tracing::instrument(skip(conn))]
pub async fn get(conn: &mut Conn, merchant_id: Uuid, id: Uuid) -> Result<Option<Invoice>, StoreError> {
    let row: Option<InvoiceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM invoices WHERE id = $1 AND merchant_id = $2"
    )))
    .bind(Text(id))
    .bind(Text(merchant_id))
    .fetch_optional(&mut *conn)
    .await?;
    complete_opt(conn, row).await
}

/// Filters for listing; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct InvoiceFilter {
    pub status: Option<InvoiceStatus>,
    pub external_id: Option<String>,
    pub customer_id: Option<String>,
    /// The customer's id or e-mail address (the e-mail compared without case).
    pub customer: Option<String>,
    /// Only invoices carrying this payment flag.
    pub flag: Option<PaymentFlag>,
    /// Only the invoices a static address auto-created.
    pub static_address_id: Option<Uuid>,
    /// Epoch milliseconds, exclusive.
    pub created_after: Option<i64>,
    /// Epoch milliseconds, inclusive.
    pub created_from: Option<i64>,
    /// Epoch milliseconds, exclusive.
    pub created_before: Option<i64>,
    /// Cursor: only invoices older than this one (ids are time-ordered UUIDv7).
    pub starting_after: Option<Uuid>,
    /// Cursor backwards: only invoices newer than this one; the page is the `limit` invoices just
    /// newer than it (still returned newest first). Ignored when `starting_after` is set.
    pub ending_before: Option<Uuid>,
}

/// Newest first, at most `limit` (the caller asks for one more to learn `has_more`: the last
/// one, or with `ending_before` the first one, the newest, which says there is a page before).
#[tracing::instrument(skip(conn))]
pub async fn list(
    conn: &mut Conn,
    merchant_id: Uuid,
    filter: &InvoiceFilter,
    limit: u32,
) -> Result<Vec<Invoice>, StoreError> {
    // Each filter is a fixed clause that is neutral when its parameter is NULL, so the SQL text is
    // constant (one of two prepared statements, by direction) and no value is ever spliced into it.
    let backwards = filter.starting_after.is_none() && filter.ending_before.is_some();
    let (cursor, order) = if backwards { ("id > $6", "ASC") } else { ("id < $6", "DESC") };
    let sql = format!(
        "SELECT {COLUMNS} FROM invoices WHERE merchant_id = $1 \
         AND ($2 IS NULL OR status = $2) \
         AND ($3 IS NULL OR external_id = $3) \
         AND ($4 IS NULL OR customer_id = $4) \
         AND ($5 IS NULL OR created_at > $5) \
         AND ($6 IS NULL OR {cursor}) \
         AND ($8 IS NULL OR customer_id = $8 OR LOWER(customer_email) = LOWER($8)) \
         AND ($9 IS NULL OR (',' || payment_flags || ',') LIKE $9) \
         AND ($10 IS NULL OR static_address_id = $10) \
         AND ($11 IS NULL OR created_at >= $11) \
         AND ($12 IS NULL OR created_at < $12) \
         ORDER BY id {order} LIMIT $7"
    );
    let cursor = if backwards { filter.ending_before } else { filter.starting_after };
    let rows: Vec<InvoiceRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(Text(merchant_id))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.external_id)
        .bind(&filter.customer_id)
        .bind(filter.created_after)
        .bind(cursor.map(Text))
        .bind(limit as i64)
        .bind(&filter.customer)
        .bind(filter.flag.map(|f| format!("%,{},%", f.as_str())))
        .bind(filter.static_address_id.map(Text))
        .bind(filter.created_from)
        .bind(filter.created_before)
        .fetch_all(&mut *conn)
        .await?;
    let mut invoices = Vec::with_capacity(rows.len());
    for row in rows {
        invoices.push(complete(conn, row).await?);
    }
    if backwards {
        invoices.reverse();
    }
    Ok(invoices)
}

/// Moves a pending, unpaid invoice to `cancelled`. Returns false when it is not in that state.
#[tracing::instrument(skip(conn))]
pub async fn cancel(conn: &mut Conn, merchant_id: Uuid, id: Uuid) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE invoices SET status = 'cancelled', finished_at = $1, updated_at = $1 \
         WHERE id = $2 AND merchant_id = $3 AND status = 'pending' AND amount_paid_base_units = '0' \
         AND NOT EXISTS (SELECT 1 FROM deposits WHERE deposits.invoice_id = invoices.id AND deposits.state IN ('detected', 'confirmed'))",
    )
    .bind(now)
    .bind(Text(id))
    .bind(Text(merchant_id))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves up to `batch` pending invoices whose `expires_at` has passed to `expired` and returns
/// them. Invoices with a payment in flight (`processing`) are left to the watcher.
#[tracing::instrument(skip(conn))]
pub async fn expire_due(conn: &mut Conn, now: i64, batch: u32) -> Result<Vec<Invoice>, StoreError> {
    let due: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM invoices WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(batch as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut expired = Vec::with_capacity(due.len());
    for (id,) in due {
        let row: Option<InvoiceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE invoices SET status = 'expired', finished_at = $1, updated_at = $1 \
             WHERE id = $2 AND status = 'pending' RETURNING {COLUMNS}"
        )))
        .bind(now)
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = row {
            expired.push(complete(conn, row).await?);
        }
    }
    Ok(expired)
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    invoice_id: String,
    id: String,
    tx_hash: String,
    log_index: i64,
    block_number: i64,
    from_address: String,
    asset: String,
    chain_id: i64,
    amount_base_units: String,
    state: String,
    detected_at: i64,
    /// The cursor of the deposit's chain, if the chain has one.
    head_block: Option<i64>,
}

/// The deposits credited (or seen) for an invoice, oldest first, as the invoice resource shows them.
#[tracing::instrument(skip(conn, invoice), fields(invoice_id = %invoice.id))]
pub async fn payments(conn: &mut Conn, invoice: &Invoice) -> Result<Vec<PaymentView>, StoreError> {
    Ok(payments_of(conn, std::slice::from_ref(invoice)).await?.remove(&invoice.id).unwrap_or_default())
}

/// [`payments`] of each of `invoices` (a page of a list) in one query, by invoice id; an invoice
/// without a payment has no entry.
#[tracing::instrument(skip_all, fields(invoices = invoices.len()))]
pub async fn payments_of(
    conn: &mut Conn,
    invoices: &[Invoice],
) -> Result<std::collections::HashMap<Uuid, Vec<PaymentView>>, StoreError> {
    let mut found: std::collections::HashMap<Uuid, Vec<PaymentView>> = std::collections::HashMap::new();
    if invoices.is_empty() {
        return Ok(found);
    }
    let placeholders = (1..=invoices.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    // Each payment's confirmations count on its own chain: an invoice with payment options on
    // several chains is paid on chains whose heads differ.
    let sql = format!(
        "SELECT d.invoice_id, d.id, d.tx_hash, d.log_index, d.block_number, d.from_address, d.asset, d.chain_id, \
                d.amount_base_units, d.state, d.detected_at, c.block_number AS head_block \
         FROM deposits d LEFT JOIN chain_cursors c ON c.chain_id = d.chain_id \
         WHERE d.invoice_id IN ({placeholders}) ORDER BY d.block_number, d.log_index"
    );
    let mut query = sqlx::query_as::<_, PaymentRow>(sqlx::AssertSqlSafe(sql));
    for invoice in invoices {
        query = query.bind(Text(invoice.id));
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let by_id: std::collections::HashMap<Uuid, &Invoice> = invoices.iter().map(|i| (i.id, i)).collect();
    for row in rows {
        let invoice_id: Uuid = parse_column("deposits.invoice_id", &row.invoice_id)?;
        let Some(invoice) = by_id.get(&invoice_id) else { continue };
        let amount: crate::money::BaseUnits = parse_column("deposits.amount_base_units", &row.amount_base_units)?;
        let block = row.block_number as u64;
        let decimals = invoice
            .options
            .iter()
            .find(|o| o.is(row.chain_id as u64, &row.asset))
            .map_or(invoice.decimals, |o| o.decimals);
        found.entry(invoice_id).or_default().push(PaymentView {
            id: parse_column("deposits.id", &row.id)?,
            tx_hash: row.tx_hash,
            log_index: row.log_index,
            block_number: block,
            from_address: row.from_address,
            asset: row.asset,
            amount: amount.to_display(decimals),
            amount_base_units: amount,
            chain_id: row.chain_id as u64,
            confirmations: row.head_block.map(|head| (head as u64).saturating_sub(block) + 1).unwrap_or(0),
            state: row.state,
            detected_at: row.detected_at.div_euclid(1000),
        });
    }
    Ok(found)
}

/// The cursor of each chain `invoice` may be paid on (its own, then its options' other chains),
/// in that order: what its payments' confirmations are counted against.
#[tracing::instrument(skip(conn, invoice), fields(invoice_id = %invoice.id))]
pub async fn heads(conn: &mut Conn, invoice: &Invoice) -> Result<Vec<Option<u64>>, StoreError> {
    let mut chains = vec![invoice.chain_id];
    for option in &invoice.options {
        if !chains.contains(&option.chain_id) {
            chains.push(option.chain_id);
        }
    }
    let mut heads = Vec::with_capacity(chains.len());
    for chain_id in chains {
        heads.push(super::cursors::get(conn, chain_id).await?.map(|c| c.block_number));
    }
    Ok(heads)
}

/// An invoice by id, whoever owns it (for the watcher; the API always scopes by merchant).
#[tracing::instrument(skip(conn))]
pub async fn get_any(conn: &mut Conn, id: Uuid) -> Result<Option<Invoice>, StoreError> {
    let row: Option<InvoiceRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM invoices WHERE id = $1")))
            .bind(Text(id))
            .fetch_optional(&mut *conn)
            .await?;
    complete_opt(conn, row).await
}

/// The invoice created for a deposit address (static addresses have several: use `static_addresses`).
#[tracing::instrument(skip(conn))]
pub async fn by_deposit_address(conn: &mut Conn, deposit_address_id: Uuid) -> Result<Option<Invoice>, StoreError> {
    let row: Option<InvoiceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM invoices WHERE deposit_address_id = $1 AND static_address_id IS NULL"
    )))
    .bind(Text(deposit_address_id))
    .fetch_optional(&mut *conn)
    .await?;
    complete_opt(conn, row).await
}

/// Writes the payment state of an invoice (status, flags, amount paid, finished time), but only
/// if its status and amount paid are still what `read` saw: an optimistic lock. Between the read
/// and this write another transaction (expiry, cancel, another daemon) may have changed it; on
/// PostgreSQL's READ COMMITTED that would otherwise be a lost update. Such a race is a
/// [`StoreError::Conflict`]: the caller's transaction rolls back and its (idempotent) step is
/// redone with fresh data.
#[tracing::instrument(skip_all, fields(invoice_id = %invoice.id))]
pub async fn update_payment_state(conn: &mut Conn, read: &Invoice, invoice: &Invoice) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE invoices SET status = $1, payment_flags = $2, amount_paid_base_units = $3, finished_at = $4, updated_at = $5 \
         WHERE id = $6 AND status = $7 AND amount_paid_base_units = $8",
    )
    .bind(invoice.status)
    .bind(flags_column(&invoice.payment_flags))
    .bind(invoice.amount_paid_base_units)
    .bind(invoice.finished_at)
    .bind(now_ms())
    .bind(Text(invoice.id))
    .bind(read.status)
    .bind(read.amount_paid_base_units)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Conflict("invoice changed concurrently; retry"));
    }
    // A multi-option invoice: each option whose paid amount moved, by the same compare-and-set.
    for (position, (before, after)) in read.options.iter().zip(&invoice.options).enumerate() {
        if before.amount_paid_base_units == after.amount_paid_base_units {
            continue;
        }
        let done = sqlx::query(
            "UPDATE invoice_payment_options SET amount_paid_base_units = $1 \
             WHERE invoice_id = $2 AND option_index = $3 AND amount_paid_base_units = $4",
        )
        .bind(after.amount_paid_base_units)
        .bind(Text(invoice.id))
        .bind(position as i64)
        .bind(before.amount_paid_base_units)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict("invoice changed concurrently; retry"));
        }
    }
    Ok(())
}

/// Writes a merchant's mark (`invoice.mark`, which must be set) and the status and finished time
/// it gives, but only if the invoice's status, amount paid and mark are still what `read` saw
/// (the compare-and-set of [`update_payment_state`]): a deposit confirming, an expiry or another
/// mark committed in between makes this return false, and the caller decides again on fresh
/// data. Flags and the amount paid are never written here: a mark moves no money.
#[tracing::instrument(skip_all, fields(invoice_id = %invoice.id))]
pub async fn set_mark(conn: &mut Conn, read: &Invoice, invoice: &Invoice) -> Result<bool, StoreError> {
    let mark = invoice.mark.as_ref().ok_or_else(|| StoreError::Corrupt("set_mark needs a mark".into()))?;
    let done = sqlx::query(
        "UPDATE invoices SET status = $1, finished_at = $2, updated_at = $3, marked_status = $4, marked_reason = $5, \
         marked_at = $6, marked_by_key_id = $7, marked_by = $8 \
         WHERE id = $9 AND status = $10 AND amount_paid_base_units = $11 AND COALESCE(marked_status, '') = $12",
    )
    .bind(invoice.status)
    .bind(invoice.finished_at)
    .bind(now_ms())
    .bind(mark.status)
    .bind(&mark.reason)
    .bind(mark.marked_at)
    .bind(Text(mark.by_key_id))
    .bind(&mark.by)
    .bind(Text(invoice.id))
    .bind(read.status)
    .bind(read.amount_paid_base_units)
    .bind(read.mark.as_ref().map(|m| m.status.as_str()).unwrap_or(""))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores the payer's answers to the invoice's questions (validated by the caller).
#[tracing::instrument(skip(conn, answers))]
pub async fn set_answers(conn: &mut Conn, id: Uuid, answers: &[String]) -> Result<(), StoreError> {
    sqlx::query("UPDATE invoices SET answers = $1, updated_at = $2 WHERE id = $3")
        .bind(serde_json::json!(answers).to_string())
        .bind(now_ms())
        .bind(Text(id))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How many invoices are in each status (for the `depositd_invoices` gauge).
#[tracing::instrument(skip(conn))]
pub async fn count_by_status(conn: &mut Conn) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as("SELECT status, COUNT(*) FROM invoices GROUP BY status").fetch_all(&mut *conn).await?)
}

/// Payments in `asset` on chain `chain_id` that may still arrive: open invoices (pending or
/// processing) and active static addresses in it.
#[tracing::instrument(skip(conn))]
pub async fn open_in_asset(conn: &mut Conn, chain_id: u64, asset: &str) -> Result<(i64, i64), StoreError> {
    let (invoices,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM invoices WHERE chain_id = $1 AND UPPER(asset) = UPPER($2) \
         AND status IN ('pending', 'processing')",
    )
    .bind(chain_id as i64)
    .bind(asset)
    .fetch_one(&mut *conn)
    .await?;
    let (statics,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM static_addresses WHERE chain_id = $1 AND UPPER(asset) = UPPER($2) AND status = 'active'",
    )
    .bind(chain_id as i64)
    .bind(asset)
    .fetch_one(&mut *conn)
    .await?;
    Ok((invoices, statics))
}
