//! `depositd run`: the selected components under one shutdown token.
//!
//! [`Daemon::build`] does everything that can fail before anything runs: it opens the store (on
//! SQLite, locked to this daemon), binds the API's listener and constructs every selected
//! component, so a bad configuration or a port in use is an error before any component starts,
//! and the caller learns the bound address from [`Daemon::api_addr`] (tests bind port 0).
//! [`Daemon::run`] then runs every component as a task until the shutdown token is cancelled.
//! If one of them stops on its own (an error, or a panic), that is logged with the component's
//! name and the others are shut down too: the daemon never runs half-alive.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use depositd_api::{AppState, Application};
use depositd_core::config::Config;
use depositd_core::store::leases::Lease;
use depositd_core::store::{DaemonLock, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::Component;
use crate::database::open_store_with_wallet;

/// How long a watcher's or settler's lease outlives its last renewal: after a holder dies, another
/// daemon takes over within this time.
const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// How often unpaid invoices are checked for expiry.
const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A component's task once started: runs until the shutdown token fires, or fails.
type Running = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// One task of a component, constructed and waiting for [`Daemon::run`]'s token to start.
struct Task {
    component: Component,
    start: Box<dyn FnOnce(CancellationToken) -> Running + Send>,
}

impl Task {
    fn new<F, R>(component: Component, start: F) -> Task
    where
        F: FnOnce(CancellationToken) -> R + Send + 'static,
        R: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Task { component, start: Box::new(move |token| Box::pin(start(token)) as Running) }
    }
}

/// The daemon, built and not yet running (zero2prod's `Application::build`, mini-redis'
/// `run(listener, shutdown)`).
pub struct Daemon {
    /// Every selected component's tasks, in the order they start.
    tasks: Vec<Task>,
    /// The components' shared store, closed once they have all stopped.
    store: Store,
    /// Where the API listens, when it is selected: the bound address, so port 0 can be asked for.
    api_addr: Option<SocketAddr>,
    /// On SQLite, the lock that makes this the database file's only daemon: held from `build`
    /// until `run` returns (or the daemon is dropped unrun).
    single_daemon: Option<DaemonLock>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let components: Vec<Component> = self.tasks.iter().map(|t| t.component).collect();
        f.debug_struct("Daemon").field("tasks", &components).field("api_addr", &self.api_addr).finish_non_exhaustive()
    }
}

impl Daemon {
    /// Opens the store, binds the API's listener (`api.listen`; when the API is selected) and
    /// constructs the components in `only` (all of them when empty). Nothing runs yet.
    pub async fn build(config: Config, only: &[Component]) -> anyhow::Result<Daemon> {
        let components: Vec<Component> = if only.is_empty() { Component::ALL.to_vec() } else { only.to_vec() };
        // Only the settler signs: a process without it runs from the xpub, never the mnemonic.
        let signs = components.contains(&Component::Settler);
        // Every process on the database derives the same addresses and shares the web keys; only
        // one with the mnemonic records them.
        let (store, wallet) = open_store_with_wallet(&config, signs).await?;
        {
            let mut conn = store.conn().await?;
            depositd_core::invoicing::check_native_deposits_off(&mut conn, &config)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let wallet = Arc::new(wallet);
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
        let mut tasks = Vec::new();
        let mut api_addr = None;
        // This process's name in leases: one watcher and one settler per chain across daemons.
        let holder = uuid::Uuid::now_v7();
        let lease = |name: String| Lease::new(store.clone(), name, holder, LEASE_TTL);

        tracing::info!(
            components = ?components,
            database = store.backend().name(),
            signs = wallet.signs(),
            "starting depositd"
        );
        for component in components {
            match component {
                Component::Api => {
                    let listen = config.settings.api.listen;
                    let app = Application::build(state.clone(), listen)
                        .await
                        .with_context(|| format!("cannot listen on {listen} (api.listen)"))?;
                    api_addr = Some(app.local_addr());
                    tasks.push(Task::new(Component::Api, move |token| async move {
                        app.run(token).await.map_err(anyhow::Error::from)
                    }));
                    let filling = state.clone();
                    tasks.push(Task::new(Component::Api, move |token| async move {
                        depositd_api::address_pool::run(filling, token).await;
                        Ok(())
                    }));
                    if let Some(url) = config.settings.pricing.feed_url.clone() {
                        let pricer = state.pricer.clone();
                        let interval = std::time::Duration::from_secs(config.settings.pricing.feed_refresh_secs);
                        tasks.push(Task::new(Component::Api, move |token| async move {
                            depositd_api::price_feed::run(pricer, url, interval, token).await;
                            Ok(())
                        }));
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
                        tasks.push(Task::new(Component::Watcher, move |token| async move {
                            watcher.run(token).await.map_err(anyhow::Error::from)
                        }));
                    }
                }
                Component::Ledger => {
                    let interval = config.settings.ledger.verify_interval_secs;
                    if interval == 0 {
                        continue;
                    }
                    let (store, config, wallet, metrics) =
                        (store.clone(), config.clone(), wallet.clone(), metrics.clone());
                    tasks.push(Task::new(Component::Ledger, move |token| async move {
                        let period = std::time::Duration::from_secs(interval);
                        crate::reconcile::run_periodically(store, config, wallet, metrics, period, token).await
                    }));
                }
                Component::Webhooks => {
                    let deliverer = depositd_webhooks::Deliverer::new(
                        store.clone(),
                        &wallet,
                        config.settings.webhooks.clone(),
                        metrics.clone(),
                    );
                    tasks.push(Task::new(Component::Webhooks, move |token| async move {
                        deliverer.run(token).await.map_err(anyhow::Error::from)
                    }));
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
                        tasks.push(Task::new(Component::Settler, move |token| async move {
                            settler.run(token).await.map_err(anyhow::Error::from)
                        }));
                    }
                }
                Component::Mail => {
                    // Without [smtp] there is nothing to send: no e-mail is ever queued.
                    let Some(smtp) = &config.settings.smtp else { continue };
                    let mailer = depositd_webhooks::Mailer::new(store.clone(), smtp)?;
                    tasks.push(Task::new(Component::Mail, move |token| async move {
                        mailer.run(token).await.map_err(anyhow::Error::from)
                    }));
                }
                Component::Expiry => {
                    let state = state.clone();
                    tasks.push(Task::new(Component::Expiry, move |token| async move {
                        depositd_api::expiry::run(state, EXPIRY_INTERVAL, token).await.map_err(anyhow::Error::from)
                    }));
                }
            }
        }
        Ok(Daemon { tasks, store, api_addr, single_daemon })
    }

    /// The address the API listens on, when the API component was selected.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// Runs every component until `shutdown` is cancelled, then waits for them all to stop and
    /// closes the store. `Ok` when they stopped because of the token; an error naming the first
    /// component that stopped on its own, failed or panicked (which cancels `shutdown`, so the
    /// others stop too).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Daemon { tasks, store, api_addr: _, single_daemon } = self;
        let mut running: JoinSet<(Component, anyhow::Result<()>)> = JoinSet::new();
        for Task { component, start } in tasks {
            let task = start(shutdown.clone());
            running.spawn(async move { (component, task.await) });
        }

        let mut failure = None;
        while let Some(joined) = running.join_next().await {
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
        // Another daemon may take the database file only now that this one has let go of it.
        drop(single_daemon);
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
