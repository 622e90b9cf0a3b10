//! What every request handler can reach.

use std::num::NonZeroU32;
use std::sync::Arc;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use depositd_core::config::{ChainConfig, Config};
use depositd_core::invoice::SessionSigner;
use depositd_core::metrics::Metrics;
use depositd_core::pricing::Pricer;
use depositd_core::store::Store;
use depositd_core::wallet::HdWallet;
use governor::{DefaultKeyedRateLimiter, Quota};
use uuid::Uuid;

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    /// Derives deposit addresses (public derivation only on the request path).
    pub wallet: Arc<HdWallet>,
    pub pricer: Arc<Pricer>,
    pub sessions: SessionSigner,
    pub limits: Arc<RateLimits>,
    /// The process's metrics, rendered at `GET /metrics`.
    pub metrics: Metrics,
    /// Seals and opens webhook signing secrets.
    pub webhook_secrets: depositd_core::webhooks::SecretBox,
    /// One RPC client per enabled chain (its first URL), for readiness checks.
    pub chain_rpcs: Arc<Vec<(ChainConfig, DynProvider)>>,
}

impl AppState {
    pub fn new(store: Store, config: Arc<Config>, wallet: Arc<HdWallet>, metrics: Metrics) -> AppState {
        let limits = Arc::new(RateLimits::new(&config));
        let chain_rpcs = config
            .chains
            .iter()
            .filter_map(|chain| {
                let url = chain.rpc_urls.first()?.parse().ok()?;
                Some((chain.clone(), ProviderBuilder::new().connect_http(url).erased()))
            })
            .collect();
        AppState {
            pricer: Arc::new(Pricer::new(config.settings.pricing.clone())),
            sessions: SessionSigner::new(wallet.session_key()),
            webhook_secrets: depositd_core::webhooks::SecretBox::new(wallet.webhook_secrets_key()),
            store,
            config,
            wallet,
            limits,
            metrics,
            chain_rpcs: Arc::new(chain_rpcs),
        }
    }
}

impl AppState {
    /// What the invoicing lifecycle needs of this process.
    pub fn invoicing(&self) -> depositd_core::invoicing::Context<'_> {
        depositd_core::invoicing::Context {
            config: &self.config,
            pricer: &self.pricer,
            wallet: &self.wallet,
            sessions: &self.sessions,
        }
    }
}

/// In-process token buckets. (Each daemon limits on its own; with N API instances behind a load
/// balancer the effective limit is up to N times the configured one.)
pub struct RateLimits {
    /// Per API key id.
    pub per_key: DefaultKeyedRateLimiter<Uuid>,
    /// Invoice creation per (merchant, customer_id).
    pub per_customer: DefaultKeyedRateLimiter<(Uuid, String)>,
}

impl RateLimits {
    fn new(config: &Config) -> RateLimits {
        let api = &config.settings.api;
        let at_least_one = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let per_key =
            Quota::per_second(at_least_one(api.rate_limit_per_second)).allow_burst(at_least_one(api.rate_limit_burst));
        let per_customer = Quota::per_minute(at_least_one(config.settings.invoices.customer_rate_limit_per_minute));
        RateLimits {
            per_key: DefaultKeyedRateLimiter::keyed(per_key),
            per_customer: DefaultKeyedRateLimiter::keyed(per_customer),
        }
    }
}
