//! `depositd ledger verify`.

use std::sync::Arc;

use depositd_core::config::Config;

use crate::cli::LedgerCommand;

pub async fn run(config: &Config, command: LedgerCommand) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Verify { offline } => {
            let (store, wallet) = crate::database::open_store_with_wallet(config, false).await?;
            let wallet = Arc::new(wallet);
            let outcome = crate::reconcile::reconcile(&store, config, &wallet, !offline).await?;
            print!("{}", outcome.render());
            anyhow::ensure!(
                outcome.report.is_ok(),
                "the ledger does not reconcile ({} problem(s))",
                outcome.report.problems.len()
            );
            anyhow::ensure!(
                outcome.unchecked.is_empty(),
                "the ledger could not be compared with {} chain(s); --offline checks the ledger alone",
                outcome.unchecked.len()
            );
            Ok(())
        }
    }
}
