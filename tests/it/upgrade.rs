//! Upgrading in place, on both backends: a database written by the previous release (the dumps in
//! `tests/fixtures/upgrade/`, written by that release's own code; see the README there) is loaded
//! into a fresh database, opened the way the daemon opens it and migrated by the current code.
//! Every merchant, API key, invoice, deposit, ledger entry and posting, account balance, payout,
//! static address, outgoing transaction, webhook endpoint, event and idempotency record is still there: the same number
//! of rows, and the same values read back through the current store API and the current HTTP API.
//!
//! The manifest next to each dump (`<backend>.json`) is what the old code reported when it wrote
//! the database; the amounts and states below are what the generator did by construction.

use std::collections::BTreeSet;

use depositd_core::invoice::InvoiceStatus;
use depositd_core::ledger::verify::verify;
use depositd_core::ledger::{self, Account, AccountKind};
use depositd_core::payout::{PayoutKind, PayoutStatus};
use depositd_core::store::webhooks as store_webhooks;
use depositd_core::store::{Store, api_keys, chain_txs, deposits, invoices, merchants, payouts, static_addresses};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::Connection;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, both_backends};

both_backends!(a_database_of_the_previous_release_migrates_and_keeps_its_history);

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/upgrade");
const CHAIN_ID: u64 = 31337;

/// Tables a migration may rebuild (caches and coordination state, no history): their row counts
/// are not held to the fixture's. Every other table keeps every row.
const REBUILDABLE: &[&str] = &["block_hashes", "chain_fee_estimates", "leases"];

/// An invoice of the fixture, as the generator made it.
struct ExpectedInvoice {
    /// Its key in the manifest's `invoices`.
    label: &'static str,
    merchant: &'static str,
    status: &'static str,
    flags: &'static [&'static str],
    /// The amount and the amount paid, in base units.
    amount: u128,
    paid: u128,
}

const fn invoice(
    label: &'static str,
    merchant: &'static str,
    status: &'static str,
    flags: &'static [&'static str],
    amount: u128,
    paid: u128,
) -> ExpectedInvoice {
    ExpectedInvoice { label, merchant, status, flags, amount, paid }
}

const INVOICES: &[ExpectedInvoice] = &[
    // 19.99 USDC paid in full, then 2 USDC refunded.
    invoice("paid", "A", "partially_refunded", &[], 19_990_000, 19_990_000),
    // 30 USD at 3000 USD/ETH, paid in ETH.
    invoice("eth", "A", "paid", &[], 10_000_000_000_000_000, 10_000_000_000_000_000),
    invoice("underpaid", "A", "pending", &["underpaid"], 10_000_000, 4_000_000),
    invoice("overpaid", "A", "paid", &["overpaid"], 10_000_000, 12_000_000),
    invoice("pending", "A", "pending", &[], 10_000_000, 0),
    invoice("expired", "A", "expired", &[], 5_000_000, 0),
    invoice("cancelled", "A", "cancelled", &[], 7_000_000, 0),
    // Paid in the last block, never buried under the confirmations.
    invoice("detected", "A", "processing", &[], 5_000_000, 0),
    invoice("static_deposit", "A", "paid", &[], 7_000_000, 7_000_000),
    // 12.5 EUR at 1.08 USD/EUR.
    invoice("eur", "B", "paid", &[], 13_500_000, 13_500_000),
    invoice("passthrough", "B", "paid", &[], 50_000_000, 50_000_000),
];

/// The fixture's payouts by label: (kind, status, amount in base units).
const PAYOUTS: &[(&str, &str, &str, u128)] = &[
    ("sent", "payout", "confirmed", 5_000_000),
    ("refund", "refund", "confirmed", 2_000_000),
    ("cancelled", "payout", "cancelled", 1_000_000),
    ("pending", "payout", "pending", 3_000_000),
];

/// The fixture's dump and manifest for `db`'s backend.
fn fixture(db: &TestDb) -> (String, Value) {
    let read = |name: String| {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("{FIXTURES}/{name}: {e}"))
    };
    let manifest: Value = serde_json::from_str(&read(format!("{}.json", db.backend))).expect("the manifest is JSON");
    (read(format!("{}.sql", db.backend)), manifest)
}

/// Executes a dump in a fresh database, on a connection of its own (a PostgreSQL dump empties the
/// session's `search_path`). psql meta-commands (`\restrict`, `\connect`, ...) are psql's, not SQL:
/// they are left out.
async fn load(db: &TestDb, dump: &str) {
    let meta_command =
        |line: &str| line.strip_prefix('\\').is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase()));
    let sql: String = dump.lines().filter(|line| !meta_command(line)).flat_map(|line| [line, "\n"]).collect();
    let url = match db.backend {
        "sqlite" => format!("{}?mode=rwc", db.url.expose()),
        _ => db.url.expose().to_owned(),
    };
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect to the fresh database");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("the dump loads");
    conn.close().await.unwrap();
}

/// The migrations this build embeds, by version (the file names' prefixes).
fn embedded_versions(backend: &str) -> BTreeSet<i64> {
    let dir = format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| name.split('_').next().unwrap().parse().unwrap())
        .collect()
}

async fn applied_versions(store: &Store) -> BTreeSet<i64> {
    let succeeded: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(count(store, "_sqlx_migrations").await as usize, succeeded.len(), "every recorded migration succeeded");
    succeeded.into_iter().map(|(version,)| version).collect()
}

async fn count(store: &Store, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(store.pool())
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"));
    n
}

fn uuid(value: &Value) -> Uuid {
    value.as_str().unwrap_or_else(|| panic!("{value} is not a string")).parse().unwrap()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("{value} is not a string"))
}

async fn a_database_of_the_previous_release_migrates_and_keeps_its_history(db: TestDb) {
    let (dump, manifest) = fixture(&db);
    assert_eq!(manifest["backend"], db.backend);
    load(&db, &dump).await;

    // Opened as the daemon opens it: the schema is the old release's.
    let store = Store::connect(&db.url, 4).await.unwrap();
    let embedded = embedded_versions(db.backend);
    let applied = applied_versions(&store).await;
    assert_eq!(applied.last().copied(), manifest["last_migration"].as_i64(), "the old code's migrations");
    assert!(applied.is_subset(&embedded), "every old migration is still embedded, unchanged: {applied:?}");
    let pending: Vec<i64> = embedded.difference(&applied).copied().collect();
    // Whenever this build has a migration newer than the fixture's last, the database is behind
    // (and the daemon's readiness says so) until it migrates.
    let current = store.migrations_current().await.unwrap();
    if pending.is_empty() {
        assert!(current, "every embedded migration is recorded as applied");
    } else {
        // The upgrade under test: the build has migrations the old code never ran.
        assert!(
            !current,
            "migrations/{} has {pending:?} beyond the fixture's, yet the store says it is current: if this \
             build does not embed them, sqlx::migrate! read the directory before they were added (touch \
             core/src/store/mod.rs to rebuild)",
            db.backend
        );
    }
    let counts = manifest["counts"].as_object().unwrap();
    for (table, expected) in counts {
        assert_eq!(count(&store, table).await, expected.as_i64().unwrap(), "{table} as the fixture wrote it");
    }

    store.migrate().await.unwrap();
    assert!(store.migrations_current().await.unwrap());
    assert_eq!(applied_versions(&store).await, embedded);
    store.migrate().await.unwrap();

    // Every row is still there.
    for (table, expected) in counts {
        if !REBUILDABLE.contains(&table.as_str()) {
            assert_eq!(
                count(&store, table).await,
                expected.as_i64().unwrap(),
                "the migrations kept every row of {table}"
            );
        }
    }
    for table in ["invoices", "deposits", "ledger_entries", "ledger_postings", "ledger_accounts", "payouts"] {
        assert!(counts[table].as_i64().unwrap() > 0, "the fixture holds {table}");
    }

    let mut conn = store.conn().await.unwrap();
    let merchant = |label: &str| uuid(&manifest["merchants"][label]["id"]);

    // Merchants and API keys: the old keys still authenticate, the revoked one stays revoked.
    for label in ["A", "B", "C"] {
        let record = merchants::get(&mut conn, merchant(label)).await.unwrap().expect("the merchant");
        assert_eq!(record.name, text(&manifest["merchants"][label]["name"]));
        let key = SecretString::from(text(&manifest["merchants"][label]["api_key"]).to_owned());
        let (_, owner) = api_keys::authenticate(&mut conn, &key).await.unwrap().expect("the old key authenticates");
        assert_eq!(owner.id, merchant(label));
    }
    let revoked = SecretString::from(text(&manifest["merchants"]["A"]["revoked_api_key"]).to_owned());
    assert_eq!(api_keys::authenticate(&mut conn, &revoked).await.unwrap().err(), Some(api_keys::KeyRejection::Revoked));

    // Invoices: status, flags, amounts, address, as written.
    assert_eq!(manifest["invoices"].as_object().unwrap().len(), INVOICES.len());
    for &ExpectedInvoice { label, merchant: owner, status, flags, amount, paid } in INVOICES {
        let written = &manifest["invoices"][label];
        let invoice = invoices::get(&mut conn, merchant(owner), uuid(&written["id"]))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the {label} invoice"));
        assert_eq!(invoice.status, status.parse::<InvoiceStatus>().unwrap(), "{label}");
        assert_eq!(invoice.status.as_str(), text(&written["status"]), "{label}");
        let stored_flags: Vec<&str> = invoice.payment_flags.iter().map(|f| f.as_str()).collect();
        assert_eq!(stored_flags, flags, "{label}");
        assert_eq!(invoice.amount_base_units.to_string(), amount.to_string(), "{label}");
        assert_eq!(invoice.amount_paid_base_units.to_string(), paid.to_string(), "{label}");
        assert_eq!(invoice.amount_base_units.to_string(), text(&written["pay"]["amount_base_units"]), "{label}");
        assert_eq!(invoice.amount_paid_base_units.to_string(), text(&written["amount_paid_base_units"]), "{label}");
        assert_eq!(invoice.fee_base_units.to_string(), text(&written["fee_base_units"]), "{label}");
        assert_eq!(
            invoice.merchant_amount_base_units.to_string(),
            text(&written["merchant_amount_base_units"]),
            "{label}"
        );
        assert_eq!(invoice.address.to_checksum(None), text(&written["pay"]["address"]), "{label}");
        assert_eq!(invoice.asset, text(&written["pay"]["asset"]), "{label}");
        assert_eq!(invoice.currency, text(&written["currency"]), "{label}");
        assert_eq!(invoice.external_id.as_deref(), written["external_id"].as_str(), "{label}");
        assert_eq!(
            invoice.static_address_id.map(|id| id.to_string()).as_deref(),
            written["static_address_id"].as_str()
        );
        assert_eq!(
            invoice.receiver_override_address.map(|a| a.to_checksum(None)).as_deref(),
            written["receiver_override_address"].as_str(),
            "{label}"
        );
        assert_eq!(invoice.details.customer_id.as_deref(), written["customer_id"].as_str(), "{label}");
        assert_eq!(invoice.expires_at.div_euclid(1000), written["expires_at"].as_i64().unwrap(), "{label}");
    }
    let paid =
        invoices::get(&mut conn, merchant("A"), uuid(&manifest["invoices"]["paid"]["id"])).await.unwrap().unwrap();
    assert_eq!(paid.details.customer_email.as_deref(), Some("payer@example.com"));
    assert_eq!(paid.details.metadata.unwrap()["order"], "A-1");
    let pending = invoices::get(&mut conn, merchant("A"), uuid(&manifest["invoices"]["pending"]["id"])).await.unwrap();
    assert_eq!(pending.unwrap().details.questions, Some(vec!["Seat?".to_owned()]));

    // Deposits: every one, with its transaction, amount and state.
    let on_chain = deposits::all_on_chain(&mut conn, CHAIN_ID).await.unwrap();
    let mut written_deposits = 0;
    for owner in ["A", "B"] {
        for written in manifest["deposits"][owner].as_array().unwrap() {
            written_deposits += 1;
            let deposit = deposits::get_for_merchant(&mut conn, merchant(owner), uuid(&written["id"]))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("deposit {written}"));
            assert_eq!(deposit.tx_hash, text(&written["tx_hash"]));
            assert_eq!(deposit.log_index, written["log_index"].as_i64().unwrap());
            assert_eq!(deposit.block_number, written["block_number"].as_u64().unwrap());
            assert_eq!(deposit.to_address, text(&written["to_address"]));
            assert_eq!(deposit.asset, text(&written["asset"]));
            assert_eq!(deposit.amount.to_string(), text(&written["amount_base_units"]));
            assert_eq!(deposit.state.as_str(), text(&written["state"]));
            assert_eq!(deposit.invoice_id.map(|id| id.to_string()).as_deref(), written["invoice_id"].as_str());
        }
    }
    assert_eq!(on_chain.len(), written_deposits, "every deposit");
    let states: Vec<(&str, String)> =
        on_chain.iter().map(|d| (d.state.as_str(), d.amount.to_string())).filter(|(s, _)| *s != "confirmed").collect();
    assert_eq!(states, [("detected", "5000000".to_owned())], "one deposit awaits its confirmations");
    assert_eq!(on_chain.len(), 8);

    // The ledger: every entry with every posting, every balance, and the books still balance.
    let entries = manifest["ledger_entries"].as_array().unwrap();
    for written in entries {
        let (entry, postings) = ledger::entry(&mut conn, uuid(&written["id"])).await.unwrap().expect("the entry");
        assert_eq!(entry.entry_type.as_str(), text(&written["type"]));
        assert_eq!(entry.idempotency_key, text(&written["idempotency_key"]));
        assert_eq!(entry.created_at, written["created_at"].as_i64().unwrap());
        let refs = [
            (entry.refs.merchant_id, &written["merchant_id"]),
            (entry.refs.invoice_id, &written["invoice_id"]),
            (entry.refs.deposit_id, &written["deposit_id"]),
            (entry.refs.payout_id, &written["payout_id"]),
            (entry.refs.transaction_id, &written["transaction_id"]),
            (entry.reverses, &written["reverses"]),
        ];
        for (stored, written) in refs {
            assert_eq!(stored.map(|id| id.to_string()).as_deref(), written.as_str(), "entry {}", entry.id);
        }
        let read: Vec<Value> = postings
            .iter()
            .map(|p| {
                serde_json::json!({
                    "owner": p.account.owner.key(), "kind": p.account.kind.as_str(), "chain_id": p.account.chain_id,
                    "asset": p.account.asset, "side": p.side.as_str(), "amount": p.amount.to_string(),
                    "balance_after": p.balance_after.to_string(),
                })
            })
            .collect();
        assert_eq!(&Value::from(read), &written["postings"], "the postings of entry {}", entry.id);
    }
    for written in manifest["ledger_accounts"].as_array().unwrap() {
        let kind: AccountKind = text(&written["kind"]).parse().unwrap();
        let (chain_id, asset) = (written["chain_id"].as_u64().unwrap(), text(&written["asset"]));
        let account = match text(&written["owner"]) {
            "platform" => Account::platform(kind, chain_id, asset),
            owner => Account::merchant(owner.parse().unwrap(), kind, chain_id, asset),
        };
        assert_eq!(
            ledger::balance(&mut conn, &account).await.unwrap().to_string(),
            text(&written["balance"]),
            "{account}"
        );
    }
    let report = verify(&mut conn).await.unwrap();
    assert!(report.is_ok(), "{:#?}", report.problems);
    let totals = &manifest["ledger_verify"];
    assert_eq!(
        (report.entries, report.postings, report.accounts, report.deposits),
        (
            totals["entries"].as_u64().unwrap(),
            totals["postings"].as_u64().unwrap(),
            totals["accounts"].as_u64().unwrap(),
            totals["deposits"].as_u64().unwrap()
        )
    );
    assert_eq!(report.entries as usize, entries.len());

    // Payouts and refunds.
    for &(label, kind, status, amount) in PAYOUTS {
        let written = &manifest["payouts"][label];
        let payout = payouts::get(&mut conn, merchant("A"), uuid(&written["id"]))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the {label} payout"));
        assert_eq!(payout.kind, kind.parse::<PayoutKind>().unwrap(), "{label}");
        assert_eq!(payout.status, status.parse::<PayoutStatus>().unwrap(), "{label}");
        assert_eq!(payout.status.as_str(), text(&written["status"]), "{label}");
        assert_eq!(payout.amount.to_string(), amount.to_string(), "{label}");
        assert_eq!(payout.amount.to_string(), text(&written["amount_base_units"]), "{label}");
        assert_eq!(payout.destination, text(&written["destination"]), "{label}");
        assert_eq!(payout.network_fee.map(|f| f.to_string()).as_deref(), written["network_fee_base_units"].as_str());
        assert_eq!(payout.invoice_id.map(|id| id.to_string()).as_deref(), written["invoice_id"].as_str(), "{label}");
    }

    // The transactions the settler signed (sweeps, gas top-ups, the forward, the payout and the
    // refund) and the pending payout's intent, still waiting to be sent.
    let transactions = manifest["chain_transactions"].as_array().unwrap();
    for written in transactions {
        let tx = chain_txs::get(&mut conn, uuid(&written["id"])).await.unwrap().expect("the transaction");
        assert_eq!((tx.purpose.as_str(), tx.state.as_str()), (text(&written["purpose"]), text(&written["state"])));
        assert_eq!(
            (tx.signer_address.as_str(), tx.to_address.as_str()),
            (text(&written["signer_address"]), text(&written["to_address"]))
        );
        assert_eq!(
            (tx.asset.as_str(), tx.value.to_string()),
            (text(&written["asset"]), text(&written["value"]).to_owned())
        );
        assert_eq!(tx.nonce, written["nonce"].as_u64(), "{}", tx.id);
        assert_eq!(tx.mined_tx_hash.as_deref(), written["mined_tx_hash"].as_str(), "{}", tx.id);
        assert_eq!(tx.gas_cost.map(|g| g.to_string()).as_deref(), written["gas_cost"].as_str(), "{}", tx.id);
        assert_eq!(tx.payout_id.map(|id| id.to_string()).as_deref(), written["payout_id"].as_str(), "{}", tx.id);
    }
    assert_eq!(transactions.len() as i64, counts["chain_transactions"].as_i64().unwrap());
    let open = chain_txs::open(&mut conn, CHAIN_ID).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].payout_id.map(|id| id.to_string()).as_deref(), manifest["payouts"]["pending"]["id"].as_str());

    // Operator settings: C's fee for USDT, A's checkout origins, B's callback secret.
    let fees = merchants::asset_fees(&mut conn, merchant("C")).await.unwrap();
    let fees: Vec<(&str, String, String)> =
        fees.iter().map(|f| (f.asset.as_str(), f.percent.to_string(), f.fixed.to_string())).collect();
    assert_eq!(fees, [("USDT", "1.5".to_owned(), "0.1".to_owned())]);
    let origins =
        merchants::checkout_origins_for_invoice(&mut conn, uuid(&manifest["invoices"]["pending"]["id"])).await.unwrap();
    assert_eq!(origins, ["https://shop-a.example.com"]);
    assert!(store_webhooks::callback_secret(&mut conn, merchant("B")).await.unwrap().is_some());

    // The static address and the invoice its deposit created.
    let rail = &manifest["static_address"];
    let stored = static_addresses::get(&mut conn, merchant("A"), uuid(&rail["id"])).await.unwrap().unwrap();
    assert_eq!(stored.address.to_checksum(None), text(&rail["address"]));
    assert_eq!((stored.customer_id.as_str(), stored.status.as_str()), ("player-1", "active"));
    assert_eq!(
        manifest["invoices"]["static_deposit"]["static_address_id"], rail["id"],
        "the deposit's invoice belongs to the static address"
    );

    // Webhook endpoints, events and their deliveries.
    for owner in ["A", "B"] {
        let written = &manifest["webhook_endpoints"][owner];
        let endpoint = store_webhooks::get_endpoint(&mut conn, merchant(owner), uuid(&written["id"]))
            .await
            .unwrap()
            .expect("the endpoint");
        assert_eq!(endpoint.url, text(&written["url"]));
        assert_eq!(serde_json::to_value(&endpoint.enabled_events).unwrap(), written["enabled_events"]);
        assert!(endpoint.enabled);
    }
    let events = manifest["events_of_A"].as_array().unwrap();
    assert!(!events.is_empty());
    for written in events {
        let event = store_webhooks::get_event(&mut conn, merchant("A"), uuid(&written["id"]))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("event {}", written["id"]));
        assert_eq!(event.event_type.as_str(), text(&written["type"]));
        let deliveries = store_webhooks::deliveries(&mut conn, event.id).await.unwrap();
        assert!(!deliveries.is_empty(), "event {} keeps its deliveries", event.id);
        assert!(deliveries.iter().all(|d| d.state == "succeeded"), "{deliveries:?}");
    }

    // Idempotency records: each key still holds the response it answered with.
    for (key, resource) in [
        ("upgrade-invoice-1", &manifest["invoices"]["paid"]),
        ("upgrade-rail-1", &manifest["static_address"]),
        ("upgrade-payout-1", &manifest["payouts"]["sent"]),
        ("upgrade-refund-1", &manifest["payouts"]["refund"]),
        ("upgrade-payout-2", &manifest["payouts"]["pending"]),
    ] {
        let (state, status, body): (String, Option<i64>, Option<String>) = sqlx::query_as(
            "SELECT state, response_status, response_body FROM idempotency_keys \
             WHERE merchant_id = $1 AND idempotency_key = $2",
        )
        .bind(merchant("A").to_string())
        .bind(key)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("the idempotency record {key}: {e}"));
        assert_eq!((state.as_str(), status), ("completed", Some(201)), "{key}");
        let answered: Value = serde_json::from_str(&body.unwrap()).unwrap();
        assert_eq!(answered["id"], resource["id"], "{key}");
    }
    drop(conn);
    store.close().await;

    // The current API serves the old rows to the old keys.
    let app = TestApp::spawn(&db).await;
    let key_a = text(&manifest["merchants"]["A"]["api_key"]);
    for &ExpectedInvoice { label, merchant: owner, .. } in INVOICES {
        let key = text(&manifest["merchants"][owner]["api_key"]);
        let written = &manifest["invoices"][label];
        let (status, shown) = app.get_json(key, &format!("/api/v1/invoices/{}", text(&written["id"]))).await;
        assert_eq!(status, 200, "{shown}");
        for field in ["status", "amount", "currency", "amount_paid", "fee", "merchant_amount", "payment_flags"] {
            assert_eq!(shown[field], written[field], "{label}: {field}");
        }
        assert_eq!(shown["pay"]["address"], written["pay"]["address"], "{label}");
        assert_eq!(shown["payments"].as_array().map(Vec::len), written["payments"].as_array().map(Vec::len));
    }
    let (status, balances) = app.get_json(key_a, "/api/v1/balances").await;
    assert_eq!((status, &balances), (200, &manifest["balances"]["A"]));
}
