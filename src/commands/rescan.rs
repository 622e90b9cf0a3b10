//! `depositd rescan --chain NAME --from N --to M`: record what the watcher missed in a range.

use anyhow::Context;
use depositd_core::config::Config;
use depositd_core::invoice::SessionSigner;
use depositd_core::metrics::Metrics;
use depositd_watcher::ChainWatcher;

use crate::cli::RescanArgs;

pub async fn run(config: &Config, args: RescanArgs) -> anyhow::Result<()> {
    let chain = config
        .chain(&args.chain)
        .with_context(|| format!("chain {:?} is not enabled (chains.enabled)", args.chain))?
        .clone();
    let (store, wallet) = crate::database::open_store_with_wallet(config, false).await?;
    let mut watcher = ChainWatcher::new(
        chain.clone(),
        store,
        config.settings.api.public_url.clone(),
        SessionSigner::new(wallet.session_key()),
        Metrics::new(),
    )?;
    let done = watcher.rescan(args.from, args.to).await.with_context(|| format!("rescan of {}", chain.name))?;
    println!(
        "rescanned blocks {} to {} of {}: {} blocks, {} transfers to our addresses, {} of them newly recorded",
        args.from, args.to, chain.name, done.blocks, done.transfers, done.recorded
    );
    if done.recorded > 0 {
        println!(
            "the newly recorded deposits are credited once they have {} confirmations (by the running daemon's watcher)",
            chain.confirmations
        );
    }
    Ok(())
}
