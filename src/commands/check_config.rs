//! `depositd check-config`: load everything the daemon would load and say what it found.

use crate::cli::GlobalOptions;

pub fn run(global: &GlobalOptions) -> anyhow::Result<()> {
    let config = super::load_config(global)?;
    let s = &config.settings;
    println!("configuration OK");
    println!("  database: {}", s.database.url);
    println!("  api:      listen {}, public URL {}", s.api.listen, s.api.public_url);
    for chain in &config.chains {
        println!(
            "  chain {} (id {}): {} RPC URL(s), {} confirmations, assets {}",
            chain.name,
            chain.chain_id,
            chain.rpc_urls.len(),
            chain.confirmations,
            chain.asset_symbols().join(", ")
        );
    }
    println!("  default:  {} on {}", s.chains.default_asset, s.chains.default_chain);
    match s.wallet.mnemonic() {
        Ok(_) => println!("  wallet:   mnemonic configured"),
        Err(e) => println!("  wallet:   {e} (needed by `run`)"),
    }
    Ok(())
}
