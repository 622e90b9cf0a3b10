//! What the watcher fetches (issue 22), against anvil on both backends: a token-only chain
//! (`native_deposits = false`) catches up over final blocks without fetching them one by one,
//! refuses the range of a lagging node's empty answer in either fetch mode, and does not see
//! native transfers; a chain with native deposits on finds them in batched full blocks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alloy::primitives::Address;
use depositd_core::api_key::Scope;
use depositd_core::config::ChainConfig;
use depositd_core::store::{cursors, deposits};
use depositd_testkit::chain::TestChain;
use depositd_watcher::{ChainWatcher, WatchError};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, both_backends, use_test_chain};

both_backends!(
    a_token_only_catch_up_fetches_no_block_of_a_quiet_final_range,
    a_lagging_nodes_empty_answer_is_refused_in_token_only_mode,
    native_deposits_are_found_in_batched_blocks_when_on,
    native_deposits_off_sees_no_native_transfer_and_takes_no_native_invoice,
    a_log_outside_the_asked_range_refuses_the_range,
    a_shallow_reorg_after_a_sparse_catch_up_reverses_no_untouched_deposit,
    a_node_with_the_blocks_but_no_logs_in_catch_up_what_is_caught_and_what_rescan_repairs,
    native_deposits_off_is_refused_while_native_payments_are_open,
    a_provider_that_caps_batches_does_not_stop_a_native_catch_up,
    a_provider_that_refuses_batches_does_not_stop_a_token_only_catch_up,
);

/// Blocks mined past the payments: more than the reorg window (128 with 2 confirmations), so
/// the payments' blocks are final when the watcher starts.
const QUIET: u64 = 300;

/// What the proxy saw: every JSON-RPC call (alone or in a batch) as (method, params, batched).
#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<(String, Value, bool)>>,
}

impl Seen {
    fn take(&self) -> Vec<(String, Value, bool)> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }
}

/// A JSON-RPC proxy in front of anvil that records every call and, while `lag_above` is not
/// `u64::MAX`, answers like a node that only has blocks up to `lag_above`: `eth_getLogs` over a
/// range returns only the logs it has (none above), a block above is `null`, and a query by
/// block hash for a block above is geth's "unknown block". While `empty_logs` is set, every
/// `eth_getLogs` over a range answers "no logs" (by block hash it answers truly). While `inject`
/// holds a log, it is added to every `eth_getLogs` answer over a range that ends below the log's
/// block (an answer outside what was asked). A batch of more calls than `max_batch` is refused
/// with HTTP 413. Handles batches.
async fn recording_proxy(
    upstream: String,
    seen: Arc<Seen>,
    lag_above: Arc<AtomicU64>,
    empty_logs: Arc<AtomicBool>,
    inject: Arc<Mutex<Option<Value>>>,
    max_batch: Arc<AtomicU64>,
) -> String {
    use axum::response::IntoResponse as _;
    let client = reqwest::Client::new();
    let handler = move |body: axum::body::Bytes| {
        let (client, upstream, seen, lag_above, empty_logs, inject, max_batch) = (
            client.clone(),
            upstream.clone(),
            seen.clone(),
            lag_above.clone(),
            empty_logs.clone(),
            inject.clone(),
            max_batch.clone(),
        );
        async move {
            let request: Value = serde_json::from_slice(&body).unwrap();
            let batched = request.is_array();
            if request.as_array().is_some_and(|calls| calls.len() as u64 > max_batch.load(Ordering::SeqCst)) {
                return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "batch too large").into_response();
            }
            let calls: Vec<Value> = match &request {
                Value::Array(calls) => calls.clone(),
                single => vec![single.clone()],
            };
            let mut answers = Vec::new();
            for call in calls {
                let method = call["method"].as_str().unwrap_or("?").to_owned();
                seen.calls.lock().unwrap().push((method.clone(), call["params"].clone(), batched));
                let mut answer: Value = client
                    .post(&upstream)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&call).unwrap())
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if method == "eth_getLogs"
                    && call["params"][0].get("blockHash").is_none()
                    && empty_logs.load(Ordering::SeqCst)
                {
                    answer["result"] = json!([]);
                }
                let hex = |v: &Value| u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok();
                if method == "eth_getLogs"
                    && let Some(log) = inject.lock().unwrap().clone()
                    && hex(&call["params"][0]["toBlock"]).is_some_and(|to| Some(to) < hex(&log["blockNumber"]))
                    && let Some(logs) = answer["result"].as_array_mut()
                {
                    logs.push(log);
                }
                let lag = lag_above.load(Ordering::SeqCst);
                if lag != u64::MAX {
                    let number = |v: &Value| u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok();
                    match method.as_str() {
                        "eth_getLogs" if call["params"][0].get("blockHash").is_some() => {
                            let block = number(&answer["result"][0]["blockNumber"]);
                            if block.is_some_and(|b| b > lag) {
                                answer = json!({"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32000, "message": "unknown block"}});
                            }
                        }
                        "eth_getLogs" => {
                            if let Some(logs) = answer["result"].as_array_mut() {
                                logs.retain(|log| number(&log["blockNumber"]).is_some_and(|b| b <= lag));
                            }
                        }
                        "eth_getBlockByNumber" if number(&answer["result"]["number"]).is_some_and(|b| b > lag) => {
                            answer["result"] = Value::Null;
                        }
                        "eth_getBlockReceipts" => answer["result"] = Value::Null,
                        _ => {}
                    }
                }
                answers.push(answer);
            }
            axum::Json(if batched { Value::Array(answers) } else { answers.pop().unwrap() }).into_response()
        }
    };
    let app = axum::Router::new().route("/", axum::routing::post(handler));
    format!("http://{}/", depositd_testkit::http::serve(app).await)
}

struct Setup {
    chain: TestChain,
    usdc: Address,
    app: TestApp,
    key: String,
    config: ChainConfig,
    seen: Arc<Seen>,
    lag_above: Arc<AtomicU64>,
    empty_logs: Arc<AtomicBool>,
    inject: Arc<Mutex<Option<Value>>>,
    max_batch: Arc<AtomicU64>,
}

/// anvil with USDC, the app with 2 confirmations and `native_deposits`, the watcher's RPC going
/// through a [`recording_proxy`].
async fn setup(db: &TestDb, native_deposits: Option<bool>) -> Setup {
    let chain = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let usdc = chain.tokens[0];
    let mut config = None;
    let app = TestApp::spawn_with(db, |c| {
        use_test_chain(&mut c.chains[0], &chain, 2, &[("USDC", usdc)]);
        c.chains[0].native_deposits = native_deposits;
        config = Some(c.chains[0].clone());
    })
    .await;
    let (_, key) = app.merchant("Fetch Shop", &Scope::ALL).await;
    let seen = Arc::new(Seen::default());
    let lag_above = Arc::new(AtomicU64::new(u64::MAX));
    let empty_logs = Arc::new(AtomicBool::new(false));
    let inject = Arc::new(Mutex::new(None));
    let max_batch = Arc::new(AtomicU64::new(u64::MAX));
    let mut config = config.unwrap();
    let proxy = recording_proxy(
        chain.rpc_url(),
        seen.clone(),
        lag_above.clone(),
        empty_logs.clone(),
        inject.clone(),
        max_batch.clone(),
    )
    .await;
    config.rpc_urls = vec![proxy.into()];
    Setup { chain, usdc, app, key, config, seen, lag_above, empty_logs, inject, max_batch }
}

impl Setup {
    fn watcher(&self) -> ChainWatcher {
        self.app.watcher(&self.config)
    }

    async fn catch_up(&self, watcher: &mut ChainWatcher) {
        for _ in 0..100 {
            if !watcher.tick().await.unwrap() {
                return;
            }
        }
        panic!("the watcher did not catch up");
    }

    async fn invoice(&self, body: Value) -> Value {
        self.app.created_invoice(&self.key, body).await
    }

    async fn get(&self, invoice: &Value) -> Value {
        self.app.get_json(&self.key, &format!("/api/v1/invoices/{}", invoice["id"].as_str().unwrap())).await.1
    }

    async fn head(&self) -> u64 {
        let head = self.chain.rpc("eth_blockNumber", json!([])).await;
        u64::from_str_radix(head.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    async fn cursor(&self) -> Option<u64> {
        let mut conn = self.app.store.conn().await.unwrap();
        cursors::get(&mut conn, 31337).await.unwrap().map(|c| c.block_number)
    }

    async fn block_of(&self, tx: alloy::primitives::B256) -> u64 {
        let receipt = self.chain.rpc("eth_getTransactionReceipt", json!([tx])).await;
        u64::from_str_radix(receipt["blockNumber"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    async fn assert_paid_once(&self, invoice: &Value) {
        let paid = self.get(invoice).await;
        assert_eq!((paid["status"].as_str(), paid["payments"].as_array().unwrap().len()), (Some("paid"), 1), "{paid}");
    }
}

fn address(invoice: &Value) -> &str {
    invoice["pay"]["address"].as_str().unwrap()
}

/// The block numbers of the `eth_getBlockByNumber` calls in `calls`, with whether each asked for
/// the transactions too.
fn block_calls(calls: &[(String, Value, bool)]) -> Vec<(u64, bool, bool)> {
    calls
        .iter()
        .filter(|(method, _, _)| method == "eth_getBlockByNumber")
        .filter_map(|(_, params, batched)| {
            let number = u64::from_str_radix(params[0].as_str()?.trim_start_matches("0x"), 16).ok()?;
            Some((number, params[1].as_bool().unwrap_or(false), *batched))
        })
        .collect()
}

async fn a_token_only_catch_up_fetches_no_block_of_a_quiet_final_range(db: TestDb) {
    let s = setup(&db, Some(false)).await;
    let first = s.invoice(json!({"amount": "10"})).await;
    let second = s.invoice(json!({"amount": "5"})).await;
    s.chain.mine(20).await;
    let paid_first = s.block_of(s.chain.pay_token(s.usdc, address(&first), 10_000_000).await).await;
    s.chain.mine(20).await;
    let paid_second = s.block_of(s.chain.pay_token(s.usdc, address(&second), 5_000_000).await).await;
    s.chain.mine(QUIET).await;
    let head = s.head().await;
    let last_final = head - 128;
    assert!(paid_second < last_final, "the payments are in final blocks");

    let mut watcher = s.watcher();
    s.catch_up(&mut watcher).await;
    s.assert_paid_once(&first).await;
    s.assert_paid_once(&second).await;
    assert!(s.cursor().await >= Some(head));

    let calls = s.seen.take();
    let blocks = block_calls(&calls);
    assert!(blocks.iter().all(|(_, full, _)| !full), "no block with its transactions: {blocks:?}");
    // In the final blocks only the ranges' first and last blocks (in the batch with their
    // eth_getLogs) and the two blocks that hold a payment were asked for; every block near the
    // head once, as a header.
    let deep: Vec<u64> = blocks.iter().filter(|(n, _, _)| *n <= last_final).map(|(n, _, _)| *n).collect();
    assert!(deep.contains(&paid_first) && deep.contains(&paid_second), "{deep:?}");
    let ranges = calls.iter().filter(|(m, p, _)| m == "eth_getLogs" && p[0].get("blockHash").is_none()).count();
    assert!(deep.len() <= 2 * ranges + 2, "{} block calls for {} final blocks: {deep:?}", deep.len(), last_final + 1);
    assert!(deep.len() < 20, "far fewer calls than final blocks ({}): {deep:?}", last_final + 1);
    let deep_batched = blocks.iter().filter(|(n, _, batched)| *n <= last_final && *batched).count();
    assert_eq!(deep_batched, deep.len(), "final blocks are asked for in batches");
    let near = blocks.iter().filter(|(n, _, _)| *n > last_final).count() as u64;
    assert!(near >= head - last_final && near <= head - last_final + 2, "near the head every header: {near}");

    // Real time: a new payment near the head is found from headers alone.
    let third = s.invoice(json!({"amount": "3"})).await;
    s.chain.pay_token(s.usdc, address(&third), 3_000_000).await;
    s.chain.mine(2).await;
    s.catch_up(&mut watcher).await;
    s.assert_paid_once(&third).await;
    let blocks = block_calls(&s.seen.take());
    assert!(!blocks.is_empty() && blocks.iter().all(|(_, full, _)| !full), "{blocks:?}");
    let mut conn = s.app.store.conn().await.unwrap();
    assert_eq!(deposits::all_on_chain(&mut conn, 31337).await.unwrap().len(), 3);
}

async fn a_lagging_nodes_empty_answer_is_refused_in_token_only_mode(db: TestDb) {
    let s = setup(&db, Some(false)).await;
    let invoice = s.invoice(json!({"amount": "10"})).await;
    s.chain.mine(10).await;
    let paid_in = s.block_of(s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await).await;
    s.chain.mine(QUIET).await;

    // Final range: the node answering has nothing past the block before the payment. Its
    // eth_getLogs says "no logs" there, and its missing last header refuses the range.
    s.lag_above.store(paid_in - 1, Ordering::SeqCst);
    let mut watcher = s.watcher();
    for _ in 0..3 {
        match watcher.tick().await {
            Err(WatchError::Inconsistent(why)) => assert!(why.contains("lagging") || why.contains("missing"), "{why}"),
            Ok(more) => assert!(more, "the watcher claims to have caught up past a block its node lacks"),
            Err(other) => panic!("{other:?}"),
        }
        assert!(s.cursor().await.is_none_or(|c| c < paid_in), "the cursor stays before the payment");
    }
    assert_eq!(s.get(&invoice).await["status"], "pending");
    s.lag_above.store(u64::MAX, Ordering::SeqCst);
    s.catch_up(&mut watcher).await;
    s.assert_paid_once(&invoice).await;

    // Near the head, headers only: a node that has the blocks but answers a range with "no
    // logs" is caught by the payment block's bloom; asked again by hash, the payment is found.
    let recovered = s.invoice(json!({"amount": "2"})).await;
    s.empty_logs.store(true, Ordering::SeqCst);
    s.chain.pay_token(s.usdc, address(&recovered), 2_000_000).await;
    s.chain.mine(3).await;
    s.seen.take();
    s.catch_up(&mut watcher).await;
    s.empty_logs.store(false, Ordering::SeqCst);
    s.assert_paid_once(&recovered).await;
    let calls = s.seen.take();
    assert!(calls.iter().any(|(m, p, _)| m == "eth_getLogs" && p[0].get("blockHash").is_some()), "asked by hash");
    assert!(block_calls(&calls).iter().all(|(_, full, _)| !full));

    // A node near the head that lacks the payment's block: its empty answer is refused (the
    // block is missing, by number, by hash and by receipts) until the node has the block.
    let near = s.invoice(json!({"amount": "4"})).await;
    let before = s.cursor().await.unwrap();
    let paid_near = s.block_of(s.chain.pay_token(s.usdc, address(&near), 4_000_000).await).await;
    s.chain.mine(3).await;
    s.lag_above.store(paid_near - 1, Ordering::SeqCst);
    for _ in 0..2 {
        assert!(watcher.tick().await.is_err(), "a range whose logs cannot be vouched for is refused");
        assert!(s.cursor().await.unwrap() < paid_near && s.cursor().await.unwrap() >= before);
    }
    assert_eq!(s.get(&near).await["status"], "pending");
    s.lag_above.store(u64::MAX, Ordering::SeqCst);
    s.catch_up(&mut watcher).await;
    s.assert_paid_once(&near).await;
}

async fn native_deposits_are_found_in_batched_blocks_when_on(db: TestDb) {
    let s = setup(&db, None).await;
    let usdc = s.invoice(json!({"amount": "10"})).await;
    let eth = s.invoice(json!({"amount": "30", "asset": "ETH"})).await;
    s.chain.mine(5).await;
    s.chain.pay_native(address(&eth), 10_000_000_000_000_000).await;
    s.chain.pay_token(s.usdc, address(&usdc), 10_000_000).await;
    s.chain.mine(QUIET).await;
    let head = s.head().await;
    let last_final = head - 128;

    let mut watcher = s.watcher();
    s.catch_up(&mut watcher).await;
    s.assert_paid_once(&usdc).await;
    s.assert_paid_once(&eth).await;
    let blocks = block_calls(&s.seen.take());
    // Every block once, with its transactions: the final ones in batches, the rest one by one.
    let mut numbers: Vec<u64> = blocks.iter().map(|(n, _, _)| *n).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers, (0..=head).collect::<Vec<u64>>());
    assert!(blocks.iter().all(|(_, full, _)| *full), "every block with its transactions");
    assert!(blocks.iter().filter(|(n, _, _)| *n <= last_final).all(|(_, _, batched)| *batched));
    assert!(blocks.iter().filter(|(n, _, _)| *n > last_final).all(|(_, _, batched)| !batched));

    // And in real time.
    let later = s.invoice(json!({"amount": "30", "asset": "ETH"})).await;
    s.chain.pay_native(address(&later), 10_000_000_000_000_000).await;
    s.chain.mine(2).await;
    s.catch_up(&mut watcher).await;
    s.assert_paid_once(&later).await;
}

async fn native_deposits_off_sees_no_native_transfer_and_takes_no_native_invoice(db: TestDb) {
    let s = setup(&db, Some(false)).await;
    // The API takes no invoice in the native coin: the watcher would never see its payment.
    let response = s.app.create_invoice(&s.key, json!({"amount": "30", "asset": "ETH"})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_asset", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("accepted: USDC"), "{body}");

    // ETH sent to a USDC invoice's address is not seen (documented: chains/README.md); the
    // USDC payment is.
    let invoice = s.invoice(json!({"amount": "10"})).await;
    s.chain.pay_native(address(&invoice), 10_000_000_000_000_000).await;
    s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await;
    s.chain.mine(QUIET).await;
    let mut watcher = s.watcher();
    s.catch_up(&mut watcher).await;
    s.chain.pay_native(address(&invoice), 10_000_000_000_000_000).await;
    s.chain.mine(2).await;
    s.catch_up(&mut watcher).await;
    let paid = s.get(&invoice).await;
    assert_eq!((paid["status"].as_str(), paid["amount_paid"].as_str()), (Some("paid"), Some("10")), "{paid}");
    let mut conn = s.app.store.conn().await.unwrap();
    let recorded = deposits::all_on_chain(&mut conn, 31337).await.unwrap();
    assert_eq!(recorded.len(), 1, "only the token transfer: {recorded:?}");
    assert_eq!(recorded[0].asset, "USDC");
}

/// A catch-up `eth_getLogs` answer that holds a genuine payment log from a block above the range
/// asked for (a tampering or confused node) refuses the whole range: no deposit is recorded above
/// the cursor, the cursor never jumps to the log's block, and once the answers are true the
/// payment is found once, in its own range.
async fn a_log_outside_the_asked_range_refuses_the_range(db: TestDb) {
    let s = setup(&db, Some(false)).await;
    let invoice = s.invoice(json!({"amount": "10"})).await;
    s.chain.mine(QUIET).await;
    let tx = s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await;
    let paid_in = s.block_of(tx).await;
    // The payment is near the head; the catch-up's final range ends below it.
    s.chain.mine(10).await;
    let receipt = s.chain.rpc("eth_getTransactionReceipt", json!([tx])).await;
    let log = receipt["logs"][0].clone();
    assert_eq!(log["blockNumber"], receipt["blockNumber"]);
    *s.inject.lock().unwrap() = Some(log);

    let mut watcher = s.watcher();
    for _ in 0..4 {
        match watcher.tick().await {
            Err(WatchError::Inconsistent(why)) => assert!(why.contains("refused"), "{why}"),
            Ok(_) => {}
            Err(other) => panic!("{other:?}"),
        }
        let cursor = s.cursor().await;
        assert!(cursor.is_none_or(|c| c < paid_in), "the cursor stays below the payment: {cursor:?}");
        let mut conn = s.app.store.conn().await.unwrap();
        let recorded = deposits::all_on_chain(&mut conn, 31337).await.unwrap();
        assert!(recorded.is_empty(), "nothing recorded from a log outside its range: {recorded:?}");
    }
    assert_eq!(s.get(&invoice).await["status"], "pending");
    *s.inject.lock().unwrap() = None;
    s.catch_up(&mut watcher).await;
    s.assert_paid_once(&invoice).await;
}

/// After a token-only catch-up over final blocks the watcher keeps only a few of their hashes
/// (range ends, blocks that hold a deposit). A reorg of the cursor's block right after it (its
/// parent stays) finds no stored hash one block down: the unwinding walks the stored hashes
/// instead, stops at the deposit's block, which is still canonical, and reverses nothing that
/// the reorg did not touch. A rescan of blocks without a kept hash is not refused.
async fn a_shallow_reorg_after_a_sparse_catch_up_reverses_no_untouched_deposit(db: TestDb) {
    let s = setup(&db, Some(false)).await;
    let invoice = s.invoice(json!({"amount": "10"})).await;
    s.chain.mine(QUIET).await;
    let paid_in = s.block_of(s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await).await;
    s.chain.mine(150).await;
    let head = s.head().await;
    let last_final = head - 128;
    assert!(paid_in < last_final - 1 && paid_in > last_final - 100, "the payment is final, in the stored window");

    let mut watcher = s.watcher();
    for _ in 0..20 {
        if s.cursor().await >= Some(last_final) {
            break;
        }
        watcher.tick().await.unwrap();
    }
    assert_eq!(s.cursor().await, Some(last_final), "caught up over the final blocks only");
    s.assert_paid_once(&invoice).await;
    let mut conn = s.app.store.conn().await.unwrap();
    let deposit = deposits::all_on_chain(&mut conn, 31337).await.unwrap().remove(0);
    drop(conn);
    assert_eq!(deposit.state, depositd_core::deposit::DepositState::Confirmed);

    // `depositd rescan` of blocks the catch-up kept no hash for is not refused: they lead up to
    // the cursor's kept block.
    let rescanned = watcher.rescan(paid_in - 5, last_final - 1).await.unwrap();
    assert_eq!((rescanned.blocks, rescanned.transfers, rescanned.recorded), (last_final - paid_in + 5, 1, 0));

    // The cursor's block and everything above it are replaced; its parent and the deposit stay.
    let chain = &s.chain;
    let hash_at = |number: u64| async move {
        chain.rpc("eth_getBlockByNumber", json!([format!("{number:#x}"), false])).await["hash"].clone()
    };
    let (before, kept) = (hash_at(last_final).await, hash_at(last_final - 1).await);
    // A transaction nobody watches, in the new cursor block: its hash differs from the old one.
    let other =
        json!({"from": depositd_testkit::chain::payer_address(), "to": Address::repeat_byte(0xd0), "value": "0x1"});
    s.chain.rpc("anvil_reorg", json!([head - last_final + 1, [[other, 0]]])).await;
    assert_ne!(hash_at(last_final).await, before, "the cursor's block is replaced");
    assert_eq!(hash_at(last_final - 1).await, kept, "its parent stays");
    s.catch_up(&mut watcher).await;
    let mut conn = s.app.store.conn().await.unwrap();
    let after = deposits::all_on_chain(&mut conn, 31337).await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!((after[0].id, after[0].state, after[0].generation), (deposit.id, deposit.state, 0), "{after:?}");
    s.assert_paid_once(&invoice).await;
    assert!(s.cursor().await >= Some(head));
}

/// The residual of the token-only catch-up's lagging-node guard, shown: a node that has every
/// header but answers the range's `eth_getLogs` with "no logs" (an incomplete log index). A
/// payment in the range's last block is caught (that header is fetched, its bloom promises a
/// watched token's `Transfer`, the block's logs are asked for again by hash); a payment in a block
/// between the anchors is not seen by the catch-up. `depositd rescan` over the range finds it.
async fn a_node_with_the_blocks_but_no_logs_in_catch_up_what_is_caught_and_what_rescan_repairs(db: TestDb) {
    let s = setup(&db, Some(false)).await;
    let middle = s.invoice(json!({"amount": "10"})).await;
    let last = s.invoice(json!({"amount": "5"})).await;
    s.chain.mine(QUIET).await;
    let paid_middle = s.block_of(s.chain.pay_token(s.usdc, address(&middle), 10_000_000).await).await;
    s.chain.mine(QUIET).await;
    let paid_last = s.block_of(s.chain.pay_token(s.usdc, address(&last), 5_000_000).await).await;
    s.chain.mine(128).await;
    let head = s.head().await;
    assert_eq!(paid_last, head - 128, "the second payment is in the last final block");

    s.empty_logs.store(true, Ordering::SeqCst);
    let mut watcher = s.watcher();
    for _ in 0..20 {
        if s.cursor().await >= Some(paid_last) {
            break;
        }
        watcher.tick().await.unwrap();
    }
    assert_eq!(s.cursor().await, Some(paid_last));
    s.empty_logs.store(false, Ordering::SeqCst);
    s.catch_up(&mut watcher).await;
    s.assert_paid_once(&last).await;
    assert_eq!(s.get(&middle).await["status"], "pending", "the residual: a block between the anchors");

    let rescanned = watcher.rescan(paid_middle - 1, paid_middle + 1).await.unwrap();
    assert_eq!((rescanned.transfers, rescanned.recorded), (1, 1));
    s.chain.mine(2).await;
    s.catch_up(&mut watcher).await;
    s.assert_paid_once(&middle).await;
    s.assert_paid_once(&last).await;
}

/// Switching `native_deposits` off while native-coin payments may still arrive is refused (at
/// daemon start and in check-config, through this check), naming the chain and the counts; once
/// they are closed it is not. A chain file with native deposits off and no token is refused.
async fn native_deposits_off_is_refused_while_native_payments_are_open(db: TestDb) {
    let s = setup(&db, None).await;
    let invoice = s.invoice(json!({"amount": "30", "asset": "ETH"})).await;
    let response = s.app.create_static_address(&s.key, json!({"customer_id": "c-1", "asset": "ETH"})).await;
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    s.invoice(json!({"amount": "10"})).await;

    let mut config = (*s.app.state.config).clone();
    let store = &s.app.store;
    let check = |config: depositd_core::config::Config| async move {
        let mut conn = store.conn().await.unwrap();
        depositd_core::invoicing::check_native_deposits_off(&mut conn, &config).await
    };
    assert_eq!(check(config.clone()).await, Ok(()), "native deposits on: nothing to refuse");
    config.chains[0].native_deposits = Some(false);
    let refused = check(config.clone()).await.unwrap_err();
    assert!(
        refused.contains("chain anvil") && refused.contains("1 open invoice(s) and 1 active static address(es)"),
        "{refused}"
    );

    let id = invoice["id"].as_str().unwrap();
    let cancelled = s
        .app
        .client
        .post(s.app.url(&format!("/api/v1/invoices/{id}/cancel")))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    assert!(cancelled.status().is_success());
    let refused = check(config.clone()).await.unwrap_err();
    assert!(refused.contains("0 open invoice(s) and 1 active static address(es)"), "{refused}");
    let mut conn = s.app.store.conn().await.unwrap();
    sqlx::query("UPDATE static_addresses SET status = 'disabled'").execute(&mut *conn).await.unwrap();
    drop(conn);
    assert_eq!(check(config).await, Ok(()), "the USDC invoice does not count");

    // A chain file with native deposits off and no token watches for nothing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anvil.toml");
    let shipped = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chains/anvil.toml"));
    std::fs::write(&path, format!("native_deposits = false\n{}", shipped.unwrap())).unwrap();
    let error = ChainConfig::load(&path).unwrap_err().to_string();
    assert!(error.contains("native_deposits: false on a chain without tokens"), "{error}");
}

/// A provider that caps batches (HTTP 413 above 7 calls): the catch-up halves its batches of full
/// blocks down to what passes and still completes.
async fn a_provider_that_caps_batches_does_not_stop_a_native_catch_up(db: TestDb) {
    catch_up_through_batch_cap(db, None, 7).await;
}

/// A provider that takes no batch at all: the token-only catch-up falls back to single calls
/// (the anchor headers first, then the logs) and still completes.
async fn a_provider_that_refuses_batches_does_not_stop_a_token_only_catch_up(db: TestDb) {
    catch_up_through_batch_cap(db, Some(false), 0).await;
}

async fn catch_up_through_batch_cap(db: TestDb, native: Option<bool>, cap: u64) {
    let s = setup(&db, native).await;
    let invoice = s.invoice(json!({"amount": "10"})).await;
    s.chain.mine(5).await;
    s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await;
    s.chain.mine(QUIET).await;
    s.max_batch.store(cap, Ordering::SeqCst);
    let head = s.head().await;
    let mut watcher = s.watcher();
    s.catch_up(&mut watcher).await;
    s.assert_paid_once(&invoice).await;
    assert!(s.cursor().await >= Some(head));
    let calls = s.seen.take();
    if cap == 0 {
        assert!(calls.iter().any(|(m, _, _)| m == "eth_getLogs"), "the logs were asked for one by one");
    } else {
        let blocks = block_calls(&calls);
        assert!(blocks.iter().any(|(_, full, batched)| *full && *batched), "batches of full blocks under the cap");
    }
}
