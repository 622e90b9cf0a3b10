//! One module per subcommand.

mod api_key;
mod check_config;
mod deposits;
mod ledger;
mod members;
mod merchant;
mod rescan;
mod treasury;
mod wallet;

use anyhow::Context;
use depositd_core::config::Config;

use crate::cli::{Cli, Command, GlobalOptions};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Run(args) => {
            let config = load_config(&global)?;
            // Listening from the start: a signal while the daemon is being built stops it as
            // soon as it runs.
            let shutdown = crate::shutdown::on_signal();
            let daemon = crate::daemon::Daemon::build(config, &args.only).await?;
            daemon.run(shutdown).await
        }
        Command::Migrate => {
            let config = load_config(&global)?;
            let store = crate::database::open_store(&config).await?;
            println!("migrations applied ({} at {})", store.backend().name(), config.settings.database.url);
            Ok(())
        }
        Command::CheckConfig { offline } => check_config::run(&global, offline).await,
        Command::Merchant(command) => merchant::run(&load_config(&global)?, command).await,
        Command::ApiKey(command) => api_key::run(&load_config(&global)?, command).await,
        Command::Ledger(command) => ledger::run(&load_config(&global)?, command).await,
        Command::Treasury(command) => treasury::run(&load_config(&global)?, command).await,
        Command::Wallet(command) => wallet::run(&load_config(&global)?, command),
        Command::Deposits(command) => deposits::run(&load_config(&global)?, command).await,
        Command::Rescan(args) => rescan::run(&load_config(&global)?, args).await,
        Command::Dev(args) => crate::dev::run(args).await,
    }
}

pub fn load_config(global: &GlobalOptions) -> anyhow::Result<Config> {
    Ok(Config::load(global.config.as_deref(), global.database_url.as_deref())?)
}

/// The merchant named by `--merchant` (an id or an exact name), or a clear error.
pub async fn find_merchant(
    conn: &mut depositd_core::store::Conn,
    id_or_name: &str,
) -> anyhow::Result<depositd_core::merchant::Merchant> {
    depositd_core::store::merchants::find(conn, id_or_name)
        .await?
        .with_context(|| format!("no merchant with id or name {id_or_name:?}"))
}
