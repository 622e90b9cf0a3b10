//! `depositd dev` end to end: the real binary brings up anvil, the tokens, the demo merchant and
//! the API, writes dev.json, and shuts everything down cleanly on Ctrl-C.

use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::ProviderBuilder;
use depositd::dev::DevInfo;
use depositd_testkit::anvil::free_port;
use depositd_testkit::tokens::{self, TestToken};

use crate::helpers::depositd;

#[tokio::test]
async fn dev_comes_up_writes_dev_json_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (api_port, anvil_port) = (free_port().unwrap(), free_port().unwrap());
    let mut child = depositd()
        .args(["dev", "--api-port", &api_port.to_string(), "--anvil-port", &anvil_port.to_string(), "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let dev_json = dir.path().join("dev.json");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let info: DevInfo = loop {
        assert!(child.try_wait().unwrap().is_none(), "depositd dev exited early");
        assert!(Instant::now() < deadline, "depositd dev did not come up within 90 s");
        if let Ok(bytes) = std::fs::read(&dev_json) {
            let info: DevInfo = serde_json::from_slice(&bytes).expect("dev.json is valid");
            if client.get(format!("{}/healthz", info.api_url)).send().await.is_ok_and(|r| r.status() == 200) {
                break info;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    assert_eq!(info.api_url, format!("http://127.0.0.1:{api_port}"));
    assert_eq!(info.rpc_url, format!("http://127.0.0.1:{anvil_port}"));
    assert_eq!((info.chain.as_str(), info.chain_id, info.confirmations), ("anvil", 31337, 2));
    assert!(info.api_key.starts_with("dk_test_"));
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&dev_json).unwrap()).unwrap();
    for field in [
        "api_url",
        "api_key",
        "rpc_url",
        "chain",
        "chain_id",
        "confirmations",
        "tokens",
        "payer_private_key",
        "payer_address",
    ] {
        assert!(raw.get(field).is_some(), "dev.json lacks {field}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dev_json).unwrap().permissions().mode() & 0o777, 0o600, "dev.json holds keys");
    }

    // The tokens are real contracts on the real chain, and the payer holds them.
    let provider = ProviderBuilder::new().connect_http(info.rpc_url.parse().unwrap());
    for symbol in ["USDC", "USDT"] {
        let token = TestToken::new(info.tokens[symbol], &provider);
        assert_eq!(token.symbol().call().await.unwrap(), symbol);
        assert_eq!(token.decimals().call().await.unwrap(), 6);
        assert_eq!(token.balanceOf(info.payer_address).call().await.unwrap(), U256::from(1_000_000_000_000u64));
    }

    // The merchant registers a webhook endpoint (dev allows a local http receiver).
    let receiver = depositd_testkit::webhooks::Receiver::start().await;
    let endpoint: serde_json::Value = client
        .post(format!("{}/api/v1/webhook-endpoints", info.api_url))
        .header("x-api-key", &info.api_key)
        .json(&serde_json::json!({"url": receiver.url("/hooks"), "enabled_events": ["invoice.processing", "invoice.paid"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = endpoint["secret"].as_str().expect("the endpoint's secret is shown at creation").to_owned();

    // The newcomer's path: create an invoice with the dev key, pay pay.amount of USDC from the
    // payer, and watch the running daemon turn it to paid after the dev chain's confirmations.
    let invoice: serde_json::Value = client
        .post(format!("{}/api/v1/invoices", info.api_url))
        .header("x-api-key", &info.api_key)
        .header("Idempotency-Key", "dev-e2e-1")
        .json(&serde_json::json!({"amount": "19.99", "currency": "USD"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(invoice["pay"]["asset"], "USDC");
    let payer: alloy::signers::local::PrivateKeySigner = info.payer_private_key.parse().unwrap();
    let wallet = ProviderBuilder::new().wallet(payer).connect_http(info.rpc_url.parse().unwrap());
    let amount: U256 = invoice["pay"]["amount_base_units"].as_str().unwrap().parse().unwrap();
    let to = invoice["pay"]["address"].as_str().unwrap().parse().unwrap();
    tokens::transfer(&wallet, info.tokens["USDC"], to, amount).await.unwrap();
    let url = format!("{}/api/v1/invoices/{}", info.api_url, invoice["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let current: serde_json::Value =
            client.get(&url).header("x-api-key", &info.api_key).send().await.unwrap().json().await.unwrap();
        let status = current["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == "paid" {
            assert_eq!(current["amount_paid"], "19.99");
            break;
        }
        assert!(Instant::now() < deadline, "the dev invoice was not paid within 60 s (statuses seen: {seen:?})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen.contains(&"paid".to_owned()));

    // The daemon's webhook worker delivered processing, then paid, and the official Standard
    // Webhooks library verifies both.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !receiver.hits().iter().any(|h| h.event_type() == "invoice.paid") {
        assert!(Instant::now() < deadline, "invoice.paid was not delivered within 20 s: {:?}", receiver.hits());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hits = receiver.hits();
    assert_eq!(crate::webhooks::verify_official(&secret, &hits), ["invoice.processing", "invoice.paid"]);

    // The generated configuration works for other subcommands.
    let config = dir.path().join("depositd.toml");
    let output = depositd().arg("--config").arg(&config).arg("check-config").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("USDC") && stdout.contains("chain anvil verified"), "{stdout}");
    // A chain file that disagrees with the chain is one clear error naming the problem.
    let original = std::fs::read_to_string(dir.path().join("chains/anvil.toml")).unwrap();
    for (broken, expected) in [
        (original.replacen("decimals = 6", "decimals = 18", 1), "reports 6 decimals, but the file says 18"),
        (original.replace("chain_id = 31337", "chain_id = 1"), "serves chain id 31337, but the file says 1"),
    ] {
        let chains = tempfile::tempdir().unwrap();
        std::fs::write(chains.path().join("anvil.toml"), broken).unwrap();
        let output = depositd()
            .arg("--config")
            .arg(&config)
            .env("DEPOSITD__CHAINS__DIR", chains.path())
            .arg("check-config")
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected) && stderr.lines().count() == 1, "{stderr}");
    }

    // The money side: the payment is a credit and a 1% fee in the ledger, the balance shows what
    // is left, and `depositd ledger verify` reconciles it, against the chain too.
    let invoice_id = invoice["id"].as_str().unwrap();
    let get = |path: String| {
        let request = client.get(format!("{}{path}", info.api_url)).header("x-api-key", &info.api_key);
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let ledger = get(format!("/api/v1/ledger?invoice_id={invoice_id}")).await;
    let entries = ledger["data"].as_array().unwrap();
    let types: Vec<&str> = entries.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["fee", "deposit_credit", "deposit_pending"], "{ledger}");
    let posting = |entry: &serde_json::Value, account: &str| {
        entry["postings"].as_array().unwrap().iter().find(|p| p["account"] == account).cloned().unwrap()
    };
    assert_eq!(posting(&entries[1], "available")["amount"], "19.99");
    assert_eq!(posting(&entries[0], "available")["amount"], "-0.1999");
    assert_eq!(posting(&entries[0], "available")["balance_after"], "19.7901");
    let balances = get("/api/v1/balances".into()).await;
    let usdc = balances["data"].as_array().unwrap().iter().find(|b| b["asset"] == "USDC").unwrap();
    assert_eq!((usdc["available"].as_str(), usdc["pending"].as_str()), (Some("19.7901"), Some("0")), "{balances}");
    let output = depositd().arg("--config").arg(&config).args(["ledger", "verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("OK:") && stdout.contains("anvil USDC: ledger holds 19.99"), "{stdout}");

    // The settler: a payout created with the dev key arrives at its destination (once the sweep
    // has brought the payment into the treasury), and a pass-through invoice's merchant amount
    // lands at the merchant's own address; the ledger still reconciles with the chain.
    let post = |path: &str, key: &str, body: serde_json::Value| {
        let request = client
            .post(format!("{}{path}", info.api_url))
            .header("x-api-key", &info.api_key)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let destination = alloy::signers::local::PrivateKeySigner::random().address();
    let (status, payout) = post(
        "/api/v1/payouts",
        "dev-e2e-payout",
        serde_json::json!({"asset": "USDC", "amount": "5", "destination": destination.to_checksum(None)}),
    )
    .await;
    assert_eq!(status, 201, "{payout}");
    let own_wallet = alloy::signers::local::PrivateKeySigner::random().address();
    let (status, forwarded) = post(
        "/api/v1/invoices",
        "dev-e2e-passthrough",
        serde_json::json!({"amount": "10", "currency": "USD", "receiver_override": true,
            "receiver_override_address": own_wallet.to_checksum(None)}),
    )
    .await;
    assert_eq!(status, 201, "{forwarded}");
    let to = forwarded["pay"]["address"].as_str().unwrap().parse().unwrap();
    let amount: U256 = forwarded["pay"]["amount_base_units"].as_str().unwrap().parse().unwrap();
    tokens::transfer(&wallet, info.tokens["USDC"], to, amount).await.unwrap();
    let usdc = TestToken::new(info.tokens["USDC"], &provider);
    let merchant_amount: U256 = forwarded["merchant_amount_base_units"].as_str().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let payout_now = get(format!("/api/v1/payouts/{}", payout["id"].as_str().unwrap())).await;
        let paid_out = usdc.balanceOf(destination).call().await.unwrap();
        let passed_through = usdc.balanceOf(own_wallet).call().await.unwrap();
        let open = get(format!("/api/v1/ledger?invoice_id={}", forwarded["id"].as_str().unwrap())).await;
        let settled = open["data"].as_array().unwrap().iter().any(|e| e["type"] == "passthrough_settlement");
        if payout_now["status"] == "confirmed" && settled {
            assert_eq!(paid_out, U256::from(5_000_000u64));
            assert_eq!(passed_through, merchant_amount);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "payout {payout_now} / pass-through {passed_through} of {merchant_amount} not settled within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let output = depositd().arg("--config").arg(&config).args(["ledger", "verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));

    // Ctrl-C: everything stops, exit 0, anvil included.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "depositd dev did not stop within 30 s of SIGINT");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status after SIGINT: {status:?}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", anvil_port)).is_err(), "anvil still listening after shutdown");
    assert!(
        client.get(format!("{}/healthz", info.api_url)).send().await.is_err(),
        "API still answering after shutdown"
    );
}
