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
    if config.settings.wallet.xpub.is_some() {
        // What `run` builds from it: a malformed xpub or web key, a lowercase treasury address,
        // or (beside the mnemonic) a setting that is not the mnemonic's own, is an error here too.
        depositd_core::wallet::HdWallet::from_settings(&config.settings.wallet, false)?;
    }
    if !offline {
        for chain in &config.chains {
            verify_chain(chain).await.with_context(|| format!("chain {}", chain.name))?;
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
    if offline {
        println!("  chains were not contacted (--offline)");
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
