//! Writes the upgrade test's fixtures (`tests/fixtures/upgrade/`): a database on each backend
//! holding real money-path history, written by *this* commit's own code, dumped as plain SQL, and
//! a manifest of what it holds. `tests/it/upgrade.rs` loads the dumps into a fresh database,
//! migrates them with the current code and checks that nothing was lost.
//!
//! ```sh
//! # at the released commit (anvil from node_modules/, PostgreSQL at TEST_POSTGRES_URL,
//! # the sqlite3 and pg_dump binaries on PATH):
//! cargo run --example upgrade_fixture -- tests/fixtures/upgrade
//! ```
//!
//! The history is driven the way production drives it: the real API in-process over HTTP (invoice,
//! static address, webhook endpoint, payout and refund creation, cancellation, idempotency keys),
//! anvil paying the invoices, the real watcher crediting them, the real settler sweeping,
//! forwarding a pass-through invoice and sending a payout and a refund, the real expiry task and
//! the real webhook worker delivering to a local receiver. Only the merchants and their API keys
//! are written straight to the store, as the operator's CLI does.
//!
//! Per backend it writes `<backend>.sql` (`sqlite3 DB .dump`, or `pg_dump --inserts --no-owner
//! --no-privileges`) and `<backend>.json`, the manifest: the API keys' plaintexts (test keys of a
//! throwaway database), the resources as this commit's API returned them, every ledger entry with
//! its postings, every account's balance and every table's row count.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, bail, ensure};
use depositd_api::{AppState, Application};
use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::chain_tx::{Purpose, TxState};
use depositd_core::config::{ChainConfig, Config, TokenConfig};
use depositd_core::ledger;
use depositd_core::store::{Store, api_keys, chain_txs, merchants};
use depositd_core::wallet::HdWallet;
use depositd_settler::Settler;
use depositd_testkit::chain::{TestChain, payer_address};
use depositd_testkit::db::{TestDb, merchant_with_key};
use depositd_testkit::webhooks::Receiver;
use depositd_watcher::ChainWatcher;
use depositd_webhooks::Deliverer;
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

const CONFIRMATIONS: u64 = 2;
/// EIP-55's own example address: where the fixture's payouts go.
const PAYOUT_DESTINATION: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "tests/fixtures/upgrade".into()));
    std::fs::create_dir_all(&out)?;
    let commit = git(&["rev-parse", "HEAD"])?;
    // Whether the code that wrote the data differs from the commit (the generator and the tests
    // themselves do not count).
    let dirty =
        !git(&["status", "--porcelain", "--untracked-files=no", "--", ".", ":!examples", ":!tests"])?.is_empty();
    for backend in ["sqlite", "postgres"] {
        let db = match backend {
            "sqlite" => TestDb::try_sqlite()?,
            _ => TestDb::postgres().await,
        };
        let mut manifest = generate(&db).await.with_context(|| format!("generating on {backend}"))?;
        manifest.insert("backend".into(), backend.into());
        manifest.insert("written_by_commit".into(), commit.clone().into());
        manifest.insert("worktree_dirty".into(), dirty.into());
        let sql = dump(&db)?;
        std::fs::write(out.join(format!("{backend}.sql")), sql)?;
        std::fs::write(out.join(format!("{backend}.json")), serde_json::to_string_pretty(&manifest)? + "\n")?;
        println!("{backend}: wrote {}", out.join(format!("{backend}.sql")).display());
    }
    Ok(())
}

fn git(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git").args(args).output().context("git runs")?;
    ensure!(output.status.success(), "git {args:?} failed");
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// The database as plain SQL text, by the backend's own dump tool.
fn dump(db: &TestDb) -> anyhow::Result<String> {
    let url = db.url.expose();
    let output = if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        Command::new("sqlite3").arg(path).arg(".dump").output().context("sqlite3 runs")?
    } else {
        Command::new("pg_dump")
            .args(["--inserts", "--no-owner", "--no-privileges", "--dbname"])
            .arg(url)
            .output()
            .context("pg_dump runs")?
    };
    ensure!(output.status.success(), "the dump failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?)
}

/// The API in-process, the chain and the workers.
struct World {
    chain: TestChain,
    usdc: Address,
    config: ChainConfig,
    state: AppState,
    base: String,
    client: reqwest::Client,
    watcher: ChainWatcher,
    settler: Settler,
    shutdown: CancellationToken,
}

impl World {
    async fn request(
        &self,
        method: reqwest::Method,
        key: &str,
        path: &str,
        body: Option<Value>,
        idem: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).header("x-api-key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(idem) = idem {
            request = request.header("idempotency-key", idem);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, key: &str, path: &str, body: Value, idem: Option<&str>) -> anyhow::Result<Value> {
        let (status, body) = self.request(reqwest::Method::POST, key, path, Some(body), idem).await;
        ensure!(status == 200 || status == 201, "POST {path}: {status} {body}");
        Ok(body)
    }

    async fn get(&self, key: &str, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.request(reqwest::Method::GET, key, path, None, None).await;
        ensure!(status == 200, "GET {path}: {status} {body}");
        Ok(body)
    }

    async fn invoice(&self, key: &str, body: Value) -> anyhow::Result<Value> {
        self.post(key, "/api/v1/invoices", body, None).await
    }

    async fn catch_up(&mut self) -> anyhow::Result<()> {
        for _ in 0..100 {
            if !self.watcher.tick().await? {
                return Ok(());
            }
        }
        bail!("the watcher did not catch up")
    }

    /// Watcher, settler, one more block; until `done` holds.
    async fn settle_until(&mut self, what: &str, done: impl AsyncFn(&World) -> bool) -> anyhow::Result<()> {
        for _ in 0..60 {
            self.catch_up().await?;
            self.settler.tick().await?;
            if done(self).await {
                return Ok(());
            }
            self.chain.mine(1).await;
        }
        bail!("gave up waiting for {what}")
    }

    async fn open_transactions(&self) -> usize {
        let mut conn = self.state.store.conn().await.unwrap();
        chain_txs::open(&mut conn, self.config.chain_id).await.unwrap().len()
    }
}

fn id(resource: &Value) -> &str {
    resource["id"].as_str().expect("a resource has an id")
}

fn pay_address(invoice: &Value) -> &str {
    invoice["pay"]["address"].as_str().expect("an invoice has a pay address")
}

async fn generate(db: &TestDb) -> anyhow::Result<Map<String, Value>> {
    let chain = TestChain::start(&[("USD Coin", "USDC"), ("Tether USD", "USDT")]).await?;
    let (usdc, usdt) = (chain.tokens[0], chain.tokens[1]);
    let mut config = Config::load(None, Some(db.url.expose()))?;
    let chain_config = &mut config.chains[0];
    chain_config.rpc_urls = vec![chain.rpc_url().into()];
    chain_config.confirmations = CONFIRMATIONS;
    chain_config.start_block = Some(0);
    chain_config.tokens = [("USDC", usdc), ("USDT", usdt)]
        .iter()
        .map(|(symbol, address)| TokenConfig { symbol: (*symbol).into(), address: *address, decimals: 6 })
        .collect();
    let chain_config = chain_config.clone();
    config.settings.chains.default_asset = "USDC".into();
    for (symbol, rate) in [("EUR", "1.08"), ("ETH", "3000")] {
        config.settings.pricing.static_usd_rates.insert(symbol.into(), rate.parse()?);
    }
    config.settings.wallet.mnemonic = Some(HdWallet::generate_mnemonic());
    config.settings.settler.bump_after_blocks = 2;
    config.settings.webhooks.allow_http = true;
    config.settings.webhooks.allow_private_targets = true;
    config.settings.webhooks.retry_schedule_secs = vec![0, 0, 0];
    config.settings.invoices.allow_http_urls = true;
    config.settings.invoices.address_pool_size = 4;

    let store = db.connect(8).await?;
    let wallet = Arc::new(HdWallet::from_mnemonic(&config.settings.wallet.mnemonic()?)?);
    let treasury = wallet.treasury_address();
    let state = AppState::new(store.clone(), Arc::new(config), wallet.clone(), depositd_core::metrics::Metrics::new());
    let app = Application::build(state.clone(), "127.0.0.1:0".parse()?).await?;
    let base = format!("http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    // A few pre-derived invoice addresses left unused in the pool.
    depositd_api::address_pool::fill(&state, 4).await?;
    depositd::dev::fund_treasury(&store, &chain_config, treasury, 10_000_000_000_000_000_000).await?;
    let public_url = state.config.settings.api.public_url.clone();
    let watcher = ChainWatcher::new(
        chain_config.clone(),
        store.clone(),
        public_url.clone(),
        state.sessions.clone(),
        state.metrics.clone(),
    )?;
    let settler = Settler::new(
        chain_config.clone(),
        store.clone(),
        state.wallet.clone(),
        state.config.settings.settler.clone(),
        public_url,
        state.sessions.clone(),
        state.metrics.clone(),
    )?;
    let mut w = World {
        chain,
        usdc,
        config: chain_config,
        state,
        base,
        client: reqwest::Client::new(),
        watcher,
        settler,
        shutdown,
    };

    // Merchants and keys, as `depositd merchant create` / `depositd key create` write them.
    let (shop_a, key_a) = merchant_with_key(&store, "Upgrade Shop A", Decimal::ONE, &Scope::ALL).await?;
    let (shop_b, key_b) = merchant_with_key(&store, "Upgrade Shop B", "0.5".parse()?, &Scope::ALL).await?;
    let (shop_c, key_c) = merchant_with_key(&store, "Upgrade Shop C", "2".parse()?, &Scope::ALL).await?;
    let (key_a, key_b, key_c) =
        (key_a.expose_secret().to_owned(), key_b.expose_secret().to_owned(), key_c.expose_secret().to_owned());
    {
        // Operator settings: a per-asset fee for C, checkout origins for A.
        let mut conn = store.conn().await?;
        let fee = merchants::AssetFee { asset: "USDT".into(), percent: "1.5".parse()?, fixed: "0.1".parse()? };
        merchants::set_asset_fee(&mut conn, shop_c.id, &fee).await?;
        merchants::set_checkout_origins(&mut conn, shop_a.id, &["https://shop-a.example.com".into()]).await?;
    }
    let revoked = {
        let mut conn = store.conn().await?;
        let (record, plaintext) =
            api_keys::create(&mut conn, shop_a.id, KeyMode::Live, &[Scope::ALL[0]], Some("old key")).await?;
        api_keys::revoke(&mut conn, record.id).await?;
        plaintext.expose_secret().to_owned()
    };

    // Webhook endpoints at a local receiver: every event for A, paid invoices for B.
    let receiver = Receiver::start().await;
    let endpoint_a = w
        .post(&key_a, "/api/v1/webhook-endpoints", json!({"url": receiver.url("/a"), "enabled_events": []}), None)
        .await?;
    let endpoint_b = w
        .post(
            &key_b,
            "/api/v1/webhook-endpoints",
            json!({"url": receiver.url("/b"), "enabled_events": ["invoice.paid"], "description": "paid only"}),
            None,
        )
        .await?;

    // B signs its invoices' callbacks with a callback secret.
    w.post(&key_b, "/api/v1/callback-secret", json!({}), None).await?;

    // Invoices of every kind.
    let paid = w
        .post(
            &key_a,
            "/api/v1/invoices",
            json!({"amount": "19.99", "external_id": "up-paid", "description": "Two tickets",
                   "customer_id": "cust-1", "customer_email": "payer@example.com",
                   "metadata": {"order": "A-1"}}),
            Some("upgrade-invoice-1"),
        )
        .await?;
    let eth = w.invoice(&key_a, json!({"amount": "30", "asset": "ETH", "external_id": "up-eth"})).await?;
    let underpaid = w.invoice(&key_a, json!({"amount": "10", "external_id": "up-underpaid"})).await?;
    let overpaid = w.invoice(&key_a, json!({"amount": "10", "asset": "USDT", "external_id": "up-overpaid"})).await?;
    let pending =
        w.invoice(&key_a, json!({"amount": "10", "external_id": "up-pending", "questions": ["Seat?"]})).await?;
    let expired = w.invoice(&key_a, json!({"amount": "5", "expires_in": 1, "external_id": "up-expired"})).await?;
    let cancelled = w.invoice(&key_a, json!({"amount": "7", "external_id": "up-cancelled"})).await?;
    w.post(&key_a, &format!("/api/v1/invoices/{}/cancel", id(&cancelled)), json!({}), None).await?;
    let rail = w
        .post(
            &key_a,
            "/api/v1/static-addresses",
            json!({"customer_id": "player-1", "metadata": {"tier": "gold"}}),
            Some("upgrade-rail-1"),
        )
        .await?;
    let eur = w.invoice(&key_b, json!({"amount": "12.5", "currency": "EUR", "external_id": "up-b-eur"})).await?;
    let forward_to = PrivateKeySigner::random().address();
    let passthrough = w
        .invoice(
            &key_b,
            json!({"amount": "50", "currency": "USD", "asset": "USDC", "external_id": "up-b-pass",
                   "receiver_override": true, "receiver_override_address": forward_to.to_checksum(None)}),
        )
        .await?;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    ensure!(depositd_api::expiry::expire_once(&w.state).await? == 1, "one invoice expired");

    // The payer pays; the watcher confirms and credits.
    w.chain.pay_token(usdc, pay_address(&paid), 19_990_000).await;
    w.chain.pay_native(pay_address(&eth), 10_000_000_000_000_000).await;
    w.chain.pay_token(usdc, pay_address(&underpaid), 4_000_000).await;
    w.chain.pay_token(usdt, pay_address(&overpaid), 12_000_000).await;
    w.chain.pay_token(usdc, rail["address"].as_str().unwrap(), 7_000_000).await;
    w.chain.pay_token(usdc, pay_address(&eur), 13_500_000).await;
    w.chain.pay_token(usdc, pay_address(&passthrough), 50_000_000).await;
    w.chain.mine(CONFIRMATIONS).await;
    w.catch_up().await?;

    // The settler sweeps and forwards the pass-through invoice.
    let paid_address: Address = pay_address(&paid).parse()?;
    w.settle_until("the sweeps and the forward", async |w: &World| {
        w.open_transactions().await == 0
            && w.chain.token_balance(w.usdc, paid_address).await.is_zero()
            && !w.chain.token_balance(w.usdc, forward_to).await.is_zero()
    })
    .await?;

    // A payout and a refund, sent and confirmed; a payout cancelled; a payout left pending.
    let payout = w
        .post(
            &key_a,
            "/api/v1/payouts",
            json!({"asset": "USDC", "amount": "5", "destination": PAYOUT_DESTINATION,
                   "external_id": "up-payout", "metadata": {"batch": "7"}}),
            Some("upgrade-payout-1"),
        )
        .await?;
    let refund = w
        .post(
            &key_a,
            &format!("/api/v1/invoices/{}/refunds", id(&paid)),
            json!({"amount": "2", "address": payer_address().to_checksum(None)}),
            Some("upgrade-refund-1"),
        )
        .await?;
    let (payout_id, refund_id) = (id(&payout).to_owned(), id(&refund).to_owned());
    let key = key_a.clone();
    w.settle_until("the payout and the refund", async move |w: &World| {
        let mut confirmed = true;
        for id in [&payout_id, &refund_id] {
            let body = w.get(&key, &format!("/api/v1/payouts/{id}")).await.unwrap();
            confirmed &= body["status"] == "confirmed";
        }
        confirmed && w.open_transactions().await == 0
    })
    .await?;
    let cancelled_payout = w
        .post(
            &key_a,
            "/api/v1/payouts",
            json!({"asset": "USDC", "amount": "1", "destination": PAYOUT_DESTINATION, "external_id": "up-payout-cancelled"}),
            None,
        )
        .await?;
    w.post(&key_a, &format!("/api/v1/payouts/{}/cancel", id(&cancelled_payout)), json!({}), None).await?;
    let pending_payout = w
        .post(
            &key_a,
            "/api/v1/payouts",
            json!({"asset": "USDC", "amount": "3", "destination": PAYOUT_DESTINATION, "external_id": "up-payout-pending"}),
            Some("upgrade-payout-2"),
        )
        .await?;

    // A payment seen but not yet confirmed: the last block on the chain, never buried.
    let detected = w.invoice(&key_a, json!({"amount": "5", "external_id": "up-detected"})).await?;
    w.chain.pay_token(usdc, pay_address(&detected), 5_000_000).await;
    w.catch_up().await?;

    // The webhook worker delivers what is queued.
    let deliverer =
        Deliverer::new(store.clone(), &wallet, w.state.config.settings.webhooks.clone(), w.state.metrics.clone());
    for _ in 0..50 {
        if deliverer.tick().await? == 0 {
            break;
        }
    }
    ensure!(!receiver.hits().is_empty(), "webhooks were delivered");

    // Everything as this commit's API shows it.
    let mut invoices = Map::new();
    for (label, invoice) in [
        ("paid", &paid),
        ("eth", &eth),
        ("underpaid", &underpaid),
        ("overpaid", &overpaid),
        ("pending", &pending),
        ("expired", &expired),
        ("cancelled", &cancelled),
        ("detected", &detected),
    ] {
        invoices.insert(label.into(), w.get(&key_a, &format!("/api/v1/invoices/{}", id(invoice))).await?);
    }
    for (label, invoice) in [("eur", &eur), ("passthrough", &passthrough)] {
        invoices.insert(label.into(), w.get(&key_b, &format!("/api/v1/invoices/{}", id(invoice))).await?);
    }
    let rail_invoices = w.get(&key_a, "/api/v1/invoices?customer_id=player-1").await?;
    ensure!(rail_invoices["data"].as_array().map(Vec::len) == Some(1), "one invoice for the static deposit");
    invoices.insert("static_deposit".into(), rail_invoices["data"][0].clone());
    let mut payouts = Map::new();
    for (label, p) in
        [("sent", &payout), ("refund", &refund), ("cancelled", &cancelled_payout), ("pending", &pending_payout)]
    {
        payouts.insert(label.into(), w.get(&key_a, &format!("/api/v1/payouts/{}", id(p))).await?);
    }
    let mut deposits = Map::new();
    for (label, key) in [("A", &key_a), ("B", &key_b)] {
        let mut list = w.get(key, "/api/v1/deposits?limit=100").await?["data"].clone();
        for deposit in list.as_array_mut().into_iter().flatten() {
            // The entries are in `ledger_entries` already.
            deposit.as_object_mut().map(|d| d.remove("ledger_entries"));
        }
        deposits.insert(label.into(), list);
    }
    let mut balances = Map::new();
    for (label, key) in [("A", &key_a), ("B", &key_b), ("C", &key_c)] {
        balances.insert(label.into(), w.get(key, "/api/v1/balances").await?);
    }
    let mut endpoints = Map::new();
    endpoints.insert("A".into(), w.get(&key_a, &format!("/api/v1/webhook-endpoints/{}", id(&endpoint_a))).await?);
    endpoints.insert("B".into(), w.get(&key_b, &format!("/api/v1/webhook-endpoints/{}", id(&endpoint_b))).await?);
    let events_a = w.get(&key_a, "/api/v1/events?limit=100").await?;
    let rail_now = w.get(&key_a, &format!("/api/v1/static-addresses/{}", id(&rail))).await?;

    let mut conn = store.conn().await?;
    let report = ledger::verify::verify(&mut conn).await?;
    ensure!(report.is_ok(), "the ledger verifies: {:?}", report.problems);
    let entry_ids: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM ledger_entries ORDER BY id").fetch_all(&mut *conn).await?;
    let mut entries = Vec::new();
    for (entry_id,) in entry_ids {
        let (entry, postings) = ledger::entry(&mut conn, entry_id.parse()?).await?.context("the entry reads back")?;
        entries.push(json!({
            "id": entry.id, "type": entry.entry_type.as_str(), "idempotency_key": entry.idempotency_key,
            "reverses": entry.reverses, "merchant_id": entry.refs.merchant_id, "invoice_id": entry.refs.invoice_id,
            "deposit_id": entry.refs.deposit_id, "payout_id": entry.refs.payout_id,
            "transaction_id": entry.refs.transaction_id, "memo": entry.memo, "created_at": entry.created_at,
            "postings": postings.iter().map(|p| json!({
                "owner": p.account.owner.key(), "kind": p.account.kind.as_str(), "chain_id": p.account.chain_id,
                "asset": p.account.asset, "side": p.side.as_str(), "amount": p.amount.to_string(),
                "balance_after": p.balance_after.to_string(),
            })).collect::<Vec<_>>(),
        }));
    }
    let accounts: Vec<(String, String, i64, String, String)> = sqlx::query_as(
        "SELECT owner, kind, chain_id, asset, balance_base_units FROM ledger_accounts ORDER BY owner, kind, chain_id, asset",
    )
    .fetch_all(&mut *conn)
    .await?;
    let accounts: Vec<Value> = accounts
        .into_iter()
        .map(|(owner, kind, chain_id, asset, balance)| {
            json!({"owner": owner, "kind": kind, "chain_id": chain_id, "asset": asset, "balance": balance})
        })
        .collect();
    let mut counts = Map::new();
    for table in tables(&store).await? {
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(&mut *conn).await?;
        counts.insert(table, n.into());
    }
    let (last_migration,): (i64,) =
        sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(&mut *conn).await?;
    drop(conn);
    let transactions: Vec<Value> = {
        let mut conn = store.conn().await?;
        let ids: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM chain_transactions ORDER BY id").fetch_all(&mut *conn).await?;
        let mut all = Vec::new();
        for (tx_id,) in ids {
            let tx = chain_txs::get(&mut conn, tx_id.parse()?).await?.context("the transaction reads back")?;
            all.push(json!({"id": tx.id, "purpose": tx.purpose.as_str(), "state": tx.state.as_str(),
                "signer_address": tx.signer_address, "to_address": tx.to_address, "asset": tx.asset,
                "value": tx.value.to_string(), "nonce": tx.nonce, "payout_id": tx.payout_id,
                "invoice_id": tx.invoice_id, "mined_tx_hash": tx.mined_tx_hash,
                "gas_cost": tx.gas_cost.map(|g| g.to_string())}));
        }
        let open: Vec<(Purpose, TxState)> =
            chain_txs::open(&mut conn, w.config.chain_id).await?.iter().map(|t| (t.purpose, t.state)).collect();
        ensure!(open == [(Purpose::Payout, TxState::Intent)], "only the pending payout's intent is open: {open:?}");
        all
    };

    w.shutdown.cancel();
    store.close().await;
    let merchants = json!({
        "A": {"id": shop_a.id, "name": shop_a.name, "api_key": key_a, "revoked_api_key": revoked},
        "B": {"id": shop_b.id, "name": shop_b.name, "api_key": key_b},
        "C": {"id": shop_c.id, "name": shop_c.name, "api_key": key_c},
    });
    let mut manifest = Map::new();
    manifest.insert("last_migration".into(), last_migration.into());
    manifest.insert("merchants".into(), merchants);
    manifest.insert("invoices".into(), invoices.into());
    manifest.insert("static_address".into(), rail_now);
    manifest.insert("deposits".into(), deposits.into());
    manifest.insert("payouts".into(), payouts.into());
    manifest.insert("chain_transactions".into(), transactions.into());
    manifest.insert("balances".into(), balances.into());
    manifest.insert("ledger_entries".into(), entries.into());
    manifest.insert("ledger_accounts".into(), accounts.into());
    manifest.insert(
        "ledger_verify".into(),
        json!({"entries": report.entries, "postings": report.postings, "accounts": report.accounts, "deposits": report.deposits}),
    );
    manifest.insert("webhook_endpoints".into(), endpoints.into());
    let events_a: Vec<Value> =
        events_a["data"].as_array().into_iter().flatten().map(|e| json!({"id": e["id"], "type": e["type"]})).collect();
    manifest.insert("events_of_A".into(), events_a.into());
    manifest.insert("counts".into(), counts.into());
    Ok(manifest)
}

/// The database's tables (without sqlx's own), by name.
async fn tables(store: &Store) -> anyhow::Result<Vec<String>> {
    let sql = match store.backend() {
        depositd_core::store::Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        }
        depositd_core::store::Backend::Postgres => {
            "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
        }
    };
    let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(store.pool()).await?;
    Ok(rows.into_iter().map(|(name,)| name).filter(|name| name != "_sqlx_migrations").collect())
}
