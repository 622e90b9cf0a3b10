//! The store suite: every test runs on SQLite and on PostgreSQL.

use std::collections::HashSet;

use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::deposit_address::{AddressPurpose, DepositAddress};
use depositd_core::merchant::MerchantStatus;
use depositd_core::outbox::{self, EventType, Subject};
use depositd_core::store::address_pool;
use depositd_core::store::api_keys::{self, KeyRejection};
use depositd_core::store::cursors::{self, ChainCursor};
use depositd_core::store::merchants::{self, NewMerchant};
use depositd_core::store::webhooks;
use depositd_core::store::{Backend, Store, StoreError, deposit_addresses, events};
use depositd_core::wallet::HdWallet;
use depositd_core::webhooks::Endpoint;
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::{TestDb, both_backends};

both_backends!(
    migrations_apply_and_are_idempotent,
    merchants_round_trip,
    api_keys_authenticate_by_hash_only,
    deposit_addresses_are_never_reused_under_concurrency,
    pooled_addresses_are_watched_before_they_are_handed_out_and_handed_out_once,
    a_pool_from_another_mnemonic_is_never_handed_out,
    chain_cursor_upserts,
    unique_constraint_maps_to_conflict,
    a_lease_has_one_holder_until_it_expires_or_is_released,
    a_commit_wakes_the_delivery_worker_only_when_it_queued_deliveries,
    the_reconciled_addresses_are_the_same_whatever_the_page_size,
);

async fn new_merchant(store: &Store, name: &str) -> depositd_core::merchant::Merchant {
    let mut conn = store.conn().await.unwrap();
    merchants::insert(
        &mut conn,
        &NewMerchant {
            name: name.into(),
            company_name: None,
            fee_percent: Decimal::new(15, 1),
            min_invoice_amount: None,
            max_invoice_amount: None,
        },
    )
    .await
    .unwrap()
}

async fn migrations_apply_and_are_idempotent(db: TestDb) {
    let store = Store::connect(&db.url, 4).await.unwrap();
    assert!(!store.migrations_current().await.unwrap(), "a fresh database has pending migrations");
    store.migrate().await.unwrap();
    assert!(store.migrations_current().await.unwrap());
    // A second start (or `depositd migrate` on a running database) changes nothing.
    store.migrate().await.unwrap();
    let second = Store::connect(&db.url, 4).await.unwrap();
    second.migrate().await.unwrap();
    assert!(second.migrations_current().await.unwrap());
    assert_eq!(store.backend().name(), db.backend);
}

async fn merchants_round_trip(db: TestDb) {
    let store = db.store().await;
    let created = new_merchant(&store, "Acme").await;
    let mut conn = store.conn().await.unwrap();
    let loaded = merchants::get(&mut conn, created.id).await.unwrap().unwrap();
    assert_eq!(loaded, created);
    assert_eq!(loaded.fee_percent.to_string(), "1.5", "decimals survive storage exactly");
    assert_eq!(merchants::find(&mut conn, "Acme").await.unwrap().unwrap().id, created.id);
    assert_eq!(merchants::find(&mut conn, &created.id.to_string()).await.unwrap().unwrap().id, created.id);
    assert!(merchants::find(&mut conn, "Nobody").await.unwrap().is_none());
    drop(conn);
    new_merchant(&store, "Acme").await;
    let mut conn = store.conn().await.unwrap();
    assert!(
        matches!(merchants::find(&mut conn, "Acme").await, Err(StoreError::Conflict(_))),
        "ambiguous names are refused"
    );
    merchants::set_status(&mut conn, created.id, MerchantStatus::Disabled).await.unwrap();
    assert_eq!(merchants::get(&mut conn, created.id).await.unwrap().unwrap().status, MerchantStatus::Disabled);
    assert_eq!(merchants::list(&mut conn).await.unwrap().len(), 2);
}

async fn api_keys_authenticate_by_hash_only(db: TestDb) {
    let store = db.store().await;
    let merchant = new_merchant(&store, "Keys Inc").await;
    let mut conn = store.conn().await.unwrap();
    let (key, plaintext) = api_keys::create(
        &mut conn,
        merchant.id,
        KeyMode::Test,
        &[Scope::InvoicesWrite, Scope::InvoicesRead],
        Some("ci"),
    )
    .await
    .unwrap();
    let secret = plaintext.expose_secret();
    assert!(secret.starts_with("dk_test_") && api_keys::is_well_formed(secret));
    assert!(secret.starts_with(&key.display_prefix));

    // Only the hash is stored: the plaintext appears in no column.
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT key_hash, display_prefix, scopes FROM api_keys").fetch_all(&mut *conn).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, api_keys::hash_key(secret));
    assert!(rows.iter().all(|(a, b, c)| !a.contains(secret) && !b.contains(secret) && !c.contains(secret)));

    let (found, owner) = api_keys::authenticate(&mut conn, &plaintext).await.unwrap().unwrap();
    assert_eq!((found.id, owner.id), (key.id, merchant.id));
    assert!(found.has_scope(Scope::InvoicesWrite) && !found.has_scope(Scope::PayoutsWrite));

    let unknown = SecretString::from(format!("dk_test_{}", "0".repeat(48)));
    assert_eq!(api_keys::authenticate(&mut conn, &unknown).await.unwrap().unwrap_err(), KeyRejection::Unknown);
    let malformed = SecretString::from("sk_live_nope".to_owned());
    assert_eq!(api_keys::authenticate(&mut conn, &malformed).await.unwrap().unwrap_err(), KeyRejection::Malformed);

    merchants::set_status(&mut conn, merchant.id, MerchantStatus::Disabled).await.unwrap();
    assert_eq!(
        api_keys::authenticate(&mut conn, &plaintext).await.unwrap().unwrap_err(),
        KeyRejection::MerchantInactive
    );
    merchants::set_status(&mut conn, merchant.id, MerchantStatus::Active).await.unwrap();

    api_keys::revoke(&mut conn, key.id).await.unwrap();
    assert_eq!(api_keys::authenticate(&mut conn, &plaintext).await.unwrap().unwrap_err(), KeyRejection::Revoked);
    assert!(matches!(api_keys::revoke(&mut conn, uuid::Uuid::now_v7()).await, Err(StoreError::NotFound)));
}

/// `count` invoice address allocations at once, each in its own transaction; every third rolls
/// back (its allocation must vanish with it). Returns the committed ones.
async fn allocate_concurrently(store: &Store, wallet: &HdWallet, count: usize) -> Vec<DepositAddress> {
    let mut tasks = Vec::new();
    for i in 0..count {
        let (store, wallet) = (store.clone(), wallet.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin().await.unwrap();
            let allocated = deposit_addresses::allocate(&mut tx, &wallet, AddressPurpose::Invoice).await.unwrap();
            if i % 3 == 0 {
                tx.rollback().await.unwrap();
                None
            } else {
                tx.commit().await.unwrap();
                Some(allocated)
            }
        }));
    }
    let mut committed = Vec::new();
    for task in tasks {
        committed.extend(task.await.unwrap());
    }
    committed
}

async fn deposit_addresses_are_never_reused_under_concurrency(db: TestDb) {
    let store = db.store().await;
    let wallet = HdWallet::from_mnemonic(&HdWallet::generate_mnemonic()).unwrap();
    let committed = allocate_concurrently(&store, &wallet, 24).await;
    assert_eq!(committed.len(), 16);
    let indices: HashSet<u64> = committed.iter().map(|a| a.derivation_index).collect();
    let addresses: HashSet<_> = committed.iter().map(|a| a.address).collect();
    assert_eq!(indices.len(), 16, "no index handed out twice");
    assert_eq!(addresses.len(), 16, "no address handed out twice");
    for allocated in &committed {
        assert_eq!(allocated.address, wallet.deposit_address(allocated.derivation_index).unwrap());
    }
    let mut conn = store.conn().await.unwrap();
    let stored = deposit_addresses::since(&mut conn, None).await.unwrap();
    assert_eq!(stored.len(), 16, "rolled-back allocations leave nothing behind");
    let last = stored[7].derivation_index;
    assert_eq!(
        deposit_addresses::since(&mut conn, Some(last)).await.unwrap(),
        stored[8..].to_vec(),
        "incremental loading"
    );
}

async fn chain_cursor_upserts(db: TestDb) {
    let store = db.store().await;
    let mut tx = store.begin().await.unwrap();
    assert!(cursors::get(&mut tx, 31337).await.unwrap().is_none());
    let first = ChainCursor { chain_id: 31337, block_number: 10, block_hash: "0xaa".into() };
    cursors::set(&mut tx, &first).await.unwrap();
    let second = ChainCursor { chain_id: 31337, block_number: 11, block_hash: "0xbb".into() };
    cursors::set(&mut tx, &second).await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert_eq!(cursors::get(&mut conn, 31337).await.unwrap(), Some(second));
    assert!(cursors::get(&mut conn, 1).await.unwrap().is_none());
}

async fn unique_constraint_maps_to_conflict(db: TestDb) {
    let store = db.store().await;
    let mut conn = store.conn().await.unwrap();
    let insert = "INSERT INTO counters (name, value) VALUES ('x', 1)";
    sqlx::query(insert).execute(&mut *conn).await.unwrap();
    let error = sqlx::query(insert).execute(&mut *conn).await.unwrap_err();
    assert!(matches!(StoreError::on_conflict(error, "counter"), StoreError::Conflict("counter")));
}

async fn a_lease_has_one_holder_until_it_expires_or_is_released(db: TestDb) {
    use depositd_core::store::leases::Lease;
    let store = db.store().await;
    let ttl = std::time::Duration::from_millis(300);
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let first = Lease::new(store.clone(), "watcher:test", a, ttl);
    let second = Lease::new(store.clone(), "watcher:test", b, ttl);
    let other = Lease::new(store.clone(), "settler:test", b, ttl);
    assert!(first.hold().await.unwrap());
    assert!(!second.hold().await.unwrap(), "held by another");
    assert!(other.hold().await.unwrap(), "leases are independent by name");
    assert!(first.hold().await.unwrap(), "renewal");
    // The holder stops renewing: after the time to live the other takes over, and the first cannot
    // take it back while the second renews.
    tokio::time::sleep(ttl * 2).await;
    assert!(second.hold().await.unwrap());
    assert!(!first.hold().await.unwrap());
    // A release hands over at once.
    second.release().await.unwrap();
    assert!(first.hold().await.unwrap());
}

async fn pooled_addresses_are_watched_before_they_are_handed_out_and_handed_out_once(db: TestDb) {
    let store = db.store().await;
    let wallet = HdWallet::from_mnemonic(&HdWallet::generate_mnemonic()).unwrap();
    // Three refills race (three daemons): each gets indices of its own.
    let (a, b, c) = tokio::join!(
        address_pool::refill(&store, &wallet, AddressPurpose::Invoice, 5),
        address_pool::refill(&store, &wallet, AddressPurpose::Invoice, 5),
        address_pool::refill(&store, &wallet, AddressPurpose::Invoice, 5),
    );
    let pooled_total = a.unwrap() + b.unwrap() + c.unwrap();
    assert_eq!(pooled_total, 15, "a refill that loses the race derives again and succeeds");
    let mut conn = store.conn().await.unwrap();
    assert_eq!(address_pool::pooled(&mut conn, AddressPurpose::Invoice).await.unwrap(), pooled_total);
    assert_eq!(address_pool::pooled(&mut conn, AddressPurpose::Static).await.unwrap(), 0);
    // The watcher's view holds every pooled address already, each the wallet's own.
    let watched = deposit_addresses::since(&mut conn, None).await.unwrap();
    assert_eq!(watched.len() as u64, pooled_total);
    let indices: HashSet<u64> = watched.iter().map(|a| a.derivation_index).collect();
    assert_eq!(indices.len() as u64, pooled_total, "no index pooled twice");
    for address in &watched {
        assert_eq!(address.address, wallet.deposit_address(address.derivation_index).unwrap());
    }
    drop(conn);

    // A claim that rolls back returns its address to the pool.
    let mut tx = store.begin().await.unwrap();
    let first = deposit_addresses::allocate(&mut tx, &wallet, AddressPurpose::Invoice).await.unwrap();
    assert_eq!(first.derivation_index, watched[0].derivation_index, "the pool hands out its lowest index first");
    tx.rollback().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let again = deposit_addresses::allocate(&mut tx, &wallet, AddressPurpose::Invoice).await.unwrap();
    assert_eq!(again, first);
    tx.rollback().await.unwrap();

    // More concurrent creations than pooled addresses: the pool runs dry, the rest fall back to
    // the counter, and no address is handed out twice.
    let committed = allocate_concurrently(&store, &wallet, 30).await;
    assert_eq!(committed.len(), 20);
    let indices: HashSet<u64> = committed.iter().map(|a| a.derivation_index).collect();
    assert_eq!(indices.len(), 20, "no index handed out twice");
    for allocated in &committed {
        assert_eq!(allocated.address, wallet.deposit_address(allocated.derivation_index).unwrap());
    }
    let mut conn = store.conn().await.unwrap();
    let left = address_pool::pooled(&mut conn, AddressPurpose::Invoice).await.unwrap();
    let stored = deposit_addresses::since(&mut conn, None).await.unwrap();
    assert_eq!(stored.len() as u64, 20 + left, "every row is handed out once or still pooled");
    let from_pool =
        committed.iter().filter(|a| watched.iter().any(|w| w.derivation_index == a.derivation_index)).count();
    assert_eq!(from_pool as u64 + left, pooled_total, "each pooled address is handed out or still pooled");

    // A refill while creations keep moving the counter (static addresses are never pooled, so
    // each of these bumps it) still fills the pool, and nothing is handed out twice.
    let mut racing = Vec::new();
    for _ in 0..40 {
        let (store, wallet) = (store.clone(), wallet.clone());
        racing.push(tokio::spawn(async move {
            let mut tx = store.begin().await.unwrap();
            let allocated = deposit_addresses::allocate(&mut tx, &wallet, AddressPurpose::Static).await.unwrap();
            tx.commit().await.unwrap();
            allocated.derivation_index
        }));
    }
    assert_eq!(address_pool::refill(&store, &wallet, AddressPurpose::Invoice, 40).await.unwrap(), 40);
    let mut static_indices = HashSet::new();
    for task in racing {
        static_indices.insert(task.await.unwrap());
    }
    assert_eq!(static_indices.len(), 40);
    let everything = deposit_addresses::since(&mut conn, None).await.unwrap();
    let distinct: HashSet<u64> = everything.iter().map(|a| a.derivation_index).collect();
    assert_eq!((everything.len(), distinct.len()), (stored.len() + 80, stored.len() + 80));
    assert_eq!(address_pool::pooled(&mut conn, AddressPurpose::Invoice).await.unwrap(), left + 40);
}

async fn a_pool_from_another_mnemonic_is_never_handed_out(db: TestDb) {
    let store = db.store().await;
    let (wallet, other) = (
        HdWallet::from_mnemonic(&HdWallet::generate_mnemonic()).unwrap(),
        HdWallet::from_mnemonic(&HdWallet::generate_mnemonic()).unwrap(),
    );
    // The pool was filled by a daemon with another mnemonic (replaced since, or misconfigured).
    assert_eq!(address_pool::refill(&store, &other, AddressPurpose::Invoice, 5).await.unwrap(), 5);
    let mut tx = store.begin().await.unwrap();
    let mine = deposit_addresses::allocate(&mut tx, &wallet, AddressPurpose::Invoice).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(mine.address, wallet.deposit_address(mine.derivation_index).unwrap(), "this wallet's own address");
    assert_eq!(mine.derivation_index, 5, "above the retired pool's indices");
    let mut conn = store.conn().await.unwrap();
    assert_eq!(address_pool::pooled(&mut conn, AddressPurpose::Invoice).await.unwrap(), 0, "the pool is retired");
    assert_eq!(deposit_addresses::since(&mut conn, None).await.unwrap().len(), 6, "retired addresses stay watched");
    drop(conn);
    // Refilled from this wallet, the pool hands out again.
    address_pool::refill(&store, &wallet, AddressPurpose::Invoice, 3).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let pooled = deposit_addresses::allocate(&mut tx, &wallet, AddressPurpose::Invoice).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(pooled.derivation_index, 6);
    assert_eq!(pooled.address, wallet.deposit_address(6).unwrap());
}

/// Whether [`Store::deliveries_queued`] resolves within `wait` (it resolves at once for a wake
/// stored since the last call returned).
async fn woken(store: &Store, wait: std::time::Duration) -> bool {
    tokio::time::timeout(wait, store.deliveries_queued()).await.is_ok()
}

async fn a_commit_wakes_the_delivery_worker_only_when_it_queued_deliveries(db: TestDb) {
    const PROMPTLY: std::time::Duration = std::time::Duration::from_secs(2);
    const QUIET: std::time::Duration = std::time::Duration::from_millis(300);
    let store = db.store().await;
    let merchant = new_merchant(&store, "outbox").await;
    // The merchant's one endpoint wants `invoice.paid` only.
    let endpoint = Endpoint {
        id: uuid::Uuid::now_v7(),
        merchant_id: merchant.id,
        url: "https://hooks.example.com/paid".into(),
        description: None,
        enabled_events: vec!["invoice.paid".into()],
        enabled: true,
        disabled_reason: None,
        secret_sealed: "v1:unused".into(),
        previous_secret_sealed: None,
        previous_secret_expires_at: None,
        last_success_at: None,
        created_at: 0,
        updated_at: 0,
    };
    webhooks::insert_endpoint(&mut store.conn().await.unwrap(), &endpoint).await.unwrap();
    let data = serde_json::json!({"object": "invoice"});
    let invoice = uuid::Uuid::now_v7();
    assert!(!woken(&store, QUIET).await, "nothing committed yet");

    // Queued to the endpoint: no wake while uncommitted, a prompt one once committed.
    let mut tx = store.begin().await.unwrap();
    let paid = outbox::record(&mut tx, merchant.id, EventType::InvoicePaid, Subject::new("invoice", invoice), &data)
        .await
        .unwrap();
    assert!(!woken(&store, QUIET).await, "queueing alone wakes nobody: the deliveries are not committed");
    tx.commit().await.unwrap();
    assert!(woken(&store, PROMPTLY).await, "the commit that queued a delivery wakes the worker");
    let mut conn = store.conn().await.unwrap();
    assert_eq!(webhooks::deliveries(&mut conn, paid).await.unwrap().len(), 1);

    // An event nobody gets (the endpoint does not want it, no callback URL), and a transaction
    // with no event at all: committed, but nothing was queued, so no wake.
    let mut tx = store.begin().await.unwrap();
    let created =
        outbox::record(&mut tx, merchant.id, EventType::InvoiceCreated, Subject::new("invoice", invoice), &data)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert!(webhooks::deliveries(&mut conn, created).await.unwrap().is_empty());
    assert!(!woken(&store, QUIET).await, "a commit that queued nothing wakes nobody");
    let tx = store.begin().await.unwrap();
    tx.commit().await.unwrap();
    assert!(!woken(&store, QUIET).await, "an empty commit wakes nobody");

    // Queued, then rolled back (or dropped, which rolls back): no event, no delivery, no wake.
    let callback =
        Subject { callback_url: Some("https://shop.example.com/callback"), ..Subject::new("invoice", invoice) };
    let mut tx = store.begin().await.unwrap();
    outbox::record(&mut tx, merchant.id, EventType::InvoicePaid, callback, &data).await.unwrap();
    tx.rollback().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    outbox::record(&mut tx, merchant.id, EventType::InvoicePaid, callback, &data).await.unwrap();
    drop(tx);
    assert!(!woken(&store, QUIET).await, "a rolled-back transaction wakes nobody");
    if store.backend() == Backend::Postgres {
        // Only its own deliveries count: one transaction commits while another, open beside it,
        // queued some (and then rolls back). (SQLite runs one writer at a time.)
        let beside = store.begin().await.unwrap();
        let mut queuing = store.begin().await.unwrap();
        outbox::record(&mut queuing, merchant.id, EventType::InvoicePaid, callback, &data).await.unwrap();
        beside.commit().await.unwrap();
        assert!(!woken(&store, QUIET).await, "another transaction's deliveries do not wake on this commit");
        queuing.rollback().await.unwrap();
    }
    assert_eq!(events::types_for(&mut conn, invoice).await.unwrap(), ["invoice.paid", "invoice.created"]);

    // The resource's callback URL alone is enough to queue, and to wake.
    let mut tx = store.begin().await.unwrap();
    let expired = outbox::record(&mut tx, merchant.id, EventType::InvoiceExpired, callback, &data).await.unwrap();
    tx.commit().await.unwrap();
    assert!(woken(&store, PROMPTLY).await, "a delivery to the callback URL wakes the worker");
    let deliveries = webhooks::deliveries(&mut conn, expired).await.unwrap();
    assert_eq!(
        deliveries.iter().map(|d| (d.endpoint_id, d.url.as_str())).collect::<Vec<_>>(),
        [(None, "https://shop.example.com/callback")]
    );
}

/// The pool skips sqlx's ping before every use (a round trip per transaction) and pings only a
/// connection that sat idle a while: one the server closed meanwhile (a restart, an idle
/// timeout, an operator's `pg_terminate_backend`) is replaced, not handed to a request that then
/// fails. PostgreSQL only: nothing closes a SQLite connection from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_closed_while_idle_is_replaced_not_used() {
    crate::helpers::init_tracing();
    let db = TestDb::postgres().await;
    let store = db.connect(2).await.unwrap();
    // Both pooled connections in use once, then idle in the pool.
    {
        let mut a = store.conn().await.unwrap();
        let mut b = store.conn().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *a).await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *b).await.unwrap();
    }
    let mut killer = <sqlx::AnyConnection as sqlx::Connection>::connect(db.url.expose()).await.unwrap();
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut killer)
    .await
    .unwrap();
    assert!(killed.len() >= 2 && killed.iter().all(|(k,)| *k), "the pool's connections were terminated: {killed:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    // Every pooled connection is dead; each use must get a live one.
    for _ in 0..4 {
        let mut tx = store.begin().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    store.ping().await.unwrap();
}

/// The surplus check's address list is read a page at a time (millions of addresses are never
/// all held as rows): every handed-out address once, and a pooled one only where a rejected
/// transfer on that chain reached it, in HD index order, whether a page holds one row, a few or
/// all of them.
async fn the_reconciled_addresses_are_the_same_whatever_the_page_size(db: TestDb) {
    let store = db.store().await;
    let wallet = HdWallet::from_mnemonic(&HdWallet::generate_mnemonic()).unwrap();
    let mut expected = Vec::new();
    for round in 0..7 {
        // Pooled addresses between handed-out ones: the pages must skip them, not stop at them.
        if round % 3 == 1 {
            address_pool::refill(&store, &wallet, AddressPurpose::Invoice, 3).await.unwrap();
        }
        let mut tx = store.begin().await.unwrap();
        let purpose = if round % 2 == 0 { AddressPurpose::Invoice } else { AddressPurpose::Static };
        let allocated = deposit_addresses::allocate(&mut tx, &wallet, purpose).await.unwrap();
        tx.commit().await.unwrap();
        expected.push((allocated.derivation_index, allocated.address));
    }
    let mut conn = store.conn().await.unwrap();
    let pooled: Vec<(String, i64)> =
        sqlx::query_as("SELECT address, derivation_index FROM deposit_addresses WHERE pooled = 1 ORDER BY 2")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert!(pooled.len() >= 2, "some stay pooled: {pooled:?}");
    // A rejected transfer on this chain reached the first pooled address, one on another chain
    // the second: only the first is read on this chain.
    for (n, (chain_id, (address, _))) in [(31337_u64, &pooled[0]), (31338, &pooled[1])].into_iter().enumerate() {
        let rejected = depositd_core::deposit::Deposit {
            id: uuid::Uuid::now_v7(),
            chain_id,
            tx_hash: format!("0x{:064x}", n + 1),
            log_index: 0,
            block_number: 7,
            block_hash: format!("0x{}", "cd".repeat(32)),
            from_address: "0x0000000000000000000000000000000000000001".into(),
            to_address: address.clone(),
            token_address: None,
            asset: "ETH".into(),
            amount: depositd_core::money::BaseUnits::from(alloy::primitives::U256::from(1_000u64)),
            state: depositd_core::deposit::DepositState::Rejected,
            reject_reason: Some("unowned pooled address".into()),
            merchant_id: None,
            invoice_id: None,
            static_address_id: None,
            detected_at: depositd_core::time::now_ms(),
            confirmed_at: None,
            generation: 0,
        };
        depositd_core::store::deposits::record(&mut conn, &rejected).await.unwrap();
    }
    expected.push((pooled[0].1 as u64, pooled[0].0.parse().unwrap()));
    expected.sort();
    let expected: Vec<_> = expected.into_iter().map(|(_, address)| address).collect();
    for page in [1, 2, 3, 50_000] {
        assert_eq!(
            deposit_addresses::reconciled_in_pages(&mut conn, 31337, page).await.unwrap(),
            expected,
            "page size {page}"
        );
    }
    assert_eq!(deposit_addresses::reconciled(&mut conn, 31337).await.unwrap(), expected);
}
