//! `depositd check-config`: load everything the daemon would load, check each chain against its
//! RPC (unless `--offline`), and say what it found.

use std::time::Duration;

use alloy::providers::{Provider, ProviderBuilder};
use anyhow::Context;
use depositd_core::config::ChainConfig;

use crate::cli::GlobalOptions;

alloy::sol! {
    #[sol(rpc)]
    interface Erc20Metadata {
        function decimals() external view returns (uint8);
        function symbol() external view returns (string);
    }
}

pub async fn run(global: &GlobalOptions, offline: bool) -> anyhow::Result<()> {
    let config = super::load_config(global)?;
    for chain in config.chains.iter().filter(|c| !c.testnet) {
        refuse_placeholder_rpc(chain)?;
    }
    // What `run` builds from the wallet settings: a malformed xpub or web key, a lowercase
    // treasury address, or (beside the mnemonic) a setting that is not the mnemonic's own, is an
    // error here too.
    let wallet = if config.settings.wallet.xpub.is_some() {
        Some(depositd_core::wallet::HdWallet::from_settings(&config.settings.wallet, false)?)
    } else if let Ok(mnemonic) = config.settings.wallet.mnemonic() {
        Some(depositd_core::wallet::HdWallet::from_mnemonic(&mnemonic)?)
    } else {
        None
    };
    if let Some(wallet) = wallet {
        for chain in &config.chains {
            for (symbol, cold) in &chain.cold_storage {
                anyhow::ensure!(
                    cold.cold_address != wallet.treasury_address(),
                    "chain {}: cold_storage.{symbol}.cold_address {} is the treasury itself",
                    chain.name,
                    cold.cold_address
                );
            }
        }
    }
    let mainnets: Vec<&str> = config.chains.iter().filter(|c| !c.testnet).map(|c| c.name.as_str()).collect();
    if !mainnets.is_empty() && config.settings.database.url.scheme() == "sqlite" {
        eprintln!(
            "warning: mainnet chain(s) {} run on SQLite: one process on one disk, no replica, no second daemon; \
             use PostgreSQL (database.url = postgres://...) for real money",
            mainnets.join(", ")
        );
    }
    if !offline {
        for chain in &config.chains {
            verify_chain(chain).await.with_context(|| format!("chain {}", chain.name))?;
        }
    }
    if config.chains.iter().any(|c| !c.native_deposits_on()) {
        // Native deposits off where native payments are still open: refused, as `run` does.
        // (A database not created yet has nothing open.)
        let database = &config.settings.database;
        match depositd_core::store::Store::connect(&database.url, 1).await {
            Ok(store) => {
                let mut conn = store.conn().await?;
                let checked = depositd_core::invoicing::check_native_deposits_off(&mut conn, &config).await;
                drop(conn);
                store.close().await;
                if let Err(problem) = checked {
                    if problem.starts_with("cannot check") {
                        eprintln!("warning: {problem}");
                    } else {
                        anyhow::bail!(problem);
                    }
                }
            }
            Err(e) => eprintln!("warning: native payments still open not checked (database: {e})"),
        }
    }
    let s = &config.settings;
    println!("configuration OK");
    println!("  database: {}", s.database.url);
    println!("  api:      listen {}, public URL {}", s.api.listen, s.api.public_url);
    for chain in &config.chains {
        println!(
            "  chain {} (id {}): {} RPC URL(s) ({}), {} confirmations, assets {}",
            chain.name,
            chain.chain_id,
            chain.rpc_urls.len(),
            chain.rpc_urls.iter().map(|url| url.redacted()).collect::<Vec<_>>().join(", "),
            chain.confirmations,
            chain.asset_symbols().join(", ")
        );
    }
    println!("  default:  {} on {}", s.chains.default_asset, s.chains.default_chain);
    match s.wallet.mnemonic() {
        Ok(_) => println!("  wallet:   mnemonic configured"),
        Err(_) if s.wallet.xpub.is_some() => println!("  wallet:   xpub only, valid (runs without the settler)"),
        Err(e) => println!("  wallet:   {e} (needed by `run`)"),
    }
    match &s.smtp {
        Some(smtp) => println!(
            "  smtp:     {}:{} ({:?}), from {}, {}",
            smtp.host,
            smtp.port,
            smtp.tls,
            smtp.from,
            if smtp.username.is_some() { "credentials configured" } else { "no credentials" }
        ),
        None => println!("  smtp:     not configured (no receipts or notifications are e-mailed)"),
    }
    if offline {
        println!("  chains were not contacted (--offline)");
    }
    Ok(())
}

/// A mainnet moves real money: it must run on the operator's own endpoints. A file that names
/// `rpc_urls_env` expects them from that variable; its `rpc_urls` are public, rate-limited
/// placeholders (`chains/README.md`), so a mainnet left on them has no RPC URL of its own.
fn refuse_placeholder_rpc(chain: &ChainConfig) -> anyhow::Result<()> {
    if let Some(var) = &chain.rpc_urls_env
        && !chain.rpc_urls_from_env
    {
        anyhow::bail!(
            "chain {} is a mainnet and has no RPC URL: set {var} to your own endpoints (comma-separated); \
             the file's public endpoints are rate-limited placeholders, not for real money",
            chain.name
        );
    }
    Ok(())
}

/// The chain's first RPC URL answers with the configured chain id, and every token is a contract
/// reporting the configured decimals (a wrong address or decimals would misprice every invoice).
async fn verify_chain(chain: &ChainConfig) -> anyhow::Result<()> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let url = chain.rpc_urls.first().context("no RPC URL")?;
    let shown = url.redacted();
    let provider =
        ProviderBuilder::new().connect_http(url.expose().parse().with_context(|| format!("invalid RPC URL {shown}"))?);
    let chain_id = tokio::time::timeout(TIMEOUT, provider.get_chain_id())
        .await
        .map_err(|_| anyhow::anyhow!("RPC {shown} did not answer within {TIMEOUT:?}"))?
        .with_context(|| format!("RPC {shown} failed"))?;
    anyhow::ensure!(
        chain_id == chain.chain_id,
        "RPC {shown} serves chain id {chain_id}, but the file says {}",
        chain.chain_id
    );
    for token in &chain.tokens {
        let code = provider.get_code_at(token.address).await.with_context(|| format!("RPC {shown} failed"))?;
        anyhow::ensure!(
            !code.is_empty(),
            "token {} at {} is not a contract on this chain",
            token.symbol,
            token.address
        );
        let contract = Erc20Metadata::new(token.address, &provider);
        let decimals = contract
            .decimals()
            .call()
            .await
            .with_context(|| format!("token {} at {} does not answer decimals()", token.symbol, token.address))?;
        anyhow::ensure!(
            decimals == token.decimals,
            "token {} at {} reports {decimals} decimals, but the file says {}",
            token.symbol,
            token.address,
            token.decimals
        );
    }
    println!("chain {} verified against {shown}: chain id {chain_id}, {} token(s)", chain.name, chain.tokens.len());
    Ok(())
}
