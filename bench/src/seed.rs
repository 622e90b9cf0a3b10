//! Data the benchmarks need: a merchant with an API key (`depositd_testkit::db`), invoices made
//! by the real API, and large watched sets made fast: template invoices created through the API,
//! then copied in bulk with multi-row `INSERT ... SELECT` statements that change only what must
//! differ (ids, address, HD index, session token). Columns are read from the live schema, so a
//! column added by a later migration is copied from the template too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use depositd_api::{AppState, Application};
use depositd_core::api_key::Scope;
use depositd_core::config::Config;
use depositd_core::store::{Backend, Store};
use depositd_core::wallet::HdWallet;
use depositd_testkit::db::merchant_with_key;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Rows per `INSERT` statement, and statements per transaction.
const ROWS_PER_STATEMENT: usize = 1000;
const STATEMENTS_PER_TRANSACTION: usize = 20;

/// A merchant (no fee) and an API key with every scope. The key is returned as a secret and
/// never printed.
pub async fn merchant(store: &Store) -> anyhow::Result<SecretString> {
    let (_, key) = merchant_with_key(store, "Bench Shop", rust_decimal::Decimal::ZERO, &Scope::ALL).await?;
    Ok(key)
}

/// A merchant API client.
#[derive(Clone)]
pub struct ApiClient {
    pub base: String,
    key: SecretString,
    pub http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, key: SecretString) -> ApiClient {
        let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("an HTTP client");
        ApiClient { base: base.to_owned(), key, http }
    }

    pub fn key(&self) -> &str {
        self.key.expose_secret()
    }

    /// `POST /api/v1/invoices` with a fresh `Idempotency-Key`; the created invoice.
    pub async fn create_invoice(&self, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}/api/v1/invoices", self.base))
            .header("x-api-key", self.key())
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let invoice: Value = response.json().await?;
        if status.as_u16() != 201 {
            bail!("creating an invoice answered {status}: {}", invoice["error"]);
        }
        Ok(invoice)
    }

    /// `POST /api/v1/webhook-endpoints` for `events`.
    pub async fn webhook_endpoint(&self, url: &str, events: &[&str]) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/api/v1/webhook-endpoints", self.base))
            .header("x-api-key", self.key())
            .json(&json!({"url": url, "enabled_events": events}))
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            bail!("creating a webhook endpoint answered {}", response.status());
        }
        Ok(())
    }
}

/// The API served in-process (on a free port) until dropped, for making template invoices
/// before any daemon runs.
pub struct InProcessApi {
    pub base: String,
    shutdown: CancellationToken,
}

impl InProcessApi {
    pub async fn start(config: Config, store: Store) -> anyhow::Result<InProcessApi> {
        let wallet = Arc::new(HdWallet::from_mnemonic(&config.settings.wallet.mnemonic()?)?);
        let state = AppState::new(store, Arc::new(config), wallet, depositd_core::metrics::Metrics::new());
        let app = Application::build(state, "127.0.0.1:0".parse()?).await?;
        let base = format!("http://{}", app.local_addr());
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run(shutdown.clone()));
        Ok(InProcessApi { base, shutdown })
    }
}

impl Drop for InProcessApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An invoice created through the API, to copy.
#[derive(Debug, Clone)]
pub struct Template {
    pub invoice_id: String,
    pub deposit_address_id: String,
    /// What paying it in full takes.
    pub amount_base_units: alloy::primitives::U256,
}

/// Creates one template invoice per asset (10 USD, expiring in 30 days) through the API.
pub async fn templates(api: &ApiClient, store: &Store, assets: &[&str]) -> anyhow::Result<Vec<Template>> {
    let mut out = Vec::new();
    for asset in assets {
        let invoice = api
            .create_invoice(&json!({"amount": "10", "currency": "USD", "asset": asset, "expires_in": 2_592_000_000u64}))
            .await?;
        let invoice_id = invoice["id"].as_str().context("an invoice id")?.to_owned();
        let (deposit_address_id,): (String,) = sqlx::query_as("SELECT deposit_address_id FROM invoices WHERE id = $1")
            .bind(&invoice_id)
            .fetch_one(store.pool())
            .await?;
        let amount = invoice["pay"]["amount_base_units"].as_str().context("pay.amount_base_units")?.parse()?;
        out.push(Template { invoice_id, deposit_address_id, amount_base_units: amount });
    }
    Ok(out)
}

/// Adds `count` watched addresses at HD indices `first_index..`, each with an invoice copied from
/// `templates[index % templates.len()]`; `address(index)` gives each address. Moves the HD
/// counter past them so the API never reuses an index. Returns how long the inserts took.
pub async fn watch_many(
    store: &Store,
    templates: &[Template],
    first_index: u64,
    count: u64,
    address: impl Fn(u64) -> alloy::primitives::Address,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let address_columns = columns(store, "deposit_addresses").await?;
    let invoice_columns = columns(store, "invoices").await?;
    let mut tx = store.begin().await?;
    let mut statements = 0;
    let indices: Vec<u64> = (first_index..first_index + count).collect();
    for chunk in indices.chunks(ROWS_PER_STATEMENT) {
        // One statement per template in the chunk: each copies its own template row.
        for (t, template) in templates.iter().enumerate() {
            let mut addresses = Vec::new();
            let mut invoices = Vec::new();
            for index in chunk.iter().copied().filter(|i| *i as usize % templates.len() == t) {
                let address_id = Uuid::now_v7().to_string();
                let checksummed = address(index).to_checksum(None);
                addresses.push(vec![format!("'{address_id}'"), format!("'{checksummed}'"), index.to_string()]);
                invoices.push(vec![
                    format!("'{}'", Uuid::now_v7()),
                    format!("'{address_id}'"),
                    format!("'{checksummed}'"),
                    format!("'{}'", Uuid::new_v4().simple()),
                ]);
            }
            if addresses.is_empty() {
                continue;
            }
            let sql = clone_rows_sql(
                "deposit_addresses",
                &address_columns,
                &template.deposit_address_id,
                &["id", "address", "derivation_index"],
                &addresses,
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
            let sql = clone_rows_sql(
                "invoices",
                &invoice_columns,
                &template.invoice_id,
                &["id", "deposit_address_id", "address", "session_token"],
                &invoices,
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
            statements += 1;
        }
        if statements >= STATEMENTS_PER_TRANSACTION {
            tx.commit().await?;
            tx = store.begin().await?;
            statements = 0;
        }
    }
    sqlx::query(
        "UPDATE counters SET value = (SELECT MAX(derivation_index) FROM deposit_addresses) \
         WHERE name = 'deposit_address_index'",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if store.backend() == Backend::Postgres {
        // Fresh statistics, as autovacuum would give a database that grew to this size.
        sqlx::query("ANALYZE").execute(store.pool()).await?;
    }
    Ok(started.elapsed())
}

/// The columns of `table`, in order, from the live schema.
async fn columns(store: &Store, table: &str) -> anyhow::Result<Vec<String>> {
    let sql = match store.backend() {
        Backend::Sqlite => "SELECT name FROM pragma_table_info($1) ORDER BY cid",
        Backend::Postgres => {
            "SELECT column_name::TEXT FROM information_schema.columns \
             WHERE table_name = $1 AND table_schema = current_schema() ORDER BY ordinal_position"
        }
    };
    let rows: Vec<(String,)> = sqlx::query_as(sql).bind(table).fetch_all(store.pool()).await?;
    anyhow::ensure!(!rows.is_empty(), "table {table} has no columns");
    Ok(rows.into_iter().map(|(c,)| c).collect())
}

/// `INSERT INTO table (all) SELECT <overrides from VALUES, the rest from the template row>`.
/// Values are SQL literals the harness made itself (UUIDs, checksummed addresses, integers).
/// `VALUES` columns are called column1, column2, ... on both SQLite and PostgreSQL.
fn clone_rows_sql(table: &str, all: &[String], template_id: &str, overrides: &[&str], rows: &[Vec<String>]) -> String {
    let select: Vec<String> = all
        .iter()
        .map(|column| match overrides.iter().position(|o| o == column) {
            Some(i) => format!("v.column{}", i + 1),
            None => format!("t.{column}"),
        })
        .collect();
    let values: Vec<String> = rows.iter().map(|r| format!("({})", r.join(", "))).collect();
    format!(
        "INSERT INTO {table} ({}) SELECT {} FROM (VALUES {}) AS v CROSS JOIN {table} t WHERE t.id = '{template_id}'",
        all.join(", "),
        select.join(", "),
        values.join(", ")
    )
}
