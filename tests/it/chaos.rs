//! The chaos test (issue 16): the real `depositd run` binary behind a fault-injecting JSON-RPC
//! proxy (`fault_proxy.rs`), paid in every way the API offers while it is SIGKILLed and restarted
//! and anvil reorganises at depth 1 to 5 (a reorg at depth >= `confirmations` never drops a payer's
//! payment, only depositd's own transactions: losing credited money needs issue 21's suspense
//! account; see `reorg`). Then the faults stop, the daemon is given time to settle, and what it
//! says is checked against what the chain says: every canonical payment recorded exactly once and
//! credited, nothing credited from an orphaned block, every invoice's status and amount paid right,
//! every pass-through forwarded exactly, balances equal to credits less fees, and `depositd ledger
//! verify` passes.
//!
//! Seeded: `CHAOS_SEED` (default 16) picks payments, amounts, kill and reorg moments and the
//! proxy's faults; the seed is printed first so a failure can be replayed. `CHAOS_SECS` (default
//! 90) is how long the chaos lasts, `CHAOS_SETTLE_SECS` (default 120) how long the daemon gets to
//! settle once it stops. The daemon's log is kept in the temp directory (path printed).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use depositd_core::api_key::Scope;
use depositd_core::store::chain_txs;
use depositd_core::wallet::HdWallet;
use depositd_testkit::anvil::{AnvilOptions, free_port};
use depositd_testkit::chain::TestChain;
use depositd_testkit::db::merchant_with_key;
use depositd_testkit::tokens::PAYER_MINT;
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::cli::Daemon;
use crate::fault_proxy::{FaultProxy, Faults, Rng, hex_u64};
use crate::helpers::{TestDb, depositd};

/// One chaos run at a time: each starts anvil, a daemon and a proxy, and 2 cores are enough for one.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    crate::helpers::init_tracing();
    let _one = ONE_AT_A_TIME.lock().await;
    run(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    crate::helpers::init_tracing();
    let db = TestDb::postgres().await;
    let _one = ONE_AT_A_TIME.lock().await;
    run(db).await;
}

const CONFIRMATIONS: u64 = 2;
const RPC_TIMEOUT_MS: u64 = 1_000;
const TRANSFER_TOPIC: &str = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";
/// The merchant's fee: 1%, nothing fixed.
fn fee_on(paid: U256) -> U256 {
    paid / U256::from(100u64)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Paid in full, one transfer.
    Full,
    /// Paid short and left so.
    Partial,
    /// Paid in two parts, the second some time later.
    Split,
    /// Paid more than asked.
    Over,
    /// Receiver override: forwarded to the merchant's own address.
    PassThrough,
}

/// An invoice the test created and paid (or tried to).
#[derive(Debug, Clone)]
struct Payment {
    kind: Kind,
    id: String,
    address: Address,
    asset: String,
    amount: U256,
    fee: U256,
    merchant_amount: U256,
    receiver: Option<Address>,
    sent: Vec<String>,
}

/// A transfer to one of our addresses on the canonical chain.
#[derive(Debug, Clone)]
struct Transfer {
    tx_hash: String,
    log_index: i64,
    block_hash: String,
    block_number: u64,
    to: Address,
    asset: String,
    amount: U256,
}

/// anvil, reached directly (never through the proxy); chain-changing calls take `lock`.
struct Chain {
    url: String,
    client: reqwest::Client,
    lock: tokio::sync::Mutex<()>,
}

impl Chain {
    async fn rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer: Value = self
            .client
            .post(&self.url)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("{method}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{method}: {e}"))?;
        match answer.get("error") {
            Some(error) => Err(format!("{method}: {error}")),
            None => Ok(answer["result"].clone()),
        }
    }

    async fn must(&self, method: &str, params: Value) -> Value {
        self.rpc(method, params).await.unwrap_or_else(|e| panic!("anvil: {e}"))
    }

    async fn head(&self) -> u64 {
        hex_u64(&self.must("eth_blockNumber", json!([])).await).unwrap()
    }

    /// Sends from an unlocked dev account (automine: mined when this returns); the hash.
    async fn send(&self, from: Address, to: Address, value: U256, data: Option<String>) -> String {
        let mut tx = json!({"from": from, "to": to, "value": format!("{value:#x}")});
        if let Some(data) = data {
            tx["data"] = json!(data);
        }
        let _guard = self.lock.lock().await;
        let hash = self.must("eth_sendTransaction", json!([tx])).await;
        // automine mines it, but not necessarily before eth_sendTransaction answers.
        for _ in 0..100 {
            let receipt = self.must("eth_getTransactionReceipt", json!([hash])).await;
            if !receipt.is_null() {
                assert_eq!(receipt["status"], "0x1", "payment {hash} reverted");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hash.as_str().unwrap().to_owned()
    }

    async fn pay_token(&self, from: Address, token: Address, to: Address, amount: U256) -> String {
        let data =
            format!("0xa9059cbb{:0>64}{:0>64}", alloy::primitives::hex::encode(to.as_slice()), format!("{amount:x}"));
        self.send(from, token, U256::ZERO, Some(data)).await
    }

    async fn token_balance(&self, token: Address, owner: Address) -> U256 {
        let data = format!("0x70a08231{:0>64}", alloy::primitives::hex::encode(owner.as_slice()));
        let answer = self.must("eth_call", json!([{"to": token, "data": data}, "latest"])).await;
        answer.as_str().unwrap().parse().unwrap()
    }

    async fn native_balance(&self, owner: Address) -> U256 {
        self.must("eth_getBalance", json!([owner, "latest"])).await.as_str().unwrap().parse().unwrap()
    }
}

/// The real daemon, restarted on the same configuration and database; its log goes to a file.
struct Runner {
    config: PathBuf,
    port: u16,
    log: PathBuf,
    child: Option<Daemon>,
    starts: u32,
}

impl Runner {
    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the daemon and waits for its API (a few tries: a start can lose a port race).
    fn start(&mut self) {
        for attempt in 0..5 {
            self.starts += 1;
            let mut command = depositd();
            command
                .arg("--config")
                .arg(&self.config)
                .arg("run")
                .env("DEPOSITD__API__LISTEN", format!("127.0.0.1:{}", self.port))
                .env("DEPOSITD__API__PUBLIC_URL", self.api())
                .env("RUST_LOG", "info")
                .stderr(std::process::Stdio::piped());
            let mut child = Daemon(command.spawn().expect("start depositd"));
            let stderr = child.0.stderr.take().unwrap();
            let (up_tx, up_rx) = std::sync::mpsc::channel();
            let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
            let start = self.starts;
            writeln!(log, "===== start {start} (pid {}) =====", child.0.id()).ok();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("API listening") {
                        let _ = up_tx.send(());
                    }
                    let _ = writeln!(log, "[{start}] {line}");
                }
            });
            if up_rx.recv_timeout(Duration::from_secs(60)).is_ok() {
                self.child = Some(child);
                return;
            }
            eprintln!("chaos: daemon start {} failed (attempt {attempt}); see {}", self.starts, self.log.display());
            drop(child);
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("the daemon would not start; see {}", self.log.display());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.0.kill(); // SIGKILL
            let _ = child.0.wait();
        }
    }

    /// Whether the daemon exited on its own (with the status), restarting it if so.
    fn check_alive(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.0.try_wait().ok()??;
        self.child = None;
        let died = format!("the daemon exited on its own ({status}) after start {}", self.starts);
        self.start();
        Some(died)
    }
}

/// The merchant API over HTTP, patient with a daemon that is being killed and restarted.
#[derive(Clone)]
struct Api {
    base: String,
    key: String,
    client: reqwest::Client,
}

impl Api {
    /// POSTs with an Idempotency-Key, retrying until a 2xx (90 s at most).
    async fn post(&self, path: &str, body: Value) -> Value {
        let idempotency_key = uuid::Uuid::now_v7().to_string();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        while Instant::now() < deadline {
            let sent = self
                .client
                .post(format!("{}{path}", self.base))
                .header("x-api-key", &self.key)
                .header("idempotency-key", &idempotency_key)
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return response.json().await.unwrap(),
                Ok(response) => last = format!("{} {}", response.status(), response.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("POST {path} {body} never succeeded: {last}");
    }

    async fn get(&self, path: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        while Instant::now() < deadline {
            let sent = self
                .client
                .get(format!("{}{path}", self.base))
                .header("x-api-key", &self.key)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return response.json().await.unwrap(),
                Ok(response) => last = format!("{} {}", response.status(), response.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("GET {path} never succeeded: {last}");
    }

    /// Every item of a paginated list.
    async fn all(&self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let separator = if path.contains('?') { '&' } else { '?' };
            let mut url = format!("{path}{separator}limit=100");
            if let Some(after) = &after {
                url.push_str(&format!("&starting_after={after}"));
            }
            let page = self.get(&url).await;
            let data = page["data"].as_array().unwrap().clone();
            after = data.last().map(|d| d["id"].as_str().unwrap().to_owned());
            items.extend(data);
            if page["has_more"] != true || after.is_none() {
                return items;
            }
        }
    }
}

fn units(v: &Value) -> U256 {
    v.as_str().unwrap_or_else(|| panic!("not a base-units string: {v}")).parse().unwrap()
}

fn addr(v: &Value) -> Address {
    v.as_str().unwrap_or_else(|| panic!("not an address: {v}")).parse().unwrap()
}

struct Tokens {
    by_symbol: BTreeMap<String, Address>,
}

impl Tokens {
    fn address(&self, asset: &str) -> Option<Address> {
        self.by_symbol.get(asset).copied()
    }
}

async fn run(db: TestDb) {
    let seed = env_u64("CHAOS_SEED", 16);
    let chaos_for = Duration::from_secs(env_u64("CHAOS_SECS", 90));
    let settle_for = Duration::from_secs(env_u64("CHAOS_SETTLE_SECS", 120));
    eprintln!(
        "chaos [{}]: CHAOS_SEED={seed} CHAOS_SECS={} CHAOS_SETTLE_SECS={} (set them to replay)",
        db.backend,
        chaos_for.as_secs(),
        settle_for.as_secs()
    );
    let began = Instant::now();
    let mut rng = Rng::new(seed);

    // The chain: anvil mining each transaction at once, a miner task for the blocks in between.
    let mut anvil = TestChain::launch(AnvilOptions::default()).await.unwrap();
    let chain = Arc::new(Chain { url: anvil.rpc_url(), client: reqwest::Client::new(), lock: Default::default() });
    let accounts: Vec<Address> =
        chain.must("eth_accounts", json!([])).await.as_array().unwrap().iter().map(addr).collect();
    let funder = accounts[0];
    let payers: Vec<Address> = accounts[1..=4].to_vec();
    let mut by_symbol = BTreeMap::new();
    for (name, symbol) in [("USD Coin", "USDC"), ("Tether USD", "USDT")] {
        let address = anvil.deploy_token(name, symbol, &payers, U256::from(PAYER_MINT)).await.unwrap();
        by_symbol.insert(symbol.to_owned(), address);
    }
    let tokens = Tokens { by_symbol };
    let proxy = FaultProxy::start(anvil.rpc_url(), rng.next_u64(), Faults::default()).await;

    // Configuration: the chain reached through the proxy, with a short RPC timeout.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("chains")).unwrap();
    let mut chain_file = format!(
        "name = \"anvil\"\nchain_id = 31337\nrpc_urls = [\"{}\"]\nrpc_urls_env = \"CHAOS_NO_SUCH_VAR\"\n\
         ws_url_env = \"CHAOS_NO_SUCH_VAR_WS\"\nconfirmations = {CONFIRMATIONS}\nblock_time_ms = 1000\n\
         poll_interval_ms = 250\nmax_block_range = 500\nrpc_timeout_ms = {RPC_TIMEOUT_MS}\nstart_block = 0\n\
         testnet = true\n\n[native]\nsymbol = \"ETH\"\ndecimals = 18\n",
        proxy.url
    );
    for (symbol, address) in &tokens.by_symbol {
        chain_file.push_str(&format!(
            "\n[[tokens]]\nsymbol = \"{symbol}\"\naddress = \"{}\"\ndecimals = 6\n",
            address.to_checksum(None)
        ));
    }
    std::fs::write(dir.path().join("chains/anvil.toml"), chain_file).unwrap();
    let mnemonic = HdWallet::generate_mnemonic();
    let treasury = HdWallet::from_mnemonic(&mnemonic).unwrap().treasury_address();
    let config = dir.path().join("depositd.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n\n[chains]\ndir = \"{}\"\ndefault_asset = \"USDC\"\n\n\
             [wallet]\nmnemonic = \"{}\"\n\n[pricing.static_usd_rates]\nUSD = \"1\"\nETH = \"3000\"\n",
            db.url.expose(),
            dir.path().join("chains").display(),
            mnemonic.expose_secret()
        ),
    )
    .unwrap();
    let store = db.store().await;
    let (_, key) = merchant_with_key(&store, "Chaos Shop", Decimal::ONE, &Scope::ALL).await.unwrap();
    let key = key.expose_secret().to_owned();

    // The treasury's gas money, recorded through the binary, buried deeper than any reorg; then
    // enough blocks that the daemon's first scan is a range the proxy calls too large.
    let funding = chain.send(funder, treasury, U256::from(100u128 * 10u128.pow(18)), None).await;
    chain.must("anvil_mine", json!([150])).await;
    let output = depositd()
        .arg("--config")
        .arg(&config)
        .args(["treasury", "fund", "--chain", "anvil", "--tx", &funding])
        .output()
        .unwrap();
    assert!(output.status.success(), "treasury fund: {}", String::from_utf8_lossy(&output.stderr));

    let log = std::env::temp_dir().join(format!("depositd-chaos-{}-{seed}-{}.log", db.backend, std::process::id()));
    let _ = std::fs::remove_file(&log);
    eprintln!("chaos [{}]: daemon log at {}", db.backend, log.display());
    let mut runner = Runner { config: config.clone(), port: free_port().unwrap(), log, child: None, starts: 0 };
    proxy.set_enabled(true);
    tokio::task::block_in_place(|| runner.start());
    let api = Api { base: runner.api(), key, client: reqwest::Client::new() };

    // Blocks keep coming, as on a live chain.
    let mining = Arc::new(AtomicBool::new(true));
    let miner = {
        let (chain, mining) = (chain.clone(), mining.clone());
        tokio::spawn(async move {
            while mining.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(600)).await;
                let _guard = chain.lock.lock().await;
                let _ = chain.rpc("anvil_mine", json!([1])).await;
            }
        })
    };

    // Static addresses, one per asset.
    let mut statics: BTreeMap<Address, (String, String)> = BTreeMap::new(); // address -> (id, asset)
    for (i, asset) in ["USDC", "USDT", "ETH"].iter().enumerate() {
        let rail = api
            .post("/api/v1/static-addresses", json!({"customer_id": format!("chaos-player-{i}"), "asset": asset}))
            .await;
        statics.insert(addr(&rail["address"]), (rail["id"].as_str().unwrap().to_owned(), asset.to_string()));
    }
    let static_list: Vec<(Address, String)> = statics.iter().map(|(a, (_, asset))| (*a, asset.clone())).collect();

    // ---- Chaos ----
    let mut payments: Vec<Payment> = Vec::new();
    let mut static_sent: Vec<(Address, String, U256)> = Vec::new();
    let mut rest_due: Vec<(usize, U256)> = Vec::new(); // split payments' second parts
    let mut last_paid: Option<String>;
    let mut failures: Vec<String> = Vec::new();
    let (mut kills, mut reorgs) = (0u32, Vec::<String>::new());
    let chaos_began = Instant::now();
    let mut next_kill = chaos_began + Duration::from_millis(rng.range(8_000, 20_000));
    let mut next_reorg = chaos_began + Duration::from_millis(rng.range(5_000, 12_000));
    while chaos_began.elapsed() < chaos_for {
        if let Some(died) = tokio::task::block_in_place(|| runner.check_alive()) {
            failures.push(died);
        }
        if Instant::now() >= next_kill {
            tokio::task::block_in_place(|| {
                runner.kill();
                std::thread::sleep(Duration::from_millis(rng.range(0, 1_500)));
                runner.start();
            });
            kills += 1;
            next_kill = Instant::now() + Duration::from_millis(rng.range(10_000, 22_000));
        }
        let payer = payers[rng.range(0, payers.len() as u64 - 1) as usize];
        // Second parts of split payments come some time later.
        if !rest_due.is_empty() && rng.chance(0.3) {
            let (at, rest) = rest_due.remove(0);
            let p = &payments[at];
            let hash = pay(&chain, &tokens, payer, &p.asset, p.address, rest).await;
            payments[at].sent.push(hash);
            continue;
        }
        let roll = rng.range(0, 99);
        if roll < 20 {
            let (address, asset) = static_list[rng.range(0, 2) as usize].clone();
            let amount = if asset == "ETH" {
                U256::from(rng.range(1_000, 20_000)) * U256::from(1_000_000_000_000u64)
            } else {
                U256::from(rng.range(100, 5_000)) * U256::from(10_000u64)
            };
            last_paid = Some(pay(&chain, &tokens, payer, &asset, address, amount).await);
            static_sent.push((address, asset, amount));
        } else {
            let kind = match roll {
                20..=49 => Kind::Full,
                50..=59 => Kind::Partial,
                60..=69 => Kind::Split,
                70..=74 => Kind::Over,
                _ => Kind::PassThrough,
            };
            let asset = ["USDC", "USDT", "ETH"][rng.range(0, 2) as usize];
            let mut body = json!({"amount": format!("{}.{:02}", rng.range(2, 60), rng.range(0, 99)), "currency": "USD", "asset": asset});
            let receiver = (kind == Kind::PassThrough).then(|| {
                let mut bytes = [0u8; 20];
                for b in bytes.iter_mut() {
                    *b = rng.next_u64() as u8;
                }
                Address::from(bytes)
            });
            if let Some(receiver) = receiver {
                body["receiver_override"] = json!(true);
                body["receiver_override_address"] = json!(receiver.to_checksum(None));
            }
            let invoice = api.post("/api/v1/invoices", body).await;
            let amount = units(&invoice["pay"]["amount_base_units"]);
            let mut p = Payment {
                kind,
                id: invoice["id"].as_str().unwrap().to_owned(),
                address: addr(&invoice["pay"]["address"]),
                asset: asset.to_owned(),
                amount,
                fee: units(&invoice["fee_base_units"]),
                merchant_amount: units(&invoice["merchant_amount_base_units"]),
                receiver,
                sent: Vec::new(),
            };
            let first = match kind {
                Kind::Full | Kind::PassThrough => amount,
                Kind::Partial | Kind::Split => amount * U256::from(rng.range(30, 80)) / U256::from(100u64),
                Kind::Over => amount * U256::from(rng.range(101, 130)) / U256::from(100u64),
            };
            p.sent.push(pay(&chain, &tokens, payer, asset, p.address, first).await);
            last_paid = p.sent.last().cloned();
            if kind == Kind::Split {
                rest_due.push((payments.len(), amount - first));
            }
            payments.push(p);
        }
        // Reorganise just after a payment, so that the blocks replaced hold some.
        if Instant::now() >= next_reorg {
            reorgs.push(reorg(&chain, &payers, &mut rng, last_paid.as_deref()).await);
            next_reorg = Instant::now() + Duration::from_millis(rng.range(4_000, 9_000));
        }
        tokio::time::sleep(Duration::from_millis(rng.range(200, 900))).await;
    }
    // Split payments still owed their second part get it now, before the faults stop.
    let payer = payers[0];
    for (at, rest) in std::mem::take(&mut rest_due) {
        let p = &payments[at];
        let hash = pay(&chain, &tokens, payer, &p.asset, p.address, rest).await;
        payments[at].sent.push(hash);
    }
    // ---- The faults stop; the chain settles ----
    proxy.set_enabled(false);
    if let Some(died) = tokio::task::block_in_place(|| runner.check_alive()) {
        failures.push(died);
    }
    let chaos_took = chaos_began.elapsed();
    eprintln!(
        "chaos [{}]: {} invoices, {} static deposits, {kills} kills, {} reorgs ({}), proxy: {} requests, faults {}; calls {}",
        db.backend,
        payments.len(),
        static_sent.len(),
        reorgs.len(),
        reorgs.join("; "),
        proxy.requests(),
        proxy.stats().render(false),
        proxy.stats().render(true)
    );

    // What the chain holds: read once, now that no payer sends and nothing reorganises.
    chain.must("anvil_mine", json!([1])).await;
    let mut watched: HashMap<Address, String> = HashMap::new(); // address -> asset
    for p in &payments {
        watched.insert(p.address, p.asset.clone());
    }
    for (address, (_, asset)) in &statics {
        watched.insert(*address, asset.clone());
    }
    let truth = canonical_transfers(&chain, &tokens, &watched, treasury).await;

    // Wait (bounded) for the daemon to agree with the chain.
    let settle_began = Instant::now();
    let mut mismatches;
    loop {
        mismatches = check(&api, &chain, &tokens, &store, &payments, &statics, &truth).await;
        if mismatches.is_empty() || settle_began.elapsed() > settle_for {
            break;
        }
        if let Some(died) = tokio::task::block_in_place(|| runner.check_alive()) {
            failures.push(died);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let settle_took = settle_began.elapsed();
    mining.store(false, Ordering::SeqCst);
    let _ = miner.await;
    failures.extend(mismatches);

    // The reconciliation, through the binary, beside the running daemon.
    let output = depositd().arg("--config").arg(&config).args(["ledger", "verify"]).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() || !report.contains("OK:") {
        failures.push(format!("depositd ledger verify failed ({}):\n{report}", output.status));
    }

    // The chaos must have happened, or this test could not fail.
    for fault in ["429", "5xx", "truncated", "hang", "lagging_empty_logs", "head_backwards", "range_limit"] {
        if proxy.stats().get(fault) == 0 {
            failures.push(format!("the proxy never injected {fault}: the run proves nothing about it"));
        }
    }
    if kills == 0 || reorgs.is_empty() || payments.is_empty() || truth.is_empty() {
        failures.push(format!(
            "too little chaos: {kills} kills, {} reorgs, {} invoices, {} canonical transfers",
            reorgs.len(),
            payments.len(),
            truth.len()
        ));
    }
    // How much of the reorg handling the run exercised, from the daemon's own records.
    let deposits = api.all("/api/v1/deposits?chain=anvil").await;
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut recredited = (0, 0); // (deposits credited again after a reversal, of them static)
    for d in &deposits {
        *states.entry(d["state"].as_str().unwrap().to_owned()).or_default() += 1;
        let entries = d["ledger_entries"].as_array().map(Vec::as_slice).unwrap_or_default();
        let reversed = entries.iter().any(|e| e["type"] == "reversal");
        if reversed && d["state"] == "confirmed" {
            recredited.0 += 1;
            recredited.1 += usize::from(!d["static_address_id"].is_null());
        }
    }
    eprintln!(
        "chaos [{}]: deposits by state {states:?}; {} credited again after a reorg took them away ({} static)",
        db.backend, recredited.0, recredited.1
    );
    let by_kind = payments.iter().fold(BTreeMap::<String, usize>::new(), |mut m, p| {
        *m.entry(format!("{:?}", p.kind)).or_default() += 1;
        m
    });
    eprintln!(
        "chaos [{}]: seed {seed}; {} canonical transfers to our addresses; invoices by kind {by_kind:?}; \
         chaos {:.0}s, settle {:.0}s, total {:.0}s",
        db.backend,
        truth.len(),
        chaos_took.as_secs_f64(),
        settle_took.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    let log_path = runner.log.clone();
    runner.kill();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for failure in &failures {
        *tally.entry(category(failure)).or_default() += 1;
    }
    let tally: Vec<String> = tally.iter().map(|(what, n)| format!("{n} {what}")).collect();
    assert!(
        failures.is_empty(),
        "chaos [{}] with CHAOS_SEED={seed}: {} problem(s) against {} canonical transfers: {} (daemon log: {}):\n  - {}",
        db.backend,
        failures.len(),
        truth.len(),
        tally.join(", "),
        log_path.display(),
        failures.join("\n  - ")
    );
    drop(anvil);
}

/// What kind of problem a failure line reports, for the summary.
fn category(failure: &str) -> &'static str {
    if failure.starts_with("canonical payment never recorded") {
        "canonical payments never recorded (lost)"
    } else if failure.starts_with("canonical payment") {
        "canonical payments recorded wrongly"
    } else if failure.contains("not on the canonical chain") {
        "deposits live from an orphaned block"
    } else if failure.starts_with("pass-through") {
        "pass-through forwards wrong or missing"
    } else if failure.contains("static") {
        "static-address invoices wrong"
    } else if failure.contains("invoice") && failure.contains("expected") {
        "invoices with the wrong status, amount paid or flags"
    } else if failure.contains("balance is") {
        "balances wrong"
    } else if failure.contains("settler transaction") {
        "settlement unfinished"
    } else if failure.contains("ledger verify") {
        "ledger verify failures"
    } else if failure.contains("exited on its own") {
        "daemon crashes"
    } else if failure.contains("never injected") || failure.contains("too little chaos") {
        "faults the run never injected"
    } else {
        "other"
    }
}

/// Pays `amount` of `asset` to `to`; the transaction hash.
async fn pay(chain: &Chain, tokens: &Tokens, payer: Address, asset: &str, to: Address, amount: U256) -> String {
    match tokens.address(asset) {
        Some(token) => chain.pay_token(payer, token, to, amount).await,
        None => chain.send(payer, to, amount, None).await,
    }
}

/// Replaces the last 1..=5 blocks. Each sender's transactions in them are re-included, in order, in
/// the same or the next block, as a network re-mines what an orphaned block held, or dropped, as
/// anvil does, by a coin flip per sender: what the daemon sent and lost, its settler has to send
/// again.
///
/// Scope (issue 21): a reorg as deep as the chain's `confirmations` or deeper can reach a deposit
/// the daemon has already credited, swept into the treasury or forwarded to a pass-through
/// merchant. If such a reorg dropped the payer's payment, that money would be gone from the
/// chain but already spent by depositd; handling that loss needs a suspense account, which is
/// issue 21 and not in this version. So a reorg at depth >= `confirmations` always re-includes
/// every payer transaction (in order; it may still move a block later, so deposits are reversed
/// and credited again), and only depositd's own transactions (treasury and deposit-address
/// signers: sweeps, top-ups, forwards, payouts) are dropped or re-included by the coin flip.
/// Shallower reorgs flip the coin for payers too: nothing in them was credited yet.
///
/// The last payment is buried under 0 to 3 more blocks first (automine off: nothing else is
/// mined meanwhile, the daemon's transactions wait in the pool), and the daemon given a moment to
/// see (and perhaps credit) it, so that a reorg deeper than the confirmations takes away money the
/// daemon already credited; the reorg then reaches at least as deep as that payment.
async fn reorg(chain: &Chain, payers: &[Address], rng: &mut Rng, last_paid: Option<&str>) -> String {
    let _guard = chain.lock.lock().await;
    // No blocks but ours meanwhile: the daemon's transactions wait in the pool.
    chain.must("evm_setAutomine", json!([false])).await;
    let bury = rng.range(0, 3);
    if bury > 0 {
        chain.must("anvil_mine", json!([bury])).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.range(300, 2_500))).await;
    let head = hex_u64(&chain.must("eth_blockNumber", json!([])).await).unwrap();
    let paid_depth = match last_paid {
        Some(hash) => {
            let receipt = chain.must("eth_getTransactionReceipt", json!([hash])).await;
            hex_u64(&receipt["blockNumber"]).map_or(1, |n| head.saturating_sub(n) + 1)
        }
        None => 1,
    };
    let depth = rng.range(paid_depth.clamp(1, 5), 5);
    // Deep enough to reach a credited deposit: payers' payments must survive (issue 21).
    let deep = depth >= CONFIRMATIONS;
    let first = head + 1 - depth;
    // Per sender: (is a payer, block offset, position in the replaced blocks, hash).
    let mut by_sender: BTreeMap<Address, Vec<(bool, u64, usize, String)>> = BTreeMap::new();
    let mut others = 0;
    let mut position = 0;
    for number in first..=head {
        let block = chain.must("eth_getBlockByNumber", json!([format!("{number:#x}"), true])).await;
        for tx in block["transactions"].as_array().unwrap() {
            let from = addr(&tx["from"]);
            let payer = payers.contains(&from);
            if !payer {
                others += 1;
            }
            let entry = by_sender.entry(from).or_default();
            entry.push((payer, number - first, position, tx["hash"].as_str().unwrap().to_owned()));
            position += 1;
        }
    }
    // (block offset, original position, raw transaction, is a payer)
    let mut include: Vec<(u64, usize, Value, bool)> = Vec::new();
    let mut dropped = 0;
    for txs in by_sender.values() {
        let payer = txs[0].0;
        if (deep && payer) || rng.chance(0.5) {
            let shift = rng.range(0, 1);
            for (payer, offset, position, hash) in txs {
                let raw = chain.must("eth_getRawTransactionByHash", json!([hash])).await;
                include.push(((offset + shift).min(depth - 1), *position, raw, *payer));
            }
        } else {
            dropped += txs.iter().filter(|(payer, ..)| *payer).count();
        }
    }
    // In the order they were first mined, block by block.
    include.sort_by_key(|(offset, position, ..)| (*offset, *position));
    let listed = |txs: &[(u64, usize, Value, bool)]| -> Value {
        txs.iter().map(|(offset, _, raw, _)| json!([raw, offset])).collect()
    };
    let mut kept = include.iter().filter(|(.., payer)| *payer).count();
    let mut others_kept = include.len() - kept;
    let reorged = chain.rpc("anvil_reorg", json!([depth, listed(&include)])).await;
    if let Err(e) = reorged {
        if deep {
            // The payers' payments alone, where they were: they were valid there before.
            eprintln!("chaos: anvil_reorg with re-included transactions refused ({e}); re-including the payers' only");
            let payers_only: Vec<_> = by_sender
                .values()
                .flatten()
                .filter(|(payer, ..)| *payer)
                .map(|(_, offset, position, hash)| (*offset, *position, hash))
                .collect();
            let mut again = Vec::new();
            for (offset, position, hash) in payers_only {
                let raw = chain.must("eth_getRawTransactionByHash", json!([hash])).await;
                again.push((offset, position, raw, true));
            }
            again.sort_by_key(|(offset, position, ..)| (*offset, *position));
            chain.must("anvil_reorg", json!([depth, listed(&again)])).await;
            others_kept = 0;
        } else {
            eprintln!("chaos: anvil_reorg with re-included transactions refused ({e}); dropping them all");
            chain.must("anvil_reorg", json!([depth, []])).await;
            dropped += kept;
            kept = 0;
            others_kept = 0;
        }
    }
    // The daemon's senders the reorg touched lose their pending transactions, as after a node's
    // restart: anvil's pool would otherwise keep a later nonce waiting behind one the reorg
    // re-included without the pool noticing, answering every re-send "already imported". The
    // daemon must send them again.
    for (sender, txs) in &by_sender {
        if !txs[0].0 {
            chain.must("anvil_removePoolTransactions", json!([sender])).await;
        }
    }
    chain.must("evm_setAutomine", json!([true])).await;
    format!(
        "depth {depth}{} at {head}: payments {kept} kept {dropped} dropped, the daemon's {others_kept} kept {} dropped",
        if deep { " (deep)" } else { "" },
        others - others_kept
    )
}

/// Every transfer to a watched address on the canonical chain: token `Transfer` logs of the
/// configured tokens, and native transfers (successful, nonzero, not the treasury's gas top-ups).
async fn canonical_transfers(
    chain: &Chain,
    tokens: &Tokens,
    watched: &HashMap<Address, String>,
    treasury: Address,
) -> Vec<Transfer> {
    let head = chain.head().await;
    let mut found = Vec::new();
    for (symbol, token) in &tokens.by_symbol {
        let filter =
            json!({"fromBlock": "0x0", "toBlock": format!("{head:#x}"), "address": token, "topics": [TRANSFER_TOPIC]});
        for log in chain.must("eth_getLogs", json!([filter])).await.as_array().unwrap() {
            let topic = log["topics"][2].as_str().unwrap();
            let to: Address = format!("0x{}", &topic[26..]).parse().unwrap();
            let amount: U256 = log["data"].as_str().unwrap().parse().unwrap();
            if watched.contains_key(&to) && !amount.is_zero() {
                found.push(Transfer {
                    tx_hash: log["transactionHash"].as_str().unwrap().to_lowercase(),
                    log_index: hex_u64(&log["logIndex"]).unwrap() as i64,
                    block_hash: log["blockHash"].as_str().unwrap().to_lowercase(),
                    block_number: hex_u64(&log["blockNumber"]).unwrap(),
                    to,
                    asset: symbol.clone(),
                    amount,
                });
            }
        }
    }
    for number in 0..=head {
        let block = chain.must("eth_getBlockByNumber", json!([format!("{number:#x}"), true])).await;
        for tx in block["transactions"].as_array().unwrap() {
            let Some(to) = tx["to"].as_str().and_then(|t| t.parse::<Address>().ok()) else { continue };
            let value = units(&tx["value"]);
            if !watched.contains_key(&to) || value.is_zero() || addr(&tx["from"]) == treasury {
                continue;
            }
            let receipt = chain.must("eth_getTransactionReceipt", json!([tx["hash"]])).await;
            if receipt["status"] != "0x1" {
                continue;
            }
            found.push(Transfer {
                tx_hash: tx["hash"].as_str().unwrap().to_lowercase(),
                log_index: -1 - hex_u64(&tx["transactionIndex"]).unwrap() as i64,
                block_hash: block["hash"].as_str().unwrap().to_lowercase(),
                block_number: number,
                to,
                asset: "ETH".into(),
                amount: value,
            });
        }
    }
    found
}

fn flags_of(invoice: &Value) -> Vec<String> {
    let mut flags: Vec<String> =
        invoice["payment_flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect();
    flags.sort();
    flags
}

/// Everything the daemon says that the chain contradicts, one line each (empty: all agree).
async fn check(
    api: &Api,
    chain: &Chain,
    tokens: &Tokens,
    store: &depositd_core::store::Store,
    payments: &[Payment],
    statics: &BTreeMap<Address, (String, String)>,
    truth: &[Transfer],
) -> Vec<String> {
    let mut problems = Vec::new();
    let deposits = api.all("/api/v1/deposits?chain=anvil").await;
    let invoices = api.all("/api/v1/invoices").await;
    let invoice_by_id: HashMap<&str, &Value> = invoices.iter().map(|i| (i["id"].as_str().unwrap(), i)).collect();
    let mut rows: HashMap<(String, i64), Vec<&Value>> = HashMap::new();
    for d in &deposits {
        rows.entry((d["tx_hash"].as_str().unwrap().to_lowercase(), d["log_index"].as_i64().unwrap()))
            .or_default()
            .push(d);
    }
    let canonical: HashMap<(String, i64), &Transfer> =
        truth.iter().map(|t| ((t.tx_hash.clone(), t.log_index), t)).collect();
    let describe_address = |a: &Address| -> String {
        if let Some((id, asset)) = statics.get(a) {
            return format!("static address {a} ({asset}, {id})");
        }
        match payments.iter().find(|p| p.address == *a) {
            Some(p) => format!("{:?} {} invoice {} at {a}", p.kind, p.asset, p.id),
            None => format!("address {a}"),
        }
    };

    // Every canonical payment recorded exactly once, confirmed, from its canonical block.
    for t in truth {
        let what = format!(
            "{} {} to {} (tx {} log {} block {})",
            t.amount,
            t.asset,
            describe_address(&t.to),
            t.tx_hash,
            t.log_index,
            t.block_number
        );
        match rows.get(&(t.tx_hash.clone(), t.log_index)).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!("canonical payment never recorded: {what}")),
            Some([d]) => {
                if d["state"] != "confirmed" {
                    problems.push(format!(
                        "canonical payment not confirmed: {what}: deposit {} is {}",
                        d["id"], d["state"]
                    ));
                }
                if units(&d["amount_base_units"]) != t.amount {
                    problems.push(format!("{what}: deposit {} records {}", d["id"], d["amount_base_units"]));
                }
                if d["block_hash"].as_str().unwrap().to_lowercase() != t.block_hash {
                    problems.push(format!(
                        "{what}: deposit {} names block {} {}, not the canonical {}",
                        d["id"], d["block_number"], d["block_hash"], t.block_hash
                    ));
                }
            }
            Some(many) => problems.push(format!("canonical payment recorded {} times: {what}", many.len())),
        }
    }
    // Nothing live that the chain does not hold.
    for d in &deposits {
        let key = (d["tx_hash"].as_str().unwrap().to_lowercase(), d["log_index"].as_i64().unwrap());
        let state = d["state"].as_str().unwrap();
        if !canonical.contains_key(&key) && state != "reorged" && state != "reversed" {
            problems.push(format!(
                "deposit {} ({} {} to {}, tx {} block {}) is {state} but is not on the canonical chain (orphaned block)",
                d["id"],
                d["amount_base_units"],
                d["asset"],
                describe_address(&addr(&d["to_address"])),
                d["tx_hash"],
                d["block_number"]
            ));
        }
    }

    // Every invoice's status, amount paid and flags, from what the chain paid it.
    let mut expected_available: BTreeMap<String, U256> = BTreeMap::new();
    for p in payments {
        let paid: U256 = truth.iter().filter(|t| t.to == p.address).map(|t| t.amount).fold(U256::ZERO, |a, b| a + b);
        let (status, flags): (&str, Vec<String>) = if paid >= p.amount {
            ("paid", if paid > p.amount { vec!["overpaid".into()] } else { vec![] })
        } else if paid.is_zero() {
            ("pending", vec![])
        } else {
            ("pending", vec!["underpaid".into()])
        };
        let Some(invoice) = invoice_by_id.get(p.id.as_str()) else {
            problems.push(format!("{:?} invoice {} is missing from the API", p.kind, p.id));
            continue;
        };
        let found = (invoice["status"].as_str().unwrap(), units(&invoice["amount_paid_base_units"]), flags_of(invoice));
        if found != (status, paid, flags.clone()) {
            problems.push(format!(
                "{:?} {} invoice {}: expected {status} paid {paid} flags {flags:?}, found {} paid {} flags {:?} \
                 (amount {}, sent {:?})",
                p.kind, p.asset, p.id, found.0, found.1, found.2, p.amount, p.sent
            ));
        }
        let merchant_part = paid - fee_on(paid);
        if paid == p.amount && (fee_on(paid), merchant_part) != (p.fee, p.merchant_amount) {
            problems.push(format!(
                "invoice {} showed fee {} and merchant amount {}, but 1% of {paid} is {}",
                p.id,
                p.fee,
                p.merchant_amount,
                fee_on(paid)
            ));
        }
        match p.receiver {
            Some(receiver) => {
                // Forwarded exactly: the merchant's part of what was paid, once.
                let forwarded = if paid >= p.amount { merchant_part } else { U256::ZERO };
                let (held, transfers) = match tokens.address(&p.asset) {
                    Some(token) => {
                        let filter = json!({"fromBlock": "0x0", "toBlock": "latest", "address": token,
                            "topics": [TRANSFER_TOPIC, null, format!("0x{:0>64}", alloy::primitives::hex::encode(receiver.as_slice()))]});
                        let logs = chain.must("eth_getLogs", json!([filter])).await;
                        (chain.token_balance(token, receiver).await, logs.as_array().unwrap().len())
                    }
                    None => (chain.native_balance(receiver).await, 0),
                };
                if held != forwarded
                    || (tokens.address(&p.asset).is_some() && transfers != usize::from(!forwarded.is_zero()))
                {
                    problems.push(format!(
                        "pass-through {} invoice {}: {receiver} should hold {forwarded} (paid {paid} less 1%), holds {held} \
                         from {transfers} transfer(s)",
                        p.asset, p.id
                    ));
                }
            }
            None => *expected_available.entry(p.asset.clone()).or_default() += merchant_part,
        }
    }

    // Static addresses: one paid invoice per canonical deposit, each linked to its deposit.
    let static_invoices: Vec<&Value> = invoices.iter().filter(|i| !i["static_address_id"].is_null()).collect();
    let linked: HashMap<&str, &Value> =
        deposits.iter().filter_map(|d| d["invoice_id"].as_str().map(|i| (i, d))).collect();
    for t in truth.iter().filter(|t| statics.contains_key(&t.to)) {
        *expected_available.entry(t.asset.clone()).or_default() += t.amount - fee_on(t.amount);
        let Some([d]) = rows.get(&(t.tx_hash.clone(), t.log_index)).map(Vec::as_slice) else { continue };
        match d["invoice_id"].as_str().and_then(|id| invoice_by_id.get(id)) {
            Some(invoice) if invoice["status"] == "paid" && units(&invoice["amount_paid_base_units"]) == t.amount => {}
            Some(invoice) => problems.push(format!(
                "static deposit {} ({} {} tx {}): its invoice {} is {} with {} paid",
                d["id"],
                t.amount,
                t.asset,
                t.tx_hash,
                invoice["id"],
                invoice["status"],
                invoice["amount_paid_base_units"]
            )),
            None => problems
                .push(format!("static deposit {} ({} {} tx {}) has no invoice", d["id"], t.amount, t.asset, t.tx_hash)),
        }
    }
    for invoice in &static_invoices {
        let id = invoice["id"].as_str().unwrap();
        match linked.get(id) {
            None => problems.push(format!(
                "static-address invoice {id} ({} {}, {} paid) belongs to no deposit: a second invoice for one deposit?",
                invoice["status"], invoice["amount"], invoice["amount_paid_base_units"]
            )),
            Some(d) => {
                let key = (d["tx_hash"].as_str().unwrap().to_lowercase(), d["log_index"].as_i64().unwrap());
                if !canonical.contains_key(&key)
                    && (invoice["status"] == "paid" || !units(&invoice["amount_paid_base_units"]).is_zero())
                {
                    problems.push(format!(
                        "static-address invoice {id} is {} with {} paid for deposit {}, which the chain does not hold",
                        invoice["status"], invoice["amount_paid_base_units"], d["id"]
                    ));
                }
            }
        }
    }
    let paid_per_address = |a: &Address| {
        static_invoices
            .iter()
            .filter(|i| {
                i["status"] == "paid"
                    && i["pay"]["address"].as_str().and_then(|s| s.parse::<Address>().ok()) == Some(*a)
            })
            .count()
    };
    for address in statics.keys() {
        let expected = truth.iter().filter(|t| t.to == *address).count();
        let found = paid_per_address(address);
        if expected != found {
            problems.push(format!(
                "{}: {expected} canonical deposits but {found} paid invoices",
                describe_address(address)
            ));
        }
    }

    // Balances: credits less fees, nothing pending, in transit, reserved or owed.
    let balances = api.get("/api/v1/balances").await;
    for row in balances["data"].as_array().unwrap() {
        let asset = row["asset"].as_str().unwrap();
        let expected = expected_available.get(asset).copied().unwrap_or_default();
        if units(&row["available_base_units"]) != expected {
            problems.push(format!(
                "{asset} available balance is {}, the chain's credits less fees are {expected}",
                row["available_base_units"]
            ));
        }
        for kind in ["pending", "reserved", "in_transit", "receivable"] {
            let value = units(&row[format!("{kind}_base_units")]);
            if !value.is_zero() {
                problems.push(format!("{asset} {kind} balance is {value}, expected 0 once everything settled"));
            }
        }
    }

    // Settlement finished: no outgoing transaction still open.
    let mut conn = store.conn().await.unwrap();
    let open = chain_txs::open(&mut conn, 31337).await.unwrap();
    if !open.is_empty() {
        // Per signer: where the chain's nonce stands, and what depositd recorded at that nonce.
        let mut signers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in &open {
            let nonce = t.nonce.map_or("-".to_owned(), |n| n.to_string());
            signers.entry(t.signer_address.clone()).or_default().push(format!(
                "{:?} {:?} nonce {nonce} {} {} to {}",
                t.purpose, t.state, t.value, t.asset, t.to_address
            ));
        }
        let mut lines = Vec::new();
        for (signer, txs) in signers {
            let on_chain = hex_u64(&chain.must("eth_getTransactionCount", json!([signer, "latest"])).await).unwrap();
            let at_gap: Vec<String> = chain_txs::touching(&mut conn, 31337, &signer)
                .await
                .unwrap()
                .into_iter()
                .filter(|t| t.signer_address == signer && t.nonce == Some(on_chain))
                .map(|t| format!("{:?} {:?} mined in {:?} as {:?}", t.purpose, t.state, t.mined_block, t.mined_tx_hash))
                .collect();
            lines.push(format!(
                "signer {signer}: chain nonce {on_chain}, depositd's transaction at that nonce {at_gap:?}; open: {}",
                txs.join("; ")
            ));
        }
        problems.push(format!("{} settler transaction(s) still open:\n      {}", open.len(), lines.join("\n      ")));
    }
    problems
}
