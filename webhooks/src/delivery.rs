//! The webhook delivery worker: claims due deliveries from the queue (`store::webhooks`), signs
//! them (Standard Webhooks, `core::webhooks`), POSTs them through the SSRF guard, and records
//! every attempt.
//!
//! - Deliveries to one URL go out one after another in the order the events happened (a tick
//!   sends all of a destination's due deliveries in order, so a burst is not one tick per event);
//!   only a retry can overtake a later event, so receivers should still rely on `created_at` and the
//!   resource's status rather than on arrival order.
//! - A 2xx answer is success. Redirects are never followed (a 3xx is a failure like any other).
//! - `410 Gone` disables the endpoint at once. Anything else is retried after
//!   `webhooks.retry_schedule_secs[n]` (jittered by +-10%); when the schedule is spent the
//!   delivery has failed, and an endpoint with no success since the delivery was queued is
//!   disabled, announced by a `webhook_endpoint.disabled` event.
//! - Every write is conditional on the worker's lease, so two workers (two daemons on PostgreSQL)
//!   never record the same attempt twice, and a worker that stalled past its lease writes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use depositd_core::config::WebhookSettings;
use depositd_core::metrics::Metrics;
use depositd_core::store::webhooks::{self, Attempt, CallbackSecret, Claimed, Outcome};
use depositd_core::store::{Store, StoreError};
use depositd_core::time::now_ms;
use depositd_core::wallet::HdWallet;
use depositd_core::webhooks::{SecretBox, generate_secret, signature_header};
use rand::Rng;
use secrecy::SecretString;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::ssrf::{self, GuardedResolver};

/// How long a claim lasts: well beyond one attempt's timeout.
const LEASE_MARGIN_MS: i64 = 45_000;
/// How many deliveries one tick claims per delivery slot (`webhooks.concurrency` destinations are
/// sent to at once): a burst to one endpoint goes out in order within one tick.
const CLAIMS_PER_SLOT: u32 = 4;
/// How much of a receiver's answer is kept with the attempt.
const RESPONSE_BODY_LIMIT: usize = 1024;

/// Delivers webhooks. Cheap to clone; one per daemon runs [`Deliverer::run`].
#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    client: reqwest::Client,
    secrets: SecretBox,
    settings: Arc<WebhookSettings>,
    metrics: Metrics,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer").finish_non_exhaustive()
    }
}

/// How one HTTP attempt went.
struct Sent {
    attempt: Attempt,
    /// The metric label: succeeded, http_error, network_error, refused, gone, error.
    result: &'static str,
    status: Option<u16>,
}

impl Sent {
    /// An attempt that got no HTTP answer.
    fn failed(attempted_at: i64, started: Instant, result: &'static str, error: String) -> Sent {
        Sent {
            attempt: Attempt {
                attempted_at,
                status_code: None,
                latency_ms: started.elapsed().as_millis() as i64,
                response_body: None,
                error: Some(error),
            },
            result,
            status: None,
        }
    }
}

impl Deliverer {
    pub fn new(store: Store, wallet: &HdWallet, settings: WebhookSettings, metrics: Metrics) -> Deliverer {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(settings.request_timeout_secs))
            .dns_resolver(Arc::new(GuardedResolver { allow_internal: settings.allow_private_targets }))
            .user_agent(concat!("depositd-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the webhook HTTP client builds");
        Deliverer {
            store,
            client,
            secrets: SecretBox::new(wallet.webhook_secrets_key()),
            settings: Arc::new(settings),
            metrics,
        }
    }

    /// The sealer endpoint secrets are stored with (the API seals new ones with it).
    pub fn secret_box(&self) -> &SecretBox {
        &self.secrets
    }

    /// Delivers until `shutdown`; deliveries in flight finish first.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StoreError> {
        let idle = Duration::from_millis(self.settings.poll_interval_ms);
        loop {
            let handled = match self.tick().await {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(error = %error, "webhook queue unavailable; retrying");
                    0
                }
            };
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if handled == 0 {
                // Woken at once by a commit in this process that queued deliveries; the poll
                // finds those queued by other daemons and retries falling due.
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(idle) => {}
                    _ = self.store.deliveries_queued() => {}
                }
            }
        }
    }

    /// Claims one batch of due deliveries and delivers them, destinations concurrently and each
    /// destination's in order; returns how many were claimed.
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let lease_ms = (self.settings.request_timeout_secs as i64) * 1000 + LEASE_MARGIN_MS;
        // Taken before the claim, so the budget below never outlasts the lease it takes.
        let claimed_at = Instant::now();
        let mut tx = self.store.begin().await?;
        let claimed =
            webhooks::claim_due(&mut tx, lease_ms, self.settings.concurrency.saturating_mul(CLAIMS_PER_SLOT)).await?;
        tx.commit().await?;
        let count = claimed.len();
        // Each destination gets its deliveries one after another, the oldest event first (ids are
        // time-ordered), in one task: a destination gets its events in order and only a retry
        // overtakes a later one, while a wave of events to one endpoint goes out in one tick
        // instead of one tick each. A delivery is started only while the claim's lease still
        // covers a whole attempt; after a failed attempt, or past that point, the rest are
        // released for the next tick, which follows at once.
        let mut by_destination: BTreeMap<(Option<uuid::Uuid>, String), Vec<Claimed>> = BTreeMap::new();
        for delivery in claimed {
            let url = if delivery.endpoint_id.is_some() { String::new() } else { delivery.url.clone() };
            by_destination.entry((delivery.endpoint_id, url)).or_default().push(delivery);
        }
        let slots = Arc::new(Semaphore::new(self.settings.concurrency as usize));
        let mut running = JoinSet::new();
        for (_, mut queue) in by_destination {
            queue.sort_by_key(|d| d.id);
            let (this, slots) = (self.clone(), slots.clone());
            running.spawn(async move { this.deliver_in_order(queue, claimed_at, slots).await });
        }
        while running.join_next().await.is_some() {}
        self.update_queue_metrics().await;
        Ok(count)
    }

    /// One destination's claimed deliveries, in order, each started only while the claim's lease
    /// still covers a whole attempt; stops at the first attempt that did not succeed and releases
    /// the rest (the next tick claims them again, the failed one first if it is due).
    async fn deliver_in_order(&self, queue: Vec<Claimed>, claimed_at: Instant, slots: Arc<Semaphore>) {
        let budget = Duration::from_millis(LEASE_MARGIN_MS as u64 / 2);
        let _slot = slots.acquire_owned().await;
        let mut queue = queue.into_iter().peekable();
        while queue.peek().is_some() && claimed_at.elapsed() < budget {
            let Some(next) = queue.next() else { break };
            let go_on = match self.deliver(&next).await {
                Ok(go_on) => go_on,
                Err(error) => {
                    // The lease runs out and the delivery is claimed again: nothing is lost.
                    tracing::warn!(delivery_id = %next.id, error = %error, "could not record a webhook attempt");
                    false
                }
            };
            if !go_on {
                break;
            }
        }
        let rest: Vec<Claimed> = queue.collect();
        if rest.is_empty() {
            return;
        }
        // Best effort: a release that fails leaves the lease to run out, and the deliveries are
        // claimed again then.
        if let Ok(mut conn) = self.store.conn().await {
            for later in &rest {
                if webhooks::release(&mut conn, later).await.is_err() {
                    break;
                }
            }
        }
    }

    async fn update_queue_metrics(&self) {
        let Ok(mut conn) = self.store.conn().await else { return };
        if let Ok((depth, oldest)) = webhooks::queue_stats(&mut conn).await {
            self.metrics.webhook_queue_depth.set(depth);
            let age = oldest.map(|t| (now_ms() - t).max(0) / 1000).unwrap_or(0);
            self.metrics.webhook_oldest_pending_age_seconds.set(age);
        }
    }

    /// One attempt at one delivery, recorded; true when the destination's next delivery may follow
    /// at once (this one succeeded, or its endpoint is gone and nothing was sent).
    async fn deliver(&self, claimed: &Claimed) -> Result<bool, StoreError> {
        let mut conn = self.store.conn().await?;
        let endpoint = match claimed.endpoint_id {
            Some(id) => match webhooks::endpoint_by_id(&mut conn, id).await? {
                Some(endpoint) if endpoint.enabled => Some(endpoint),
                _ => {
                    drop(conn);
                    let attempt = Attempt {
                        attempted_at: now_ms(),
                        status_code: None,
                        latency_ms: 0,
                        response_body: None,
                        error: Some("the endpoint was disabled or deleted".into()),
                    };
                    let mut tx = self.store.begin().await?;
                    webhooks::finish_attempt(&mut tx, claimed, &attempt, Outcome::Failed).await?;
                    tx.commit().await?;
                    // Nothing was sent; the destination's later deliveries end the same way.
                    return Ok(true);
                }
            },
            None => None,
        };
        // A secret that cannot be opened (the mnemonic changed) is a failed attempt like any other:
        // recorded, retried on the schedule, never a silent loop.
        let secrets = match &endpoint {
            Some(e) => self.signing_secrets(
                &e.secret_sealed,
                e.previous_secret_sealed.as_deref(),
                e.previous_secret_expires_at,
            ),
            None => {
                let secret = self.callback_secret(&mut conn, claimed.merchant_id).await?;
                self.signing_secrets(&secret.sealed, secret.previous_sealed.as_deref(), secret.previous_expires_at)
            }
        };
        drop(conn);
        // An endpoint's deliveries go to its URL as it is now, not as it was when queued.
        let url = endpoint.as_ref().map_or(claimed.url.as_str(), |e| e.url.as_str());
        let sent = match secrets {
            Ok(secrets) => self.send(claimed, url, &secrets).await,
            Err(error) => Sent::failed(now_ms(), Instant::now(), "error", error.to_string()),
        };
        self.metrics.webhook_attempts_total.with_label_values(&[sent.result]).inc();
        self.metrics.webhook_attempt_duration_seconds.observe(sent.attempt.latency_ms as f64 / 1000.0);

        let schedule = &self.settings.retry_schedule_secs;
        let gone = sent.status == Some(410);
        let outcome = if sent.result == "succeeded" {
            Outcome::Succeeded
        } else if gone {
            Outcome::Failed
        } else if let Some(delay) = schedule.get(claimed.attempt_count as usize) {
            let jitter = rand::rng().random_range(0.9..=1.1);
            Outcome::RetryAt(now_ms() + (*delay as f64 * 1000.0 * jitter) as i64)
        } else {
            Outcome::Failed
        };
        let mut tx = self.store.begin().await?;
        if !webhooks::finish_attempt(&mut tx, claimed, &sent.attempt, outcome).await? {
            tracing::warn!(delivery_id = %claimed.id, "lost the lease on a webhook delivery; its attempt is not recorded");
            return Ok(false);
        }
        if let (Some(endpoint), Outcome::Failed) = (&endpoint, outcome) {
            let failing = endpoint.last_success_at.is_none_or(|t| t < claimed.created_at);
            let reason = if gone {
                Some(("gone", "the endpoint answered 410 Gone".to_owned()))
            } else if failing {
                Some(("failing", format!("every delivery attempt failed for {} retries", schedule.len())))
            } else {
                None
            };
            if let Some((label, reason)) = reason
                && webhooks::disable_endpoint(&mut tx, endpoint.id, &reason).await?
            {
                self.metrics.webhook_endpoints_disabled_total.with_label_values(&[label]).inc();
                let resource = serde_json::json!({
                    "object": "webhook_endpoint", "id": endpoint.id, "url": endpoint.url,
                    "status": "disabled", "disabled_reason": reason,
                });
                depositd_core::outbox::record(
                    &mut tx,
                    endpoint.merchant_id,
                    depositd_core::outbox::EventType::WebhookEndpointDisabled,
                    depositd_core::outbox::Subject::new("webhook_endpoint", endpoint.id),
                    &resource,
                )
                .await?;
                tracing::warn!(endpoint_id = %endpoint.id, %reason, "webhook endpoint disabled");
            }
        }
        tx.commit().await?;
        Ok(outcome == Outcome::Succeeded)
    }

    /// The secrets a delivery is signed with: the current one, and the previous one during its
    /// grace period.
    fn signing_secrets(
        &self,
        sealed: &str,
        previous: Option<&str>,
        previous_expires_at: Option<i64>,
    ) -> Result<Vec<SecretString>, StoreError> {
        let open = |s: &str| self.secrets.open(s).map_err(|e| StoreError::Corrupt(e.to_string()));
        let mut secrets = vec![open(sealed)?];
        if let (Some(previous), Some(until)) = (previous, previous_expires_at)
            && until > now_ms()
        {
            secrets.push(open(previous)?);
        }
        Ok(secrets)
    }

    /// The merchant's callback secret, created on first use (the merchant learns it by rotating).
    async fn callback_secret(
        &self,
        conn: &mut depositd_core::store::Conn,
        merchant_id: uuid::Uuid,
    ) -> Result<CallbackSecret, StoreError> {
        if let Some(secret) = webhooks::callback_secret(conn, merchant_id).await? {
            return Ok(secret);
        }
        let fresh = CallbackSecret {
            sealed: self.secrets.seal(&generate_secret()),
            previous_sealed: None,
            previous_expires_at: None,
        };
        webhooks::put_callback_secret(conn, merchant_id, &fresh, true).await?;
        webhooks::callback_secret(conn, merchant_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the callback secret vanished".into()))
    }

    /// The HTTP attempt itself; never an error, always an [`Attempt`] to record.
    async fn send(&self, claimed: &Claimed, url: &str, secrets: &[SecretString]) -> Sent {
        let attempted_at = now_ms();
        let started = Instant::now();
        let failed = |result: &'static str, error: String| Sent::failed(attempted_at, started, result, error);
        let url = match url::Url::parse(url) {
            Ok(url) => url,
            Err(e) => return failed("refused", format!("invalid URL: {e}")),
        };
        if let Err(refused) = ssrf::check_url(&url, self.settings.allow_http, self.settings.allow_private_targets) {
            return failed("refused", format!("refused: {refused}"));
        }
        let timestamp = now_ms().div_euclid(1000);
        let id = claimed.event_id.to_string();
        let signature = match signature_header(secrets, &id, timestamp, &claimed.payload) {
            Ok(signature) => signature,
            Err(e) => return failed("refused", e.to_string()),
        };
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(claimed.payload.clone());
        match request.send().await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let mut body = Vec::new();
                while body.len() < RESPONSE_BODY_LIMIT {
                    match response.chunk().await {
                        Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                body.truncate(RESPONSE_BODY_LIMIT);
                let success = (200..300).contains(&status);
                Sent {
                    attempt: Attempt {
                        attempted_at,
                        status_code: Some(status),
                        latency_ms: started.elapsed().as_millis() as i64,
                        response_body: Some(String::from_utf8_lossy(&body).into_owned()),
                        error: (!success).then(|| format!("the endpoint answered {status}")),
                    },
                    result: if success {
                        "succeeded"
                    } else if status == 410 {
                        "gone"
                    } else {
                        "http_error"
                    },
                    status: Some(status),
                }
            }
            Err(error) => {
                // The chain of causes says why (refused by the guard, timed out, connection refused).
                let mut message = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                let result =
                    if message.contains("webhooks only go to public addresses") { "refused" } else { "network_error" };
                failed(result, message)
            }
        }
    }
}
