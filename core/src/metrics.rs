//! Prometheus metrics: one registry per process, typed handles for each component, and the text
//! exposition served at `GET /metrics`. Label values are bounded sets (chain names, asset
//! symbols, fixed state and reason words): never invoice ids or addresses.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Why a transfer was recorded as rejected, as a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    WrongAsset,
    WrongChain,
    Unowned,
    Undecodable,
    Disabled,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::WrongAsset => "wrong_asset",
            RejectReason::WrongChain => "wrong_chain",
            RejectReason::Unowned => "unowned_address",
            RejectReason::Undecodable => "undecodable_value",
            RejectReason::Disabled => "static_address_disabled",
        }
    }
}

/// Every metric the daemon exports. Cheap to clone (handles share their storage).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Latest block number the node reports, per chain.
    pub chain_head_block: IntGaugeVec,
    /// Last block whose deposits are fully recorded, per chain.
    pub chain_processed_block: IntGaugeVec,
    /// Blocks per `eth_getLogs` step right now (shrinks when a provider objects).
    pub chain_getlogs_range: IntGaugeVec,
    /// Deposits by chain, asset and the state they entered: detected, confirmed, reorged,
    /// reversed (alert: a credited payment was taken away), rejected.
    pub deposits_total: IntCounterVec,
    /// Rejected transfers by reason (alert: money arrived that nothing credits).
    pub deposits_rejected_total: IntCounterVec,
    /// Chain reorganisations unwound, and the deepest seen (blocks).
    pub chain_reorgs_total: IntCounterVec,
    pub chain_reorg_depth_max: IntGaugeVec,
    /// RPC failovers from one endpoint to the next.
    pub rpc_failovers_total: IntCounterVec,
    /// RPC calls by chain, endpoint (its position in the chain file's list: URLs can carry API
    /// keys, so they are never labels), method and result (ok, error, timeout).
    pub rpc_requests_total: IntCounterVec,
    pub rpc_request_duration_seconds: HistogramVec,
    /// Blocks and `Transfer` logs the watcher has scanned.
    pub chain_blocks_scanned_total: IntCounterVec,
    pub chain_logs_scanned_total: IntCounterVec,
    pub chain_logs_rechecked_blocks_total: IntCounterVec,
    /// How far the watcher's last processed block is behind the head, in blocks and in seconds
    /// (now less that block's timestamp).
    pub chain_lag_blocks: IntGaugeVec,
    pub chain_lag_seconds: IntGaugeVec,
    /// From a deposit's block timestamp to its detection.
    pub deposit_detection_seconds: HistogramVec,
    /// From the block that gave a deposit its last confirmation to its credit (the invoice's
    /// `invoice.paid` event is written in the same transaction).
    pub deposit_confirmation_to_credit_seconds: HistogramVec,
    /// Invoices by status (counted when /metrics is scraped).
    pub invoices_by_status: IntGaugeVec,
    /// API requests by route template (never the concrete path), method and status.
    pub api_requests_total: IntCounterVec,
    pub api_request_duration_seconds: HistogramVec,
    /// Requests refused by a rate limit, by route template.
    pub api_rate_limited_total: IntCounterVec,
    /// Invoices created, by chain and pay asset.
    pub invoices_created_total: IntCounterVec,
    /// 1 when the last ledger reconciliation found nothing wrong, 0 when it found problems
    /// (alert), -1 before the first run or when it could not run.
    pub ledger_verify_ok: IntGauge,
    /// Problems the last reconciliation found.
    pub ledger_verify_problems: IntGauge,
    /// When the last reconciliation finished (epoch seconds).
    pub ledger_verify_timestamp_seconds: IntGauge,
    /// Per chain and asset: what the deposit addresses held beyond what the ledger, the
    /// transactions in flight and the rejected transfers explain, at the last reconciliation, in
    /// whole units (monitoring only; the check itself is exact).
    pub ledger_unexplained_balance: GaugeVec,
    /// Per chain and asset: deposit addresses the last reconciliation named for holding
    /// unexplained money (0 while the total is within the dust allowance). Alert: a missed deposit.
    pub ledger_unexplained_addresses: IntGaugeVec,
    /// Deposits a reorg took away after their money had left the deposit address (swept,
    /// forwarded), by chain and asset: each posted a loss to the platform's `reorg_loss` (alert).
    pub reorg_losses_total: IntCounterVec,
    /// Per chain and asset: the platform's `reorg_loss` balance at the last reconciliation, in
    /// whole units (monitoring only; the ledger is exact). Warning while above zero (the
    /// critical alert is on the counter's increase).
    pub ledger_reorg_loss: GaugeVec,
    /// Per chain and asset: by how much what the chain holds (deposit addresses and the
    /// treasury) falls short of what the ledger owes merchants, at the last reconciliation that
    /// read the chain, in whole units (0 when solvent). Alert: the platform cannot pay everyone.
    pub ledger_solvency_shortfall: GaugeVec,
    /// Webhook delivery attempts by result: succeeded, http_error, network_error, refused (SSRF
    /// guard), gone (410).
    pub webhook_attempts_total: IntCounterVec,
    pub webhook_attempt_duration_seconds: Histogram,
    /// Deliveries waiting (due or not), and how long the oldest has waited (alert: stuck).
    pub webhook_queue_depth: IntGauge,
    pub webhook_oldest_pending_age_seconds: IntGauge,
    /// Endpoints disabled, by reason: gone (410) or failing (retries exhausted).
    pub webhook_endpoints_disabled_total: IntCounterVec,
    /// Outgoing transactions that reached a final state, by chain, purpose (payout, refund, sweep,
    /// gas_topup, passthrough) and state (confirmed, failed).
    pub settler_transactions_total: IntCounterVec,
    /// Replacements of transactions not mined in time.
    pub settler_fee_bumps_total: IntCounterVec,
    /// Transactions not mined that cannot be bumped further (at their budget or the fee cap).
    pub settler_stuck_transactions: IntGaugeVec,
    /// Transactions planned longer ago than `settler.stall_alert_secs` and still not mined, by
    /// why (alert).
    pub settler_stalled_transactions: IntGaugeVec,
    /// Intents waiting because the ledger's hot wallet cannot cover them (alert: fund the
    /// treasury, `depositd treasury fund`).
    pub settler_waiting_for_funds: IntGaugeVec,
    /// Nonces the chain shows used by transactions depositd did not sign, per chain (alert).
    pub settler_nonce_drift: IntGaugeVec,
    /// Signers paused until an operator has looked (alert).
    pub settler_signers_paused: IntGaugeVec,
    /// The treasury's native-coin balance on chain, in whole units (monitoring only; the ledger
    /// counts in exact base units). Alert when it runs low: sweeps and payouts need gas.
    pub hot_wallet_balance: GaugeVec,
    /// 1 while this process holds the named lease (`watcher:<chain>`, `settler:<chain>`), else 0.
    pub lease_held: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
            registry.register(Box::new(metric.clone())).expect("metric names are unique");
            metric
        }
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        Metrics {
            chain_head_block: gauge(
                "depositd_chain_head_block",
                "Latest block number reported by the node.",
                &["chain"],
            ),
            chain_processed_block: gauge(
                "depositd_chain_processed_block",
                "Last block whose deposits are fully recorded.",
                &["chain"],
            ),
            chain_getlogs_range: gauge("depositd_chain_getlogs_range", "Blocks per eth_getLogs step.", &["chain"]),
            deposits_total: counter(
                "depositd_deposits_total",
                "Deposits by the state they entered.",
                &["chain", "asset", "state"],
            ),
            deposits_rejected_total: counter(
                "depositd_deposits_rejected_total",
                "Transfers to watched addresses recorded but not credited, by reason.",
                &["chain", "reason"],
            ),
            chain_reorgs_total: counter("depositd_chain_reorgs_total", "Chain reorganisations unwound.", &["chain"]),
            chain_reorg_depth_max: gauge(
                "depositd_chain_reorg_depth_max",
                "Deepest reorganisation seen, in blocks.",
                &["chain"],
            ),
            rpc_failovers_total: counter(
                "depositd_rpc_failovers_total",
                "RPC failovers to the next endpoint.",
                &["chain"],
            ),
            rpc_requests_total: counter(
                "depositd_rpc_requests_total",
                "RPC calls by chain, endpoint position, method and result.",
                &["chain", "endpoint", "method", "result"],
            ),
            rpc_request_duration_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("depositd_rpc_request_duration_seconds", "RPC call latency.")
                        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                    &["chain", "endpoint", "method"],
                )
                .expect("valid metric"),
            ),
            chain_blocks_scanned_total: counter(
                "depositd_chain_blocks_scanned_total",
                "Blocks the watcher has scanned.",
                &["chain"],
            ),
            chain_logs_scanned_total: counter(
                "depositd_chain_logs_scanned_total",
                "Transfer logs of allow-listed tokens the watcher has scanned.",
                &["chain"],
            ),
            chain_logs_rechecked_blocks_total: counter(
                "depositd_chain_logs_rechecked_blocks_total",
                "Blocks whose logsBloom promised a watched Transfer that the range's eth_getLogs answer lacked, \
                 asked again by block hash (a lagging node, or a bloom false positive).",
                &["chain"],
            ),
            chain_lag_blocks: gauge(
                "depositd_chain_lag_blocks",
                "Blocks between the head and the last processed block.",
                &["chain"],
            ),
            chain_lag_seconds: gauge(
                "depositd_chain_lag_seconds",
                "Seconds since the last processed block's timestamp.",
                &["chain"],
            ),
            deposit_detection_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "depositd_deposit_detection_seconds",
                        "From a deposit's block timestamp to its detection.",
                    )
                    .buckets(vec![0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0]),
                    &["chain"],
                )
                .expect("valid metric"),
            ),
            deposit_confirmation_to_credit_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "depositd_deposit_confirmation_to_credit_seconds",
                        "From the confirming block's timestamp to the deposit's credit and invoice.paid event.",
                    )
                    .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
                    &["chain"],
                )
                .expect("valid metric"),
            ),
            invoices_by_status: gauge("depositd_invoices", "Invoices by status.", &["status"]),
            api_requests_total: counter(
                "depositd_api_requests_total",
                "API requests by route template, method and status.",
                &["route", "method", "status"],
            ),
            api_request_duration_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "depositd_api_request_duration_seconds",
                        "API request latency by route template.",
                    )
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                    &["route"],
                )
                .expect("valid metric"),
            ),
            api_rate_limited_total: counter(
                "depositd_api_rate_limited_total",
                "Requests refused by a rate limit.",
                &["route"],
            ),
            invoices_created_total: counter(
                "depositd_invoices_created_total",
                "Invoices created.",
                &["chain", "asset"],
            ),
            ledger_verify_ok: {
                let gauge = register(
                    &registry,
                    IntGauge::new(
                        "depositd_ledger_verify_ok",
                        "1 when the last ledger reconciliation passed, 0 when it found problems, -1 before it ran.",
                    )
                    .expect("valid metric"),
                );
                gauge.set(-1);
                gauge
            },
            ledger_verify_problems: register(
                &registry,
                IntGauge::new("depositd_ledger_verify_problems", "Problems found by the last ledger reconciliation.")
                    .expect("valid metric"),
            ),
            ledger_verify_timestamp_seconds: register(
                &registry,
                IntGauge::new(
                    "depositd_ledger_verify_timestamp_seconds",
                    "When the last ledger reconciliation finished (epoch seconds).",
                )
                .expect("valid metric"),
            ),
            ledger_unexplained_balance: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "depositd_ledger_unexplained_balance",
                        "What deposit addresses hold beyond what the ledger explains, in whole units of the asset.",
                    ),
                    &["chain", "asset"],
                )
                .expect("valid metric"),
            ),
            ledger_unexplained_addresses: gauge(
                "depositd_ledger_unexplained_addresses",
                "Deposit addresses holding money the ledger does not explain, beyond the dust allowance.",
                &["chain", "asset"],
            ),
            reorg_losses_total: counter(
                "depositd_reorg_losses_total",
                "Deposits a reorg took away after their money had left the deposit address (posted to reorg_loss).",
                &["chain", "asset"],
            ),
            ledger_reorg_loss: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "depositd_ledger_reorg_loss",
                        "The platform's reorg_loss balance at the last reconciliation, in whole units of the asset.",
                    ),
                    &["chain", "asset"],
                )
                .expect("valid metric"),
            ),
            ledger_solvency_shortfall: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "depositd_ledger_solvency_shortfall",
                        "How far on-chain holdings fall short of what the ledger owes merchants, in whole units.",
                    ),
                    &["chain", "asset"],
                )
                .expect("valid metric"),
            ),
            webhook_attempts_total: counter(
                "depositd_webhook_attempts_total",
                "Webhook delivery attempts by result.",
                &["result"],
            ),
            webhook_attempt_duration_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "depositd_webhook_attempt_duration_seconds",
                        "Webhook delivery attempt latency.",
                    )
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0]),
                )
                .expect("valid metric"),
            ),
            webhook_queue_depth: register(
                &registry,
                IntGauge::new("depositd_webhook_queue_depth", "Webhook deliveries waiting to be sent.")
                    .expect("valid metric"),
            ),
            webhook_oldest_pending_age_seconds: register(
                &registry,
                IntGauge::new(
                    "depositd_webhook_oldest_pending_age_seconds",
                    "Age of the oldest undelivered webhook, in seconds (0 when none waits).",
                )
                .expect("valid metric"),
            ),
            webhook_endpoints_disabled_total: counter(
                "depositd_webhook_endpoints_disabled_total",
                "Webhook endpoints disabled by depositd, by reason.",
                &["reason"],
            ),
            settler_transactions_total: counter(
                "depositd_settler_transactions_total",
                "Outgoing transactions that reached a final state, by purpose and state.",
                &["chain", "purpose", "state"],
            ),
            settler_fee_bumps_total: counter(
                "depositd_settler_fee_bumps_total",
                "Transactions replaced with higher fees.",
                &["chain"],
            ),
            settler_stuck_transactions: gauge(
                "depositd_settler_stuck_transactions",
                "Unmined transactions that cannot be bumped further.",
                &["chain"],
            ),
            settler_stalled_transactions: gauge(
                "depositd_settler_stalled_transactions",
                "Transactions planned more than settler.stall_alert_secs ago and not mined yet, by reason.",
                &["chain", "reason"],
            ),
            settler_waiting_for_funds: gauge(
                "depositd_settler_waiting_for_funds",
                "Transactions waiting for the hot wallet's ledger balance to cover them.",
                &["chain"],
            ),
            settler_nonce_drift: gauge(
                "depositd_settler_nonce_drift",
                "Nonces used on chain by transactions depositd did not sign.",
                &["chain"],
            ),
            settler_signers_paused: gauge(
                "depositd_settler_signers_paused",
                "Signers paused after an outside transaction used their nonce.",
                &["chain"],
            ),
            hot_wallet_balance: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "depositd_hot_wallet_balance",
                        "The treasury's balance on chain, in whole units of the asset.",
                    ),
                    &["chain", "asset"],
                )
                .expect("valid metric"),
            ),
            lease_held: gauge(
                "depositd_lease_held",
                "1 while this process holds the lease (one watcher and one settler per chain).",
                &["lease"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}
