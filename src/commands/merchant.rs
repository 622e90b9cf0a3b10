//! `depositd merchant create|list|set-fee|set-checkout-origins|set-notification-email|deactivate|activate|invite`.

use depositd_core::config::Config;
use depositd_core::merchant::MerchantStatus;
use depositd_core::store::merchants::{self, AssetFee, NewMerchant};

use crate::cli::MerchantCommand;

pub async fn run(config: &Config, command: MerchantCommand) -> anyhow::Result<()> {
    let store = crate::database::open_store(config).await?;
    let mut conn = store.conn().await?;
    match command {
        MerchantCommand::Create {
            name,
            company_name,
            fee_percent,
            min_amount,
            max_amount,
            payment_tolerance_percent,
        } => {
            let name = name.trim().to_owned();
            anyhow::ensure!(!name.is_empty() && name.len() <= 255, "--name must be 1 to 255 characters");
            anyhow::ensure!(
                fee_percent >= rust_decimal::Decimal::ZERO && fee_percent < rust_decimal::Decimal::ONE_HUNDRED,
                "--fee-percent must be at least 0 and below 100"
            );
            if let (Some(min), Some(max)) = (min_amount, max_amount) {
                anyhow::ensure!(min <= max, "--min-amount must not exceed --max-amount");
            }
            let positive = |v: Option<rust_decimal::Decimal>| v.is_none_or(|v| v > rust_decimal::Decimal::ZERO);
            anyhow::ensure!(
                positive(min_amount) && positive(max_amount),
                "--min-amount and --max-amount must be greater than 0"
            );
            let new = NewMerchant {
                name,
                company_name,
                fee_percent,
                min_invoice_amount: min_amount,
                max_invoice_amount: max_amount,
            };
            anyhow::ensure!(
                payment_tolerance_percent >= rust_decimal::Decimal::ZERO
                    && payment_tolerance_percent < rust_decimal::Decimal::ONE_HUNDRED,
                "--payment-tolerance-percent must be at least 0 and below 100"
            );
            let merchant = merchants::insert(&mut conn, &new).await?;
            if !payment_tolerance_percent.is_zero() {
                merchants::set_payment_tolerance(&mut conn, merchant.id, payment_tolerance_percent).await?;
            }
            println!("{}", merchant.id);
        }
        MerchantCommand::SetFee { merchant, asset, percent, fixed } => {
            depositd_core::fees::validate(percent, fixed).map_err(|e| anyhow::anyhow!("--percent/--fixed: {e}"))?;
            // The symbol as a chain configures it (`usdc` sets USDC's fee; `USDe` stays `USDe`).
            let asset = config
                .chains
                .iter()
                .flat_map(|c| c.asset_symbols())
                .find(|s| s.eq_ignore_ascii_case(asset.trim()))
                .map(str::to_owned)
                .unwrap_or_else(|| asset.trim().to_ascii_uppercase());
            anyhow::ensure!(
                !asset.is_empty() && asset.len() <= 16 && asset.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'),
                "--asset {asset:?} is not an asset symbol (letters, digits and dots, at most 16)"
            );
            let found = super::find_merchant(&mut conn, &merchant).await?;
            merchants::set_asset_fee(&mut conn, found.id, &AssetFee { asset: asset.clone(), percent, fixed }).await?;
            if !config.chains.iter().any(|c| c.asset(&asset).is_some()) {
                eprintln!("warning: no enabled chain has an asset {asset}; the fee applies once one does");
            }
            println!(
                "{}: {asset} fee {}% + {} {asset} per invoice",
                found.name,
                percent.normalize(),
                fixed.normalize()
            );
        }
        MerchantCommand::SetCheckoutOrigins { merchant, origins } => {
            let mut checked = Vec::with_capacity(origins.len());
            for origin in &origins {
                // The dashboard's Settings page checks origins with the same rule.
                let normalized = depositd_core::merchant::checkout_origin(origin)
                    .map_err(|refused| anyhow::anyhow!("--origin {refused}"))?;
                checked.push(normalized);
            }
            let found = super::find_merchant(&mut conn, &merchant).await?;
            merchants::set_checkout_origins(&mut conn, found.id, &checked).await?;
            println!(
                "{}: checkout origins {}",
                found.name,
                if checked.is_empty() { "none".into() } else { checked.join(", ") }
            );
        }
        MerchantCommand::SetNotificationEmail { merchant, email } => {
            let email = email.map(|e| e.trim().to_owned()).filter(|e| !e.is_empty());
            if let Some(address) = &email {
                anyhow::ensure!(
                    depositd_core::notify::is_email_address(address),
                    "--email {address:?} is not an e-mail address (name@example.com)"
                );
            }
            let found = super::find_merchant(&mut conn, &merchant).await?;
            depositd_core::store::emails::set_notification_email(&mut conn, found.id, email.as_deref()).await?;
            match &email {
                Some(address) => println!("{}: notifications go to {address}", found.name),
                None => println!("{}: no notification e-mails", found.name),
            }
            if config.settings.smtp.is_none() {
                eprintln!("warning: no [smtp] is configured; no e-mail is sent until one is");
            }
        }
        MerchantCommand::Deactivate { merchant } => {
            let found = super::find_merchant(&mut conn, &merchant).await?;
            if found.status == MerchantStatus::Disabled {
                println!("{} ({}) is already inactive: its API keys are refused", found.name, found.id);
            } else {
                merchants::set_status(&mut conn, found.id, MerchantStatus::Disabled).await?;
                println!(
                    "{} ({}) deactivated: its API keys are refused until it is activated again; payments to its \
                     addresses are still recorded and credited",
                    found.name, found.id
                );
            }
        }
        MerchantCommand::Activate { merchant } => {
            let found = super::find_merchant(&mut conn, &merchant).await?;
            if found.status == MerchantStatus::Active {
                println!("{} ({}) is already active", found.name, found.id);
            } else {
                merchants::set_status(&mut conn, found.id, MerchantStatus::Active).await?;
                println!("{} ({}) activated: its API keys work again", found.name, found.id);
            }
        }
        MerchantCommand::Invite(args) => {
            drop(conn);
            super::members::invite(config, &store, args).await?;
        }
        MerchantCommand::List => {
            for m in merchants::list(&mut conn).await? {
                println!(
                    "{}\t{}\t{}\tfee {}%\ttolerance {}%",
                    m.id,
                    m.status.as_str(),
                    m.name,
                    m.fee_percent,
                    m.payment_tolerance_percent
                );
            }
        }
    }
    Ok(())
}
