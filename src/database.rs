//! Opening the configured database, as every command that touches it does (the daemon, `migrate`,
//! the administrative subcommands, `depositd dev`).

use anyhow::Context;
use depositd_core::config::Config;
use depositd_core::store::Store;

/// Connects to the configured database and brings its schema up to date.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let db = &config.settings.database;
    let store = Store::connect(&db.url, db.max_connections).await?;
    store.migrate().await.context("cannot migrate the database")?;
    Ok(store)
}
