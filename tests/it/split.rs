//! Keys off the web tier (issue 21): the daemon split in two processes on one PostgreSQL
//! database, an API + watcher + webhooks process run from the xpub alone and a settler process
//! with the mnemonic. An invoice is created, paid, credited, swept and paid out; a webhook
//! endpoint sealed with the mnemonic-derived key (as an install from before the split has them)
//! still signs its deliveries; and the web tier's environment, configuration, logs and memory
//! hold no word of the mnemonic. Then, on both backends: a web tier started before any process
//! with the mnemonic is refused (only the settler records the wallet), a settler whose mnemonic
//! does not own the database's addresses (or a web tier with another xpub or key) is refused at
//! start-up, CLI commands check the wallet too (`treasury address`, `check-config`), and
//! `depositd wallet xpub|web-keys` print what the web tier runs from.
//!
//! Split runs are PostgreSQL only: SQLite has one daemon per database file (`<db>.daemon.lock`).

use std::collections::BTreeSet;
use std::io::{BufRead, Read, Seek};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use depositd::cli::Component;
use depositd::daemon::Daemon as InProcess;
use depositd_core::api_key::Scope;
use depositd_core::config::{ChainConfig, WalletSettings};
use depositd_core::store::wallet_identity;
use depositd_core::store::webhooks::insert_endpoint;
use depositd_core::wallet::HdWallet;
use depositd_core::webhooks::{Endpoint, SecretBox, generate_secret};
use depositd_testkit::anvil::{AnvilOptions, free_port};
use depositd_testkit::chain::{TestChain, payer_address};
use depositd_testkit::db::merchant_with_key;
use depositd_testkit::tokens::{self, PAYER_MINT};
use depositd_testkit::webhooks::Receiver;
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::cli::Daemon;
use crate::helpers::{TestDb, both_backends, depositd, test_config};

both_backends!(a_wallet_the_database_does_not_know_is_refused_at_start_up);

/// BIP-39's second English test vector (entropy 0x7f x 16). A fixed phrase, so that the words the
/// test looks for are ones depositd's own logs never use.
const PHRASE: &str = "legal winner thank year wave sausage worth useful legal winner thank yellow";

/// A `depositd` child process with its stderr (the logs) collected.
struct Process {
    daemon: Daemon,
    logs: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `command` and waits (60 s at most) for a log line containing `ready`.
    fn start(mut command: std::process::Command, ready: &'static str) -> Process {
        let mut daemon = Daemon(command.stderr(std::process::Stdio::piped()).spawn().unwrap());
        let stderr = daemon.0.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (up, started) = mpsc::channel();
        let collected = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(ready) {
                    let _ = up.send(());
                }
                let mut logs = collected.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        if started.recv_timeout(Duration::from_secs(60)).is_err() {
            panic!("the daemon did not start: {}", logs.lock().unwrap());
        }
        Process { daemon, logs }
    }

    fn pid(&self) -> u32 {
        self.daemon.0.id()
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    fn environ(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{}/environ", self.pid())).unwrap()).replace('\0', "\n")
    }

    /// Whether `needle` is anywhere in the process's readable memory (`/proc/<pid>/mem`, which a
    /// parent may read). Returns the number of bytes read too, so a test can tell it read some.
    fn memory_holds(&self, needle: &[u8]) -> (bool, usize) {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid())).unwrap();
        let mut mem = std::fs::File::open(format!("/proc/{}/mem", self.pid())).unwrap();
        let mut read = 0;
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
            if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
                continue;
            }
            let (start, end) = range.split_once('-').unwrap();
            let (start, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
            let mut region = vec![0u8; (end - start) as usize];
            if mem.seek(std::io::SeekFrom::Start(start)).is_err() {
                continue;
            }
            let Ok(n) = mem.read(&mut region) else { continue };
            read += n;
            if region[..n].windows(needle.len()).any(|w| w == needle) {
                return (true, read);
            }
        }
        (false, read)
    }
}

/// The mnemonic's words that `text` holds as whole words (case-insensitive).
fn mnemonic_words_in(text: &str) -> BTreeSet<String> {
    let words: BTreeSet<&str> = PHRASE.split_whitespace().collect();
    text.split(|c: char| !c.is_ascii_alphabetic())
        .map(|w| w.to_ascii_lowercase())
        .filter(|w| words.contains(w.as_str()))
        .collect()
}

fn stdout_of(command: &mut std::process::Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_tier_runs_on_the_xpub_alone_and_a_settler_process_signs() {
    crate::helpers::init_tracing();
    let db = TestDb::postgres().await;
    let anvil = AnvilOptions { block_time: Some(1), ..AnvilOptions::default() };
    let chain = TestChain::start_with(anvil, &[("USD Coin", "USDC")], &[payer_address()], U256::from(PAYER_MINT))
        .await
        .unwrap();
    let usdc = chain.tokens[0];

    // One chain file and one base configuration; each process adds its own [wallet].
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("chains")).unwrap();
    let chain_file = dir.path().join("chains/anvil.toml");
    std::fs::write(
        &chain_file,
        format!(
            "name = \"anvil\"\nchain_id = 31337\nrpc_urls = [\"{}\"]\nconfirmations = 2\nblock_time_ms = 1000\n\
             poll_interval_ms = 250\nmax_block_range = 10000\nstart_block = 0\ntestnet = true\n\n\
             [native]\nsymbol = \"ETH\"\ndecimals = 18\n\n\
             [[tokens]]\nsymbol = \"USDC\"\naddress = \"{}\"\ndecimals = 6\n",
            chain.rpc_url(),
            usdc.to_checksum(None)
        ),
    )
    .unwrap();
    let base = format!(
        "[database]\nurl = \"{}\"\n\n[chains]\ndir = \"{}\"\ndefault_asset = \"USDC\"\n\n\
         [webhooks]\nallow_http = true\nallow_private_targets = true\nretry_schedule_secs = [1, 1, 1, 1, 1]\n\
         poll_interval_ms = 100\n\n[invoices]\nallow_http_urls = true\n\n",
        db.url.expose(),
        dir.path().join("chains").display(),
    );
    // The settler's configuration has no [wallet] either: its mnemonic comes from its environment.
    let settler_config = dir.path().join("settler.toml");
    std::fs::write(&settler_config, &base).unwrap();
    let with_mnemonic = |command: &mut std::process::Command| {
        command.arg("--config").arg(&settler_config).env("DEPOSITD__WALLET__MNEMONIC", PHRASE);
    };

    // What the web tier runs from, printed from the mnemonic.
    let wallet = HdWallet::from_mnemonic(&SecretString::from(PHRASE)).unwrap();
    let mut command = depositd();
    with_mnemonic(&mut command);
    let public = stdout_of(command.args(["wallet", "xpub"]));
    assert!(public.contains(&format!("xpub = \"{}\"\n", wallet.xpub())), "{public}");
    assert!(wallet.xpub().starts_with("xpub6"));
    assert!(public.contains("xpub_path = \"m/44'/60'/0'/0\"\n"), "{public}");
    assert!(public.contains(&format!("treasury_address = \"{}\"\n", wallet.treasury_address().to_checksum(None))));
    let mut command = depositd();
    with_mnemonic(&mut command);
    let keys = stdout_of(command.args(["wallet", "web-keys"]));
    let (sealing, session) = wallet.web_keys_hex();
    assert!(keys.contains(&format!("sealing_key = \"{}\"\n", sealing.expose_secret())), "{keys}");
    assert!(keys.contains(&format!("session_key = \"{}\"\n", session.expose_secret())), "{keys}");
    let web_config = dir.path().join("web.toml");
    std::fs::write(&web_config, format!("{base}{public}{keys}")).unwrap();
    let web_config_text = std::fs::read_to_string(&web_config).unwrap();
    assert!(mnemonic_words_in(&web_config_text).is_empty(), "{web_config_text}");

    // The merchant, and an endpoint whose secret was sealed before the split, with the key the
    // mnemonic derives (what every existing install has).
    let store = db.store().await;
    let (merchant, key) = merchant_with_key(&store, "Split Shop", Decimal::ONE, &Scope::ALL).await.unwrap();
    let key = key.expose_secret().to_owned();
    let receiver = Receiver::start().await;
    let secret = generate_secret();
    let now = depositd_core::time::now_ms();
    let endpoint = Endpoint {
        id: uuid::Uuid::now_v7(),
        merchant_id: merchant.id,
        url: receiver.url("/hooks"),
        description: None,
        enabled_events: vec!["invoice.paid".into()],
        enabled: true,
        disabled_reason: None,
        secret_sealed: SecretBox::new(wallet.webhook_secrets_key()).seal(&secret),
        previous_secret_sealed: None,
        previous_secret_expires_at: None,
        last_success_at: None,
        created_at: now,
        updated_at: now,
    };
    insert_endpoint(&mut store.conn().await.unwrap(), &endpoint).await.unwrap();
    let chain_config = ChainConfig::load(&chain_file).unwrap();
    depositd::dev::fund_treasury(&store, &chain_config, wallet.treasury_address(), 10_000_000_000_000_000_000)
        .await
        .unwrap();

    // The settler first (it records the wallet), then the web tier, with nothing of the mnemonic in
    // its environment (a clean one) or its configuration.
    let mut command = depositd();
    with_mnemonic(&mut command);
    command.args(["run", "--only", "settler"]).env("RUST_LOG", "info");
    let settler = Process::start(command, "starting depositd");
    let port = free_port().unwrap();
    let mut command = depositd();
    command
        .env_clear()
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env("DEPOSITD__API__LISTEN", format!("127.0.0.1:{port}"))
        .env("DEPOSITD__API__PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .arg("--config")
        .arg(&web_config)
        .args(["run", "--only", "api,expiry,watcher,ledger,webhooks"]);
    let web = Process::start(command, "API listening");
    let api = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let client = reqwest::Client::new();
    let get = |path: String| {
        let (client, key) = (client.clone(), key.clone());
        async move {
            let response = client.get(api(&path)).header("x-api-key", &key).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let until = |what: &str, deadline: Instant| assert!(Instant::now() < deadline, "gave up waiting for {what}");

    // Created on the web tier, at an address the xpub derived and the mnemonic owns.
    let invoice: Value = client
        .post(api("/api/v1/invoices"))
        .header("x-api-key", &key)
        .json(&json!({"amount": "100", "currency": "USD", "asset": "USDC"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let address: Address = invoice["pay"]["address"].as_str().unwrap().parse().unwrap();
    // Its index is the pool's first, or the next after the pool when the invoice came before the
    // pool's first refill (the address pool's fallback): either way one the mnemonic derives.
    let index = (0..4096u64).find(|i| wallet.deposit_address(*i).unwrap() == address);
    assert!(index.is_some(), "{address} is not one of the mnemonic's first 4096 deposit addresses: {invoice}");
    let id = invoice["id"].as_str().unwrap().to_owned();

    // Paid and credited (the web tier's watcher).
    tokens::transfer(&chain.payer(), usdc, address, U256::from(100_000_000u64)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(format!("/api/v1/invoices/{id}")).await["status"] != "paid" {
        until("the invoice to be paid", deadline);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Swept into the treasury (the settler process, signing with the deposit address's key).
    let deadline = Instant::now() + Duration::from_secs(90);
    while !chain.token_balance(usdc, address).await.is_zero() {
        until("the sweep", deadline);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(chain.token_balance(usdc, wallet.treasury_address()).await, U256::from(100_000_000u64));

    // Paid out: created on the web tier, signed and sent by the settler.
    let destination = PrivateKeySigner::random().address();
    let response = client
        .post(api("/api/v1/payouts"))
        .header("x-api-key", &key)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(&json!({"asset": "USDC", "amount": "40", "destination": destination.to_checksum(None)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let payout: Value = response.json().await.unwrap();
    let payout_id = payout["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(90);
    while get(format!("/api/v1/payouts/{payout_id}")).await["status"] != "confirmed" {
        until("the payout to confirm", deadline);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(chain.token_balance(usdc, destination).await, U256::from(40_000_000u64), "exactly once");

    // The endpoint sealed before the split: the web tier opened its secret and signed with it.
    assert!(receiver.wait_until(Duration::from_secs(30), |hits| !hits.is_empty()).await, "invoice.paid delivered");
    let hits: Vec<_> = receiver.hits().into_iter().filter(|h| h.event_type() == "invoice.paid").collect();
    assert_eq!(crate::webhooks::verify_official(secret.expose_secret(), &hits[..1]), vec!["invoice.paid"]);

    // The ledger reconciles, checked from the web tier's configuration (no mnemonic needed).
    let output = depositd().arg("--config").arg(&web_config).args(["ledger", "verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("OK:"), "{stdout}");

    // Nothing of the mnemonic in the web tier: environment, logs, memory. The same checks find it
    // in the settler, which holds it (so they can see it where it is).
    let (environ, logs) = (web.environ(), web.logs());
    assert!(logs.contains("starting depositd"), "the logs were collected: {logs}");
    assert!(mnemonic_words_in(&environ).is_empty(), "{:?} in the environment", mnemonic_words_in(&environ));
    assert!(mnemonic_words_in(&logs).is_empty(), "{:?} in the logs", mnemonic_words_in(&logs));
    let (held, read) = web.memory_holds(PHRASE.as_bytes());
    assert!(read > 1_000_000, "the web tier's memory was read ({read} bytes)");
    assert!(!held, "the mnemonic is in the web tier's memory");
    assert!(!web.memory_holds(b"wave sausage worth").0);
    assert!(settler.environ().contains(PHRASE));
    assert!(settler.memory_holds(PHRASE.as_bytes()).0, "the memory scan finds the phrase where it is");
    assert!(mnemonic_words_in(&settler.logs()).is_empty(), "the settler does not log it either");
    drop((web, settler));
}

/// What a process without the mnemonic runs from, for `wallet`.
fn watch_only(wallet: &HdWallet) -> WalletSettings {
    let (sealing, session) = wallet.web_keys_hex();
    WalletSettings {
        xpub: Some(wallet.xpub()),
        xpub_path: Some("m/44'/60'/0'/0".into()),
        treasury_address: Some(wallet.treasury_address().to_checksum(None)),
        sealing_key: Some(sealing),
        session_key: Some(session),
        ..WalletSettings::default()
    }
}

async fn a_wallet_the_database_does_not_know_is_refused_at_start_up(db: TestDb) {
    let phrase = HdWallet::generate_mnemonic();
    let ours = HdWallet::from_mnemonic(&phrase).unwrap();
    let other_phrase = HdWallet::generate_mnemonic();
    let other = HdWallet::from_mnemonic(&other_phrase).unwrap();
    let build = |wallet: WalletSettings, only: Component| {
        let mut config = test_config(&db);
        config.settings.api.listen = "127.0.0.1:0".parse().unwrap();
        config.settings.wallet = wallet;
        async move { InProcess::build(config, &[only]).await }
    };
    let with_mnemonic = |phrase: &SecretString| WalletSettings { mnemonic: Some(phrase.clone()), ..Default::default() };

    // A database no process with the mnemonic has started on: the web tier, from the xpub, is
    // refused (it must not make its xpub, perhaps mistyped, the reference) and records nothing.
    let error = format!("{:#}", build(watch_only(&ours), Component::Api).await.unwrap_err());
    assert!(
        error
            .contains("no wallet recorded in this database yet: start a process with the mnemonic (the settler) first"),
        "{error}"
    );
    let store = db.store().await;
    assert!(wallet_identity::read(&store).await.unwrap().is_none(), "a watch-only process recorded the wallet");
    // The settler, with the mnemonic, records it; then the web tier starts.
    drop(build(with_mnemonic(&phrase), Component::Settler).await.unwrap());
    assert_eq!(wallet_identity::read(&store).await.unwrap(), Some(ours.identity()));
    drop(build(watch_only(&ours), Component::Api).await.unwrap());
    // A settler with another mnemonic is refused, by address 0, never the phrase.
    let error = format!("{:#}", build(with_mnemonic(&other_phrase), Component::Settler).await.unwrap_err());
    assert!(error.contains("the mnemonic does not own this database's deposit addresses"), "{error}");
    assert!(error.contains(&ours.deposit_address(0).unwrap().to_string()), "{error}");
    assert!(error.contains(&other.deposit_address(0).unwrap().to_string()), "{error}");
    assert!(error.ends_with("refusing to start"), "{error}");
    let words: Vec<&str> = other_phrase.expose_secret().split_whitespace().collect();
    for pair in words.windows(2) {
        assert!(!error.contains(&pair.join(" ")), "{error}");
    }
    // So is a web tier with another xpub, or with a key the others do not use.
    let error = format!("{:#}", build(watch_only(&other), Component::Watcher).await.unwrap_err());
    assert!(error.contains("wallet.xpub does not own this database's deposit addresses"), "{error}");
    let mut wrong_key = watch_only(&ours);
    wrong_key.session_key = Some(other.web_keys_hex().1);
    let error = format!("{:#}", build(wrong_key, Component::Api).await.unwrap_err());
    assert!(error.contains("wallet.session_key is not the key this database's other processes use"), "{error}");
    // The xpub alone cannot run the settler.
    let error = format!("{:#}", build(watch_only(&ours), Component::Settler).await.unwrap_err());
    assert!(error.contains("the settler signs, so it needs the mnemonic"), "{error}");
    // The settler with the mnemonic that owns the addresses starts.
    drop(build(with_mnemonic(&phrase), Component::Settler).await.unwrap());

    // The real binary says so in one line and exits non-zero.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("depositd.toml");
    std::fs::write(&config, format!("[database]\nurl = \"{}\"\n", db.url.expose())).unwrap();
    // The CLI checks the wallet against the database too: `treasury address` from a watch-only
    // configuration whose treasury is not the database's is refused, not printed.
    let watch_config = |name: &str, settings: &WalletSettings| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = \"{}\"\n\n[wallet]\nxpub = \"{}\"\ntreasury_address = \"{}\"\n\
                 sealing_key = \"{}\"\nsession_key = \"{}\"\n",
                db.url.expose(),
                settings.xpub.as_ref().unwrap(),
                settings.treasury_address.as_ref().unwrap(),
                settings.sealing_key.as_ref().unwrap().expose_secret(),
                settings.session_key.as_ref().unwrap().expose_secret(),
            ),
        )
        .unwrap();
        path
    };
    let mut wrong_treasury = watch_only(&ours);
    wrong_treasury.treasury_address = Some(other.treasury_address().to_checksum(None));
    let wrong_treasury = watch_config("wrong-treasury.toml", &wrong_treasury);
    let output = depositd().arg("--config").arg(&wrong_treasury).args(["treasury", "address"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    let expected = format!(
        "wallet.treasury_address is {}, but this database's treasury is {}; refusing to start",
        other.treasury_address(),
        ours.treasury_address()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    // The right watch-only configuration prints the database's treasury.
    let right = watch_config("right.toml", &watch_only(&ours));
    let printed = stdout_of(depositd().arg("--config").arg(&right).args(["treasury", "address"]));
    assert_eq!(printed, format!("{}\n", ours.treasury_address().to_checksum(None)));
    // `check-config` validates a watch-only wallet's settings.
    let mut lowercase = watch_only(&ours);
    lowercase.treasury_address = Some(format!("{:#x}", ours.treasury_address()));
    let lowercase = watch_config("lowercase.toml", &lowercase);
    let output = depositd().arg("--config").arg(&lowercase).args(["check-config", "--offline"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("wallet.treasury_address must be written in its EIP-55 checksummed form"), "{stderr}");
    let printed = stdout_of(depositd().arg("--config").arg(&right).args(["check-config", "--offline"]));
    assert!(printed.contains("xpub only, valid"), "{printed}");
    let output = depositd()
        .arg("--config")
        .arg(&config)
        .env("DEPOSITD__WALLET__MNEMONIC", other_phrase.expose_secret())
        .args(["run", "--only", "settler"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("the mnemonic does not own this database's deposit addresses"), "{stderr}");
    assert!(!stderr.contains(other_phrase.expose_secret()));
    // `wallet xpub` prints the xpub the database knows for `phrase`; without a mnemonic it says why.
    let printed = stdout_of(
        depositd()
            .arg("--config")
            .arg(&config)
            .env("DEPOSITD__WALLET__MNEMONIC", phrase.expose_secret())
            .args(["wallet", "xpub"]),
    );
    assert!(printed.contains(&format!("xpub = \"{}\"", ours.xpub())), "{printed}");
    let output = depositd().arg("--config").arg(&config).args(["wallet", "xpub"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no hot-wallet mnemonic"));
}
