//! What every request handler can reach.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Recent successful authentications (see `crate::auth`).
    pub key_cache: Arc<crate::key_cache::KeyCache>,
    /// Invoice creations written together (see `crate::group_commit`).
    pub group_commit: Arc<crate::group_commit::GroupCommit>,
    /// The `depositd_invoices` gauge's counting (see `crate::invoice_counts`).
    pub invoice_counts: Arc<crate::invoice_counts::InvoiceCounts>,
}

impl AppState {
    pub fn new(store: Store, config: Arc<Config>, wallet: Arc<HdWallet>, metrics: Metrics) -> AppState {
        let limits = Arc::new(RateLimits::new(&config));
        let chain_rpcs = config
            .chains
            .iter()
            .filter_map(|chain| {
                let url = chain.rpc_urls.first()?.expose().parse().ok()?;
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
            key_cache: Arc::default(),
            group_commit: Arc::default(),
            invoice_counts: Arc::default(),
        }
    }
}

impl AppState {
    /// What the group commit's writer makes invoices with.
    pub fn writer(&self) -> crate::group_commit::Writer {
        crate::group_commit::Writer {
            store: self.store.clone(),
            config: self.config.clone(),
            pricer: self.pricer.clone(),
            wallet: self.wallet.clone(),
            sessions: self.sessions.clone(),
        }
    }

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
    /// Failed authentications per client address: see [`AuthFailures`].
    pub auth_failures: AuthFailures,
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
            auth_failures: AuthFailures::new(api.auth_failures_per_minute),
        }
    }
}

/// A token bucket per client address for failed authentications: `per_minute` of them at once,
/// refilled evenly over a minute. Each lookup in progress holds a token until it ends (given back
/// if the key was good), so a burst of concurrent bad keys costs a bounded number of lookups
/// (the allowance, or four times it from an address that had not failed before the burst); an
/// address with no token left is refused before any lookup.
pub struct AuthFailures {
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    pending: u32,
}

/// How many times its allowance an address that has not failed lately may have in flight.
const CLEAN_CONCURRENCY: f64 = 4.0;

/// Addresses tracked above which full, idle buckets are dropped.
const AUTH_BUCKETS_CLEANUP: usize = 10_000;

impl AuthFailures {
    fn new(per_minute: u32) -> AuthFailures {
        let capacity = f64::from(per_minute.max(1));
        AuthFailures { capacity, per_second: capacity / 60.0, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for a lookup from `client`, or says how long until one is free.
    pub fn begin(&self, client: IpAddr) -> Result<AuthAttempt<'_>, Duration> {
        let client = canonical(client);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= AUTH_BUCKETS_CLEANUP {
            let (capacity, per_second) = (self.capacity, self.per_second);
            buckets.retain(|_, b| {
                b.pending > 0 || b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < capacity
            });
        }
        let bucket = buckets.entry(client).or_insert(Bucket { tokens: self.capacity, at: now, pending: 0 });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.per_second).min(self.capacity);
        bucket.at = now;
        // Lookups in flight count against what the address has left; one that has not failed
        // lately may have more of them at once (a busy client with a good key is not held back,
        // a first burst of bad keys is still bounded).
        let failed_lately = bucket.tokens < self.capacity;
        let budget = if failed_lately { bucket.tokens } else { self.capacity * CLEAN_CONCURRENCY };
        let free = budget - f64::from(bucket.pending);
        if free < 1.0 {
            // Until a token has refilled; lookups in flight end within moments.
            let wait = if bucket.tokens < 1.0 { (1.0 - bucket.tokens) / self.per_second } else { 1.0 };
            return Err(Duration::from_secs_f64(wait));
        }
        bucket.pending += 1;
        Ok(AuthAttempt { failures: self, client, failed: false })
    }

    fn finish(&self, client: IpAddr, failed: bool) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(&client) {
            bucket.pending = bucket.pending.saturating_sub(1);
            if failed {
                bucket.tokens = (bucket.tokens - 1.0).max(0.0);
            }
        }
    }
}

/// One authentication in progress; dropped without [`AuthAttempt::failed`], its token returns.
pub struct AuthAttempt<'a> {
    failures: &'a AuthFailures,
    client: IpAddr,
    failed: bool,
}

impl AuthAttempt<'_> {
    pub fn failed(mut self) {
        self.failed = true;
    }
}

impl Drop for AuthAttempt<'_> {
    fn drop(&mut self) {
        self.failures.finish(self.client, self.failed);
    }
}

/// An IPv4 client seen through an IPv4-mapped IPv6 socket is the same client.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
