//! Test support for the API and the binary: the app on port 0, the real executable, both backends
//! for one test body. Chains, tokens, databases and the webhook receiver are `depositd-testkit`'s.

use std::net::SocketAddr;
use std::sync::{Arc, Once};

use alloy::primitives::Address;
use depositd_api::{AppState, Application};
use depositd_core::api_key::Scope;
use depositd_core::config::{ChainConfig, Config, TokenConfig};
use depositd_core::merchant::Merchant;
use depositd_core::store::Store;
use depositd_core::wallet::HdWallet;
use depositd_settler::Settler;
use depositd_testkit::chain::TestChain;
pub use depositd_testkit::db::TestDb;
use depositd_testkit::db::merchant_with_key;
use depositd_testkit::tokens::DECIMALS;
use depositd_watcher::ChainWatcher;
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

static TRACING: Once = Once::new();

pub fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            depositd::telemetry::init(depositd::telemetry::LogFormat::Human);
        }
    });
}

/// Runs a store test body against SQLite and against PostgreSQL, as two tests.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::helpers::init_tracing();
                    super::$name($crate::helpers::TestDb::sqlite()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::helpers::init_tracing();
                    super::$name($crate::helpers::TestDb::postgres().await).await;
                }
            }
        )*
    };
}
pub(crate) use both_backends;

/// Stand-in addresses for the dev chain's tokens in tests that never touch a chain.
pub const TEST_USDC: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
pub const TEST_USDT: &str = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0";

/// The configuration tests start from: built-in defaults (whose `chains.dir` is the repository's
/// `chains/`; cargo runs tests from the repository root), the test database, USDC and USDT on the
/// dev chain with USDC the default, the dev chain's fixed rates, and a fresh hot-wallet mnemonic.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::load(None, Some(db.url.expose())).expect("default configuration loads");
    let chain = &mut config.chains[0];
    for (symbol, address) in [("USDC", TEST_USDC), ("USDT", TEST_USDT)] {
        chain.tokens.push(TokenConfig { symbol: symbol.into(), address: address.parse().unwrap(), decimals: 6 });
    }
    config.settings.chains.default_asset = "USDC".into();
    for (symbol, rate) in [("EUR", "1.08"), ("UAH", "0.024"), ("ETH", "3000")] {
        config.settings.pricing.static_usd_rates.insert(symbol.into(), rate.parse().unwrap());
    }
    config.settings.wallet.mnemonic = Some(HdWallet::generate_mnemonic());
    config
}

/// Points `chain` at the test chain: its only RPC endpoint, scanned from block 0 with
/// `confirmations`, and `tokens` (symbol, contract) its allow-listed tokens (6 decimals).
pub fn use_test_chain(chain: &mut ChainConfig, test_chain: &TestChain, confirmations: u64, tokens: &[(&str, Address)]) {
    chain.rpc_urls = vec![test_chain.rpc_url().into()];
    chain.confirmations = confirmations;
    chain.start_block = Some(0);
    chain.tokens = tokens
        .iter()
        .map(|(symbol, address)| TokenConfig { symbol: (*symbol).into(), address: *address, decimals: DECIMALS })
        .collect();
}

/// The API in-process on 127.0.0.1:0.
pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Store,
    pub state: AppState,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
}

impl TestApp {
    pub async fn spawn(db: &TestDb) -> TestApp {
        Self::spawn_with(db, |_| {}).await
    }

    /// Starts the app with the test configuration as changed by `adjust`.
    pub async fn spawn_with(db: &TestDb, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let store = db.store().await;
        let mut config = test_config(db);
        adjust(&mut config);
        let wallet = Arc::new(HdWallet::from_mnemonic(&config.settings.wallet.mnemonic().unwrap()).unwrap());
        let state = AppState::new(store.clone(), Arc::new(config), wallet, depositd_core::metrics::Metrics::new());
        let app = Application::build(state.clone(), "127.0.0.1:0".parse().unwrap()).await.expect("bind");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run(shutdown.clone()));
        TestApp { addr, store, state, client: reqwest::Client::new(), shutdown }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A watcher for `chain`, on the app's store, sessions and metrics.
    pub fn watcher(&self, chain: &ChainConfig) -> ChainWatcher {
        let state = &self.state;
        ChainWatcher::new(
            chain.clone(),
            self.store.clone(),
            state.config.settings.api.public_url.clone(),
            state.sessions.clone(),
            state.metrics.clone(),
        )
        .unwrap()
    }

    /// A settler for `chain`, with the app's store, wallet, settler settings, sessions and metrics.
    pub fn settler(&self, chain: &ChainConfig) -> Settler {
        let state = &self.state;
        Settler::new(
            chain.clone(),
            self.store.clone(),
            state.wallet.clone(),
            state.config.settings.settler.clone(),
            state.config.settings.api.public_url.clone(),
            state.sessions.clone(),
            state.metrics.clone(),
        )
        .unwrap()
    }

    /// A merchant (1% fee) and a key with `scopes`.
    pub async fn merchant(&self, name: &str, scopes: &[Scope]) -> (Merchant, String) {
        let (merchant, key) = merchant_with_key(&self.store, name, Decimal::ONE, scopes).await.unwrap();
        (merchant, key.expose_secret().to_owned())
    }

    pub async fn create_invoice(&self, key: &str, body: serde_json::Value) -> reqwest::Response {
        self.client.post(self.url("/api/v1/invoices")).header("x-api-key", key).json(&body).send().await.unwrap()
    }

    /// Creates an invoice that must be created (201); returns it.
    pub async fn created_invoice(&self, key: &str, body: serde_json::Value) -> serde_json::Value {
        let response = self.create_invoice(key, body).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    pub async fn create_static_address(&self, key: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/static-addresses"))
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, key: &str, path: &str) -> (u16, serde_json::Value) {
        let response = self.client.get(self.url(path)).header("x-api-key", key).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

/// Asserts a JSON error response: status, `error.code` and `error.param`.
pub async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
    param: Option<&str>,
) -> serde_json::Value {
    let actual = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(actual, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["param"].as_str(), param, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The real `depositd` executable, with a clean environment for its configuration.
/// One round: the watcher until it has caught up, the settler once; then one more block. Until
/// `done` holds, at most `rounds` rounds (then the test fails, naming `what`).
pub async fn settle_until<F, Fut>(
    chain: &TestChain,
    watcher: &mut ChainWatcher,
    settler: &mut Settler,
    rounds: usize,
    what: &str,
    done: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..rounds {
        while watcher.tick().await.unwrap() {}
        settler.tick().await.unwrap();
        if done().await {
            return;
        }
        chain.mine(1).await;
    }
    panic!("gave up waiting for: {what}");
}

pub fn depositd() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_depositd"));
    command.current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("DATABASE_URL").env("NO_COLOR", "1");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DEPOSITD__") {
            command.env_remove(key);
        }
    }
    command
}

/// `promtool check metrics` (Prometheus's own linter) accepts `exposition`. promtool comes from
/// Debian's `prometheus` package, which `.ci/run` installs; without it the check is skipped
/// loudly, except under CI where it is required.
pub fn assert_promtool_accepts(exposition: &str) {
    use std::io::Write;
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus); the exposition was not linted");
            return;
        }
        Err(error) => panic!("promtool is required under CI: {error}"),
    };
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics refused the exposition:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
