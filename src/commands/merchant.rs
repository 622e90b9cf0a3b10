//! `depositd merchant create|list`.

use depositd_core::config::Config;
use depositd_core::store::merchants::{self, NewMerchant};

use crate::cli::MerchantCommand;

pub async fn run(config: &Config, command: MerchantCommand) -> anyhow::Result<()> {
    let store = super::open_store(config).await?;
    let mut conn = store.pool().acquire().await?;
    match command {
        MerchantCommand::Create { name, company_name, fee_percent } => {
            let name = name.trim().to_owned();
            anyhow::ensure!(!name.is_empty() && name.len() <= 255, "--name must be 1 to 255 characters");
            anyhow::ensure!(
                fee_percent >= rust_decimal::Decimal::ZERO && fee_percent < rust_decimal::Decimal::ONE_HUNDRED,
                "--fee-percent must be at least 0 and below 100"
            );
            let merchant = merchants::insert(&mut conn, &NewMerchant { name, company_name, fee_percent }).await?;
            println!("{}", merchant.id);
        }
        MerchantCommand::List => {
            for m in merchants::list(&mut conn).await? {
                println!("{}\t{}\t{}\tfee {}%", m.id, m.status.as_str(), m.name, m.fee_percent);
            }
        }
    }
    Ok(())
}
