//! `depositd treasury address|fund|resume-signer`.

use anyhow::Context;
use depositd_core::config::Config;
use depositd_core::evm::parse_address;

use crate::cli::TreasuryCommand;

pub async fn run(config: &Config, command: TreasuryCommand) -> anyhow::Result<()> {
    // Resuming a signer runs the settler's logic, which needs the mnemonic; the others read and
    // record only, for which the xpub and the treasury's address are enough (as on the web tier).
    // Each is checked against the database's recorded wallet first, so even `treasury address`
    // prints the treasury this database's settler signs with, not an unchecked setting.
    let signs = matches!(command, TreasuryCommand::ResumeSigner { .. });
    let (store, wallet) = crate::database::open_store_with_wallet(config, signs).await?;
    let treasury = wallet.treasury_address();
    let chain_named = |name: &str| {
        config.chain(name).with_context(|| format!("chain {name:?} is not enabled (chains.enabled)")).cloned()
    };
    match command {
        TreasuryCommand::Address => {
            store.close().await;
            println!("{}", treasury.to_checksum(None));
            Ok(())
        }
        TreasuryCommand::Fund { chain, tx } => {
            let chain = chain_named(&chain)?;
            for funding in crate::treasury::record_funding(&store, &chain, treasury, &tx).await? {
                let decimals = chain.asset(&funding.asset).map(|a| a.decimals).unwrap_or(18);
                let what = if funding.new { "recorded" } else { "already recorded" };
                println!("{what}: {} {} from {tx}", funding.amount.to_display(decimals), funding.asset);
            }
            Ok(())
        }
        TreasuryCommand::ResumeSigner { chain, address } => {
            let chain = chain_named(&chain)?;
            let address = parse_address(&address).map_err(|e| anyhow::anyhow!("--address: {e}"))?;
            let wallet = std::sync::Arc::new(wallet);
            let nonce = crate::treasury::resume_signer(&store, config, wallet, &chain, address).await?;
            println!("{} resumed on {} at nonce {nonce}", address.to_checksum(None), chain.name);
            Ok(())
        }
    }
}
