//! `depositd deposits list|resolve`: the operator's view of transfers in suspense and their
//! resolution (`depositd_core::resolutions`, which the operator API calls too).

use anyhow::Context as _;
use depositd_core::config::Config;
use depositd_core::crediting;
use depositd_core::deposit::DepositState;
use depositd_core::invoice::SessionSigner;
use depositd_core::resolutions::{self, ResolveRequest, Target};
use depositd_core::store::{StoreError, deposits, resolutions as resolution_rows};
use depositd_core::wallet::HdWallet;

use crate::cli::{DepositsCommand, ResolveArgs};

pub async fn run(config: &Config, command: DepositsCommand) -> anyhow::Result<()> {
    match command {
        DepositsCommand::List { state, limit } => list(config, &state, limit).await,
        DepositsCommand::Resolve(args) => resolve(config, args).await,
    }
}

async fn list(config: &Config, state: &str, limit: u32) -> anyhow::Result<()> {
    let state: DepositState = state.parse().map_err(|e: String| anyhow::anyhow!("--state: {e}"))?;
    let store = crate::database::open_store(config).await?;
    let mut conn = store.conn().await?;
    let found = deposits::list_in_state(&mut conn, state, limit).await?;
    if found.is_empty() {
        println!("no {state} deposits");
    }
    for d in found {
        let chain = config.chains.iter().find(|c| c.chain_id == d.chain_id);
        let decimals = chain.and_then(|c| c.asset(&d.asset)).map(|a| a.decimals).unwrap_or(18);
        let chain_name = chain.map(|c| c.name.clone()).unwrap_or_else(|| d.chain_id.to_string());
        let resolution = resolution_rows::of_deposit(&mut conn, d.id)
            .await?
            .into_iter()
            .rfind(|r| r.generation == d.generation)
            .map(|r| format!("{} {} by {} ({})", r.action, r.state, r.actor, r.reason))
            .unwrap_or_else(|| if d.state == DepositState::Rejected { "unresolved".into() } else { "-".into() });
        println!(
            "{} {chain_name} {} {} {} to {} from {} tx {} block {}{}: {}",
            d.id,
            d.state,
            d.amount.to_display(decimals),
            d.asset,
            d.to_address,
            d.from_address,
            d.tx_hash,
            d.block_number,
            d.reject_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
            resolution
        );
    }
    Ok(())
}

async fn resolve(config: &Config, args: ResolveArgs) -> anyhow::Result<()> {
    let store = crate::database::open_store(config).await?;
    let wallet = HdWallet::from_mnemonic(&config.settings.wallet.mnemonic()?)?;
    let sessions = SessionSigner::new(wallet.session_key());
    let target = match (&args.credit_invoice, &args.credit_merchant, args.refund, args.revenue) {
        (Some(invoice), _, _, _) => Target::CreditInvoice(*invoice),
        (_, Some(merchant), _, _) => {
            let mut conn = store.conn().await?;
            Target::CreditMerchant(super::find_merchant(&mut conn, merchant).await?.id)
        }
        (_, _, true, _) => Target::Refund(args.to.clone()),
        _ => Target::Revenue,
    };
    let actor = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "operator".into()));
    let ctx = resolutions::Context {
        chains: &config.chains,
        treasury: wallet.treasury_address(),
        crediting: crediting::Context { public_url: &config.settings.api.public_url, sessions: &sessions },
    };
    let mut tx = store.begin().await?;
    let resolved = resolutions::resolve(
        &mut tx,
        ctx,
        ResolveRequest { deposit_id: args.deposit_id, target, reason: args.reason, actor },
    )
    .await
    .with_context(|| format!("cannot resolve deposit {}", args.deposit_id))?;
    tx.commit().await.map_err(StoreError::from)?;
    let r = &resolved.resolution;
    let done = if resolved.replayed { "already resolved (this same request)" } else { "resolved" };
    let what = match (r.invoice_id, r.merchant_id, &r.destination) {
        (Some(invoice), _, _) => format!("credited to invoice {invoice}"),
        (None, Some(merchant), _) => format!("credited to merchant {merchant}"),
        (_, _, Some(to)) => {
            format!("refund to {to} (transaction {}), {}", r.transaction_id.unwrap_or_default(), r.state)
        }
        _ => "taken as revenue".to_owned(),
    };
    println!("{} {done}: {what}; resolution {}", args.deposit_id, r.id);
    Ok(())
}
