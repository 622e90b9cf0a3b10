//! `depositd run`: the selected components under one shutdown token.
//!
//! Every component is a task that runs until the token is cancelled. If one of them stops on its
//! own (an error, or a panic), that is logged with the component's name and the others are shut
//! down too: the daemon never runs half-alive.

use std::sync::Arc;

use anyhow::Context;
use depositd_api::{AppState, Application};
use depositd_core::config::Config;
use depositd_core::store::Store;
use depositd_core::store::leases::Lease;
use depositd_core::wallet::HdWallet;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::Component;

/// How long a watcher's or settler's lease outlives its last renewal: after a holder dies, another
/// daemon takes over within this time.
const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// How often unpaid invoices are checked for expiry.
const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A token cancelled on SIGINT (Ctrl-C) or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        let signal = tokio::select! {
            _ = ctrl_c => "SIGINT",
            _ = terminate => "SIGTERM",
        };
        // Cancel before logging: shutdown must not depend on the log destination (a closed
        // stderr pipe must not keep the daemon alive).
        trigger.cancel();
        tracing::info!(signal, "shutting down");
    });
    token
}

/// Runs `only` (all components when empty) until `shutdown` is cancelled.
pub async fn run(config: Config, only: &[Component], shutdown: CancellationToken) -> anyhow::Result<()> {
    let components: Vec<Component> = if only.is_empty() { Component::ALL.to_vec() } else { only.to_vec() };
    let mnemonic = config.settings.wallet.mnemonic()?;
    let wallet = Arc::new(HdWallet::from_mnemonic(&mnemonic)?);
    let store = open_store(&config).await?;
    let single_daemon = store.lock_for_daemon(&config.settings.database.url)?;
    if single_daemon.is_some() {
        // The only daemon this database can have: a killed predecessor's leases are free now,
        // not after their time to live.
        let freed = Lease::expire_all(&store).await?;
        if freed > 0 {
            tracing::info!(leases = freed, "took over the leases of a daemon that stopped without releasing them");
        }
    }
    let config = Arc::new(config);
    let metrics = depositd_core::metrics::Metrics::new();
    let state = AppState::new(store.clone(), config.clone(), wallet.clone(), metrics.clone());
    let mut tasks: JoinSet<(Component, anyhow::Result<()>)> = JoinSet::new();
    // This process's name in leases: one watcher and one settler per chain across daemons.
    let holder = uuid::Uuid::now_v7();
    let lease = |name: String| Lease::new(store.clone(), name, holder, LEASE_TTL);

    tracing::info!(components = ?components, database = store.backend().name(), "starting depositd");
    for component in components {
        match component {
            Component::Api => {
                let listen = config.settings.api.listen;
                let app = Application::build(state.clone(), listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen} (api.listen)"))?;
                let token = shutdown.clone();
                tasks.spawn(async move { (Component::Api, app.run(token).await.map_err(anyhow::Error::from)) });
                let (filling, token) = (state.clone(), shutdown.clone());
                tasks.spawn(async move {
                    depositd_api::address_pool::run(filling, token).await;
                    (Component::Api, Ok(()))
                });
                if let Some(url) = config.settings.pricing.feed_url.clone() {
                    let (pricer, token) = (state.pricer.clone(), shutdown.clone());
                    let interval = std::time::Duration::from_secs(config.settings.pricing.feed_refresh_secs);
                    tasks.spawn(async move {
                        depositd_api::price_feed::run(pricer, url, interval, token).await;
                        (Component::Api, Ok(()))
                    });
                }
            }
            Component::Watcher => {
                for chain in &config.chains {
                    let watcher = depositd_watcher::ChainWatcher::new(
                        chain.clone(),
                        store.clone(),
                        config.settings.api.public_url.clone(),
                        state.sessions.clone(),
                        metrics.clone(),
                    )?
                    .with_lease(lease(format!("watcher:{}", chain.name)));
                    let token = shutdown.clone();
                    tasks.spawn(
                        async move { (Component::Watcher, watcher.run(token).await.map_err(anyhow::Error::from)) },
                    );
                }
            }
            Component::Ledger => {
                let interval = config.settings.ledger.verify_interval_secs;
                if interval == 0 {
                    continue;
                }
                let (store, config, wallet, metrics, token) =
                    (store.clone(), config.clone(), wallet.clone(), metrics.clone(), shutdown.clone());
                tasks.spawn(async move {
                    let period = std::time::Duration::from_secs(interval);
                    let result =
                        crate::reconcile::run_periodically(store, config, wallet, metrics, period, token).await;
                    (Component::Ledger, result)
                });
            }
            Component::Webhooks => {
                let deliverer = depositd_webhooks::Deliverer::new(
                    store.clone(),
                    &wallet,
                    config.settings.webhooks.clone(),
                    metrics.clone(),
                );
                let token = shutdown.clone();
                tasks.spawn(
                    async move { (Component::Webhooks, deliverer.run(token).await.map_err(anyhow::Error::from)) },
                );
            }
            Component::Settler => {
                for chain in &config.chains {
                    let settler = depositd_settler::Settler::new(
                        chain.clone(),
                        store.clone(),
                        wallet.clone(),
                        config.settings.settler.clone(),
                        config.settings.api.public_url.clone(),
                        state.sessions.clone(),
                        metrics.clone(),
                    )?
                    .with_lease(lease(format!("settler:{}", chain.name)));
                    let token = shutdown.clone();
                    tasks.spawn(
                        async move { (Component::Settler, settler.run(token).await.map_err(anyhow::Error::from)) },
                    );
                }
            }
            Component::Expiry => {
                let (state, token) = (state.clone(), shutdown.clone());
                tasks.spawn(async move {
                    let result = depositd_api::expiry::run(state, EXPIRY_INTERVAL, token).await;
                    (Component::Expiry, result.map_err(anyhow::Error::from))
                });
            }
        }
    }

    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        let (component, result) = match joined {
            Ok(done) => done,
            Err(join_error) => {
                tracing::error!(error = %join_error, "a component panicked; shutting down");
                failure.get_or_insert_with(|| anyhow::anyhow!("a component panicked: {join_error}"));
                shutdown.cancel();
                continue;
            }
        };
        match result {
            Ok(()) if shutdown.is_cancelled() => tracing::info!(?component, "stopped"),
            Ok(()) => {
                tracing::error!(?component, "stopped unexpectedly; shutting down");
                failure.get_or_insert_with(|| anyhow::anyhow!("{component:?} stopped unexpectedly"));
                shutdown.cancel();
            }
            Err(error) => {
                tracing::error!(?component, error = %format!("{error:#}"), "failed; shutting down");
                failure.get_or_insert(error.context(format!("{component:?} failed")));
                shutdown.cancel();
            }
        }
    }
    store.close().await;
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Connects to the configured database and brings its schema up to date.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let db = &config.settings.database;
    let store = Store::connect(&db.url, db.max_connections).await?;
    store.migrate().await.context("cannot migrate the database")?;
    Ok(store)
}
