//! `depositd wallet xpub|web-keys`: what a process without the settler runs from instead of the
//! mnemonic (issue 21). Both read the configured mnemonic and print TOML lines to paste into the
//! web tier's `[wallet]` section (or its environment: `DEPOSITD__WALLET__XPUB`, ...).

use depositd_core::config::Config;
use depositd_core::wallet::{DEPOSIT_ACCOUNT_PATH, HdWallet};
use secrecy::ExposeSecret;

use crate::cli::WalletCommand;

pub fn run(config: &Config, command: WalletCommand) -> anyhow::Result<()> {
    let wallet = HdWallet::from_mnemonic(&config.settings.wallet.mnemonic()?)?;
    match command {
        WalletCommand::Xpub => {
            println!("# The hot wallet's public half, for `depositd run --only api,expiry,watcher,ledger,webhooks`.");
            println!("# Not a secret for money, but it links every deposit address to one owner.");
            println!("[wallet]");
            println!("xpub = \"{}\"", wallet.xpub());
            println!("xpub_path = \"{DEPOSIT_ACCOUNT_PATH}\"");
            println!("treasury_address = \"{}\"", wallet.treasury_address().to_checksum(None));
        }
        WalletCommand::WebKeys => {
            let (sealing, session) = wallet.web_keys_hex();
            println!("# SECRET: the web tier's keys (webhook-secret sealing, payment-session signing); they");
            println!("# reveal nothing of the mnemonic. Give them only to the web tier's [wallet] section or");
            println!("# environment (DEPOSITD__WALLET__SEALING_KEY, DEPOSITD__WALLET__SESSION_KEY).");
            println!("sealing_key = \"{}\"", sealing.expose_secret());
            println!("session_key = \"{}\"", session.expose_secret());
        }
    }
    Ok(())
}
