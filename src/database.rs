//! Opening the configured database, as every command that touches it does (the daemon, `migrate`,
//! the administrative subcommands, `depositd dev`).

use anyhow::Context;
use depositd_core::config::Config;
use depositd_core::store::{Store, wallet_identity};
use depositd_core::wallet::HdWallet;

/// Connects to the configured database and brings its schema up to date.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let db = &config.settings.database;
    let store = Store::connect(&db.url, db.max_connections).await?;
    store.migrate().await.context("cannot migrate the database")?;
    // Receipts and notifications are queued only by a process that has [smtp] configured.
    store.set_mail_enabled(config.settings.smtp.is_some());
    Ok(store)
}

/// The wallet a command or the daemon runs with, built from the settings (`signs`: it needs the
/// mnemonic) and checked against the database's recorded wallet
/// (`depositd_core::store::wallet_identity::check`): a wallet with the mnemonic records itself on
/// a database that has none yet; a watch-only one only reads the record, and is refused while
/// there is none or when it differs. Every command that uses the wallet with the database goes
/// through here, so none runs on an unchecked xpub or treasury address.
pub async fn open_store_with_wallet(config: &Config, signs: bool) -> anyhow::Result<(Store, HdWallet)> {
    let wallet = HdWallet::from_settings(&config.settings.wallet, signs)?;
    let store = open_store(config).await?;
    if let Err(e) = wallet_identity::check(&store, &wallet).await {
        store.close().await;
        return Err(e.into());
    }
    Ok((store, wallet))
}
