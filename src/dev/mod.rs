//! `depositd dev`: everything a newcomer needs, in one command.
//!
//! 1. starts anvil (its chain saved in `DIR/anvil-state.json`, so a restart keeps balances,
//!    contracts and the invoices' payments);
//! 2. deploys the test stablecoins `USDC` and `USDT` (6 decimals) on a fresh chain and mints
//!    them to the dev payer (anvil's account 1);
//! 3. writes `DIR/depositd.toml`, `DIR/chains/anvil.toml` and a generated hot-wallet mnemonic
//!    (`DIR/mnemonic`), so any other subcommand can use `--config DIR/depositd.toml`;
//! 4. creates a demo merchant and API key (once), funds the treasury with 10 test ETH for gas
//!    (recorded in the ledger as operator funding), and a dashboard login for the demo merchant
//!    (an owner, `demo@depositd.dev` with a generated password), writes `DIR/dev.json` for scripts;
//! 5. runs the whole daemon on SQLite (`DIR/depositd.db`) until Ctrl-C, then stops anvil.
//!
//! anvil and the test tokens come from `depositd-testkit`, shared with the tests and benchmarks.

mod dashboard;

use std::path::{Path, PathBuf};

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use anyhow::Context;
use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::config::Config;
use depositd_core::store::api_keys;
use depositd_core::store::merchants::{self, NewMerchant};
use depositd_core::wallet::HdWallet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::cli::DevArgs;
use depositd_testkit::anvil::{self, Anvil, AnvilOptions};
use depositd_testkit::tokens::{self, DECIMALS, PAYER_MINT};

/// Confirmations on the dev chain: 2 shows "processing" for a block before "paid".
const DEV_CONFIRMATIONS: u64 = 2;
/// What the dev treasury is funded with for gas (10 ETH), when it holds less than a tenth of it.
pub const DEV_TREASURY_FUNDING: u128 = 10_000_000_000_000_000_000;

/// `DIR/dev.json`: what scripts and tests need to talk to a running dev instance. Its `Debug`
/// leaves out the API key and the payer's private key.
#[derive(Clone, Serialize, Deserialize)]
pub struct DevInfo {
    pub api_url: String,
    pub api_key: String,
    pub rpc_url: String,
    pub chain: String,
    pub chain_id: u64,
    pub confirmations: u64,
    #[serde(with = "checksummed_map")]
    pub tokens: std::collections::BTreeMap<String, Address>,
    pub payer_private_key: String,
    #[serde(with = "checksummed")]
    pub payer_address: Address,
    /// The dashboard's sign-in page.
    #[serde(default)]
    pub dashboard_url: String,
    /// A ready dashboard login for the demo merchant (an owner).
    #[serde(default)]
    pub dashboard_email: String,
    #[serde(default)]
    pub dashboard_password: String,
}

impl std::fmt::Debug for DevInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevInfo")
            .field("api_url", &self.api_url)
            .field("api_key", &"[REDACTED]")
            .field("rpc_url", &self.rpc_url)
            .field("chain", &self.chain)
            .field("chain_id", &self.chain_id)
            .field("tokens", &self.tokens)
            .field("payer_private_key", &"[REDACTED]")
            .field("payer_address", &self.payer_address)
            .field("dashboard_url", &self.dashboard_url)
            .field("dashboard_email", &self.dashboard_email)
            .field("dashboard_password", &"[REDACTED]")
            .finish()
    }
}

/// Addresses in `dev.json` are EIP-55 checksummed, as wallets and block explorers show them.
mod checksummed {
    use alloy::primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(address: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&address.to_checksum(None))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

mod checksummed_map {
    use std::collections::BTreeMap;

    use alloy::primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<String, Address>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, v.to_checksum(None))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Address>, D::Error> {
        BTreeMap::<String, Address>::deserialize(d)
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let dir = prepare_dir(&args.data_dir)?;
    let previous: Option<DevInfo> =
        std::fs::read(dir.join("dev.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());

    let anvil_port = anvil::preferred_or_free_port(args.anvil_port.unwrap_or(8545))?;
    let api_port = anvil::preferred_or_free_port(args.api_port.unwrap_or(8080))?;
    // Start in automine so deployment is instant, then switch to interval mining.
    let chain = Anvil::spawn(AnvilOptions {
        port: anvil_port,
        block_time: None,
        state_file: Some(dir.join("anvil-state.json")),
        chain_id: None,
    })
    .await
    .context("cannot start the dev chain")?;
    let rpc_url = chain.rpc_url();

    let result = async {
        let tokens = ensure_tokens(&rpc_url, previous.as_ref()).await?;
        let mnemonic = ensure_mnemonic(&dir)?;
        let wallet = HdWallet::from_mnemonic(&mnemonic).context("the dev mnemonic is invalid")?;
        let config_path = write_config(&dir, args.api_addr(api_port), &rpc_url, &tokens)?;
        let config = Config::load(Some(&config_path), None).context("the generated dev configuration is invalid")?;
        let api_key = ensure_demo_merchant(&config, previous.as_ref()).await?;
        let previous_password = previous.as_ref().map(|p| p.dashboard_password.as_str()).filter(|p| !p.is_empty());
        let dashboard_password = dashboard::ensure_demo_login(&config, &api_key, previous_password).await?;
        let store = crate::database::open_store(&config).await?;
        let chain_config = config.chain("anvil").context("the dev configuration has no anvil chain")?;
        fund_treasury(&store, chain_config, wallet.treasury_address(), DEV_TREASURY_FUNDING).await?;
        store.close().await;
        set_interval_mining(&rpc_url, args.block_time).await?;
        let payer: PrivateKeySigner = anvil::DEV_ACCOUNT_1_KEY.parse()?;
        let info = DevInfo {
            api_url: config.settings.api.public_url.clone(),
            api_key: api_key.expose_secret().to_owned(),
            rpc_url: rpc_url.clone(),
            chain: "anvil".into(),
            chain_id: 31337,
            confirmations: DEV_CONFIRMATIONS,
            tokens,
            payer_private_key: anvil::DEV_ACCOUNT_1_KEY.into(),
            payer_address: payer.address(),
            dashboard_url: format!("{}/dashboard", config.settings.api.public_url.trim_end_matches('/')),
            dashboard_email: dashboard::DEMO_EMAIL.into(),
            dashboard_password,
        };
        write_private_file(&dir.join("dev.json"), &(serde_json::to_string_pretty(&info)? + "\n"))?;
        print_quick_start(&info, &dir);
        let shutdown = crate::shutdown::on_signal();
        crate::daemon::Daemon::build(config, &[]).await?.run(shutdown).await
    }
    .await;
    chain.shutdown().await;
    result
}

/// Funds the treasury with `wei` from anvil's account 0 when it holds less than a tenth of that,
/// mines the confirmations (the chain must be automining), and records the funding in the ledger
/// as `depositd treasury fund` does.
pub async fn fund_treasury(
    store: &depositd_core::store::Store,
    chain: &depositd_core::config::ChainConfig,
    treasury: Address,
    wei: u128,
) -> anyhow::Result<()> {
    use alloy::network::TransactionBuilder;
    use alloy::providers::{Provider, ProviderBuilder};
    let rpc_url = chain.rpc_urls.first().context("the chain has no RPC URL")?;
    let funder: PrivateKeySigner = anvil::DEV_ACCOUNT_0_KEY.parse()?;
    let provider = ProviderBuilder::new().wallet(funder).connect_http(rpc_url.expose().parse()?);
    if provider.get_balance(treasury).await? >= U256::from(wei / 10) {
        return Ok(());
    }
    let request = alloy::rpc::types::TransactionRequest::default().with_to(treasury).with_value(U256::from(wei));
    let receipt = provider.send_transaction(request).await?.get_receipt().await?;
    anyhow::ensure!(receipt.status(), "funding the treasury reverted");
    provider.raw_request::<_, serde_json::Value>("anvil_mine".into(), (chain.confirmations,)).await?;
    crate::treasury::record_funding(store, chain, treasury, &format!("{:#x}", receipt.transaction_hash)).await?;
    Ok(())
}

fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("chains")).with_context(|| format!("cannot create {}", dir.display()))?;
    dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))
}

/// Reuses the tokens of a previous run when the (persisted) chain still has them.
async fn ensure_tokens(
    rpc_url: &str,
    previous: Option<&DevInfo>,
) -> anyhow::Result<std::collections::BTreeMap<String, Address>> {
    if let Some(previous) = previous {
        let mut all_present = !previous.tokens.is_empty();
        for address in previous.tokens.values() {
            all_present &= tokens::has_code(rpc_url, *address).await?;
        }
        if all_present {
            return Ok(previous.tokens.clone());
        }
    }
    let payer: PrivateKeySigner = anvil::DEV_ACCOUNT_1_KEY.parse()?;
    let mut deployed = std::collections::BTreeMap::new();
    for (name, symbol) in [("USD Coin (dev)", "USDC"), ("Tether USD (dev)", "USDT")] {
        let address = tokens::deploy_and_mint(
            rpc_url,
            anvil::DEV_ACCOUNT_0_KEY,
            name,
            symbol,
            DECIMALS,
            &[payer.address()],
            U256::from(PAYER_MINT),
        )
        .await?;
        deployed.insert(symbol.to_owned(), address);
    }
    Ok(deployed)
}

async fn set_interval_mining(rpc_url: &str, seconds: u64) -> anyhow::Result<()> {
    anyhow::ensure!(seconds > 0, "--block-time must be at least 1 second");
    anvil::call(rpc_url, "evm_setIntervalMining", serde_json::json!([seconds]))
        .await
        .context("anvil refused evm_setIntervalMining")?;
    Ok(())
}

/// The dev hot wallet's mnemonic, generated once and kept in `DIR/mnemonic` (mode 0600).
fn ensure_mnemonic(dir: &Path) -> anyhow::Result<SecretString> {
    let path = dir.join("mnemonic");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(SecretString::from(existing.trim().to_owned()));
    }
    let mnemonic = HdWallet::generate_mnemonic();
    write_private_file(&path, &format!("{}\n", mnemonic.expose_secret()))?;
    Ok(mnemonic)
}

fn write_config(
    dir: &Path,
    api: std::net::SocketAddr,
    rpc_url: &str,
    tokens: &std::collections::BTreeMap<String, Address>,
) -> anyhow::Result<PathBuf> {
    let mut chain = format!(
        "# Written by `depositd dev`: the local anvil chain with the test tokens it deployed.\n\
         name = \"anvil\"\n\
         chain_id = 31337\n\
         rpc_urls = [\"{rpc_url}\"]\n\
         confirmations = {DEV_CONFIRMATIONS}   # 2 shows \"processing\" for a block before \"paid\"\n\
         block_time_ms = 1000\n\
         poll_interval_ms = 250        # localhost polling is free; keeps the demo snappy\n\
         max_block_range = 10000       # anvil has no eth_getLogs range cap\n\
         start_block = 0               # scan the whole (short) dev chain\n\
         testnet = true\n\n\
         [native]\nsymbol = \"ETH\"\ndecimals = 18\n"
    );
    for (symbol, address) in tokens {
        chain.push_str(&format!(
            "\n[[tokens]]\nsymbol = \"{symbol}\"\naddress = \"{}\"\ndecimals = 6\n",
            address.to_checksum(None)
        ));
    }
    std::fs::write(dir.join("chains/anvil.toml"), chain)?;

    let db = dir.join("depositd.db");
    let config = format!(
        "# Written by `depositd dev`; regenerated at each start. Point other subcommands here with\n\
         # `depositd --config {config} <command>`.\n\n\
         [database]\nurl = \"sqlite://{db}\"\n\n\
         [api]\nlisten = \"{api}\"\npublic_url = \"http://{api}\"\n\n\
         [chains]\ndir = \"{chains}\"\nenabled = [\"anvil\"]\ndefault_chain = \"anvil\"\ndefault_asset = \"USDC\"\n\n\
         [wallet]\nmnemonic_file = \"{mnemonic}\"\n\n\
         # Fixed rates so every pricing path works offline: the price of one unit in USD.\n\
         [pricing.static_usd_rates]\nUSD = \"1\"\nUSDC = \"1\"\nUSDT = \"1\"\nETH = \"3000\"\nEUR = \"1.08\"\nUAH = \"0.024\"\n\n\
         [invoices]\nallow_http_urls = true\n\n\
         # Dev receivers run on localhost over http.\n\
         [webhooks]\nallow_http = true\nallow_private_targets = true\n",
        config = dir.join("depositd.toml").display(),
        db = db.display(),
        chains = dir.join("chains").display(),
        mnemonic = dir.join("mnemonic").display(),
    );
    let path = dir.join("depositd.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// The demo merchant's key: the previous run's when it still works, else a new merchant and key.
async fn ensure_demo_merchant(config: &Config, previous: Option<&DevInfo>) -> anyhow::Result<SecretString> {
    let store = crate::database::open_store(config).await?;
    let mut conn = store.conn().await?;
    if let Some(previous) = previous {
        let key = SecretString::from(previous.api_key.clone());
        if api_keys::authenticate(&mut conn, &key).await?.is_ok() {
            return Ok(key);
        }
    }
    let merchant = merchants::insert(
        &mut conn,
        &NewMerchant {
            name: "Demo Shop".into(),
            company_name: Some("Demo Shop".into()),
            fee_percent: rust_decimal::Decimal::ONE,
            min_invoice_amount: None,
            max_invoice_amount: None,
        },
    )
    .await?;
    let (_, key) =
        api_keys::create(&mut conn, merchant.id, KeyMode::Test, &Scope::MERCHANT, Some("depositd dev")).await?;
    drop(conn);
    store.close().await;
    Ok(key)
}

/// Writes a file readable by its owner only: it holds a key or mnemonic.
fn write_private_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

fn print_quick_start(info: &DevInfo, dir: &Path) {
    let tokens: Vec<String> = info.tokens.iter().map(|(s, a)| format!("{s} {a}")).collect();
    println!(
        "\ndepositd dev is up.\n\
         \n  API          {api}  (try: curl {api}/healthz)\
         \n  API key      {key}\
         \n  dashboard    {dashboard}  (sign in as {email}, password {password})\
         \n  dev chain    {rpc}  (chain id {chain_id}, {conf} confirmations)\
         \n  tokens       {tokens}\
         \n  payer        {payer}  (1,000,000 USDC and USDT; private key in dev.json)\
         \n  files        {dir}/dev.json, {dir}/depositd.toml\
         \n\nCreate an invoice:\
         \n  curl -s {api}/api/v1/invoices -H 'x-api-key: {key}' -H 'Idempotency-Key: my-order-1' \\\
         \n       -H 'content-type: application/json' -d '{{\"amount\": \"19.99\", \"currency\": \"USD\"}}'\
         \nPay it: send pay.amount of USDC to pay.address from the payer (import its key from dev.json into a\
         \nwallet on network {rpc}, chain id {chain_id}; or `cast send` if you have Foundry). Follow it with\
         \n  curl -s {api}/api/v1/invoices/<id> -H 'x-api-key: {key}'\
         \nOnce paid (and swept into the treasury, a few blocks later), pay out to any address:\
         \n  curl -s {api}/api/v1/payouts -H 'x-api-key: {key}' -H 'Idempotency-Key: my-payout-1' \\\
         \n       -H 'content-type: application/json' -d '{{\"asset\": \"USDC\", \"amount\": \"5\", \"destination\": \"0x...\"}}'\
         \nAdd \"receiver_override\": true, \"receiver_override_address\": \"0x...\" to an invoice to have it\
         \nforwarded there (less the fee) once paid. Check the books: depositd --config {dir}/depositd.toml ledger verify\
         \n\nOther commands against this instance: depositd --config {dir}/depositd.toml <command>\
         \nPress Ctrl-C to stop.\n",
        api = info.api_url,
        key = info.api_key,
        dashboard = info.dashboard_url,
        email = info.dashboard_email,
        password = info.dashboard_password,
        rpc = info.rpc_url,
        chain_id = info.chain_id,
        conf = info.confirmations,
        tokens = tokens.join(", "),
        payer = info.payer_address,
        dir = dir.display(),
    );
}
