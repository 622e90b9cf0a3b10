//! `depositd api-key create|list|revoke`.

use anyhow::Context;
use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::api_keys::{self as lifecycle, Grantor, NewKey};
use depositd_core::config::Config;
use depositd_core::store::api_keys;
use secrecy::ExposeSecret;

use crate::cli::ApiKeyCommand;

pub async fn run(config: &Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    let store = crate::database::open_store(config).await?;
    let mut conn = store.conn().await?;
    match command {
        ApiKeyCommand::Create { merchant, scopes, mode, name } => {
            let merchant = super::find_merchant(&mut conn, &merchant).await?;
            let scopes: Vec<Scope> = if scopes.is_empty() {
                Scope::MERCHANT.to_vec()
            } else {
                scopes.iter().map(|s| s.parse::<Scope>().map_err(anyhow::Error::msg)).collect::<Result<_, _>>()?
            };
            let mode = match mode {
                Some(mode) => mode.parse::<KeyMode>().map_err(anyhow::Error::msg)?,
                None => default_mode(config),
            };
            drop(conn);
            let mut tx = store.begin().await?;
            let new = NewKey { mode, scopes: &scopes, name: name.as_deref() };
            let (key, plaintext) = lifecycle::create(&mut tx, merchant.id, Grantor::Operator, new).await?;
            tx.commit().await?;
            eprintln!(
                "API key {} for merchant {} ({}); store it now, it is not shown again:",
                key.id, merchant.name, merchant.id
            );
            println!("{}", plaintext.expose_secret());
        }
        ApiKeyCommand::List { merchant } => {
            let merchant = super::find_merchant(&mut conn, &merchant).await?;
            for key in api_keys::list(&mut conn, merchant.id).await? {
                let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
                let state = if key.revoked_at.is_some() { "revoked" } else { "active" };
                let last_used =
                    key.last_used_at.map(|t| t.div_euclid(1000).to_string()).unwrap_or_else(|| "never".into());
                println!(
                    "{}\t{}...\t{}\t{}\tlast used {}",
                    key.id,
                    key.display_prefix,
                    state,
                    scopes.join(","),
                    last_used
                );
            }
        }
        ApiKeyCommand::Revoke { id } => {
            let key = api_keys::find(&mut conn, id).await?.with_context(|| format!("no API key {id}"))?;
            drop(conn);
            let mut tx = store.begin().await?;
            lifecycle::revoke(&mut tx, key.merchant_id, id, Grantor::Operator)
                .await
                .with_context(|| format!("cannot revoke API key {id}"))?;
            tx.commit().await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// Test keys while every enabled chain is a testnet; live as soon as a mainnet is enabled.
pub fn default_mode(config: &Config) -> KeyMode {
    if config.chains.iter().all(|c| c.testnet) { KeyMode::Test } else { KeyMode::Live }
}
