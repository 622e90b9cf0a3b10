//! One chain's watcher: scan, record, confirm, unwind reorgs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::consensus::Transaction as _;
use alloy::network::TransactionResponse as _;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Block, BlockNumberOrTag, Filter, Log};
use alloy::sol_types::SolEvent;
use depositd_core::config::ChainConfig;
use depositd_core::crediting::{self, Context};
use depositd_core::deposit::{Deposit, DepositState};
use depositd_core::deposit_address::AddressPurpose;
use depositd_core::invoice::SessionSigner;
use depositd_core::leased::{LeasedLoop, LeasedWork};
use depositd_core::metrics::{Metrics, RejectReason};
use depositd_core::money::BaseUnits;
use depositd_core::store::blocks::{self, BlockRef};
use depositd_core::store::chain_txs;
use depositd_core::store::cursors::{self, ChainCursor};
use depositd_core::store::deposit_addresses;
use depositd_core::store::deposits::{self, Recorded};
use depositd_core::store::leases::Lease;
use depositd_core::store::{Store, StoreError, invoices, static_addresses};
use depositd_core::time::now_ms;
use depositd_rpc::{ChainRpc, Policy, RpcError};
use futures::future::{BoxFuture, FutureExt as _};
use futures::stream::{self, StreamExt as _, TryStreamExt as _};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::watched::WatchedSet;

alloy::sol! {
    /// ERC-20 `Transfer`; only its topic0 is used, matching happens on the raw topics.
    event Transfer(address indexed from, address indexed to, uint256 value);
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Rpc(RpcError),
    /// [`RpcError::RangeTooLarge`], lifted out: the step shrinks its range.
    #[error("the provider refused the eth_getLogs block range as too large")]
    RangeTooLarge { suggested: Option<u64> },
    #[error("the node returned inconsistent data: {0}")]
    Inconsistent(String),
    /// A request the watcher will not carry out (a rescan of blocks it has not verified).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RpcError> for WatchError {
    fn from(error: RpcError) -> WatchError {
        match error {
            RpcError::RangeTooLarge { suggested } => WatchError::RangeTooLarge { suggested },
            other => WatchError::Rpc(other),
        }
    }
}

/// What [`ChainWatcher::rescan`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rescanned {
    /// Blocks scanned.
    pub blocks: u64,
    /// Transfers to watched addresses found in them.
    pub transfers: u64,
    /// Of those, the ones not recorded before (recorded now).
    pub recorded: u64,
}

/// A range's blocks (all of them, or the few a token-only final range needs) and its logs.
type Fetched = (Vec<Block>, Vec<Log>);

/// A transfer to a watched address, found in a verified block.
#[derive(Debug, Clone)]
struct Found {
    tx_hash: B256,
    log_index: i64,
    block_number: u64,
    block_hash: B256,
    from: Address,
    to: Address,
    token: Option<Address>,
    amount: Result<BaseUnits, String>,
}

pub struct ChainWatcher {
    chain: ChainConfig,
    store: Store,
    rpc: ChainRpc,
    /// Blocks per step: starts at `max_block_range`, shrinks when a provider objects, grows back.
    range: u64,
    /// Steps in a row that succeeded at the current range.
    successes: u32,
    /// Calls per JSON-RPC batch that this chain's provider takes: starts at
    /// [`crate::batch::MAX_BATCH`], halved (down to single calls) whenever a batch fails as a
    /// whole, and kept for the process.
    batch_size: std::sync::atomic::AtomicUsize,
    watched: WatchedSet,
    public_url: String,
    sessions: SessionSigner,
    metrics: Metrics,
    lease: Option<Lease>,
    /// Timestamps of the blocks the last step scanned (for the confirmation latency metric).
    recent_timestamps: HashMap<u64, u64>,
}

impl ChainWatcher {
    pub fn new(
        chain: ChainConfig,
        store: Store,
        public_url: String,
        sessions: SessionSigner,
        metrics: Metrics,
    ) -> Result<ChainWatcher, WatchError> {
        let rpc =
            ChainRpc::new(&chain, metrics.clone())?.with_policy(Policy { range_errors: true, ..Policy::default() });
        let range = chain.max_block_range.max(1);
        Ok(ChainWatcher {
            chain,
            store,
            rpc,
            range,
            successes: 0,
            batch_size: std::sync::atomic::AtomicUsize::new(crate::batch::MAX_BATCH),
            watched: WatchedSet::default(),
            public_url,
            sessions,
            metrics,
            lease: None,
            recent_timestamps: HashMap::new(),
        })
    }

    /// Runs until `shutdown`. Errors are logged and retried after the poll interval: the cursor
    /// only moves past verified, fully recorded blocks, so a retry redoes exactly what is missing.
    /// While blocks are waiting (a backfill) steps follow each other without a pause.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), WatchError> {
        tracing::info!(chain = %self.chain.name, chain_id = self.chain.chain_id, "watcher started");
        let wake = Arc::new(Notify::new());
        if let Some(ws_url) = self.chain.ws_url.clone() {
            tokio::spawn(crate::heads::follow(self.chain.name.clone(), ws_url, wake.clone(), shutdown.clone()));
        }
        let leased = LeasedLoop {
            component: "watcher",
            chain: self.chain.name.clone(),
            lease: self.lease.clone(),
            poll: Duration::from_millis(self.chain.poll_interval_ms),
            wake: Some(wake),
            metrics: self.metrics.clone(),
        };
        leased.run(&mut self, shutdown).await;
        Ok(())
    }

    /// Loads the watched set `page_size` addresses per query (default
    /// [`crate::watched::DEFAULT_PAGE_SIZE`]).
    pub fn with_watched_page_size(mut self, page_size: u32) -> ChainWatcher {
        self.watched = WatchedSet::with_page_size(page_size);
        self
    }

    /// Runs only while holding `lease` (several daemons on one database: one watcher per chain).
    pub fn with_lease(mut self, lease: Lease) -> ChainWatcher {
        self.lease = Some(lease);
        self
    }

    fn ctx(&self) -> Context<'_> {
        Context { public_url: &self.public_url, sessions: &self.sessions }
    }

    /// One step: top up the watched set, unwind a reorg or scan the next range, confirm what is
    /// deep enough. Returns true when more blocks are waiting (backfill).
    pub async fn tick(&mut self) -> Result<bool, WatchError> {
        {
            let mut conn = self.store.conn().await?;
            let added = self.watched.refresh(&mut conn).await?;
            if added > 0 {
                tracing::debug!(chain = %self.chain.name, added, total = self.watched.len(), "watched addresses loaded");
            }
        }
        let head = self.rpc.call("eth_blockNumber", |p| async move { p.get_block_number().await }).await?;
        let chain_label = [self.chain.name.as_str()];
        self.metrics.chain_head_block.with_label_values(&chain_label).set(head as i64);
        self.metrics.chain_getlogs_range.with_label_values(&chain_label).set(self.range as i64);
        let cursor = {
            let mut conn = self.store.conn().await?;
            cursors::get(&mut conn, self.chain.chain_id).await?
        };
        let from = match &cursor {
            Some(c) => c.block_number + 1,
            None => self.chain.start_block.unwrap_or(head),
        };
        if from > head {
            self.confirm(head, cursor.as_ref().map(|c| c.block_number)).await?;
            return Ok(false);
        }
        if let Some(last_final) = self.last_final(head)
            && from <= last_final
        {
            return self.catch_up_final(head, cursor, from, last_final).await;
        }
        let to = head.min(from + self.range - 1);
        let (headers, logs) = match self.fetch_range(from, to).await {
            Ok(fetched) => fetched,
            Err(WatchError::RangeTooLarge { suggested }) => {
                self.shrink_range(suggested);
                return Ok(true);
            }
            Err(other) => return Err(other),
        };
        if let Some(cursor) = &cursor
            && headers[0].header.parent_hash.to_string() != cursor.block_hash
        {
            self.unwind_reorg(cursor).await?;
            return Ok(true);
        }
        let found = match self.scan(&headers, logs).await {
            Ok(found) => found,
            Err(WatchError::RangeTooLarge { suggested }) => {
                self.shrink_range(suggested);
                return Ok(true);
            }
            Err(other) => return Err(other),
        };
        self.record(&headers, &headers[headers.len() - 1], found).await?;
        self.recent_timestamps = headers.iter().map(|b| (b.header.number, b.header.timestamp)).collect();
        let last = &headers[headers.len() - 1];
        self.metrics.chain_blocks_scanned_total.with_label_values(&chain_label).inc_by(to - from + 1);
        self.metrics.chain_lag_blocks.with_label_values(&chain_label).set(head.saturating_sub(to) as i64);
        let age = (now_ms() / 1000).saturating_sub(last.header.timestamp as i64).max(0);
        self.metrics.chain_lag_seconds.with_label_values(&chain_label).set(age);
        self.successes += 1;
        if self.successes >= 5 && self.range < self.chain.max_block_range {
            self.range = (self.range * 2).min(self.chain.max_block_range);
            self.successes = 0;
        }
        self.confirm(head, Some(to)).await?;
        Ok(to < head)
    }

    /// The last block that is final for this watcher: `reorg_window` blocks below the head.
    /// Below it the chain is not expected to change (a reorg that deep is past what the watcher
    /// can unwind anyway), so a range there needs no per-block linkage.
    fn last_final(&self, head: u64) -> Option<u64> {
        head.checked_sub(self.reorg_window())
    }

    /// Catch-up over final blocks `from..=last_final`: up to [`Self::ranges_in_flight`] ranges
    /// fetched at once ([`Self::fetch_final`]), then scanned and recorded in order, each in its
    /// own transaction that moves the cursor. The first range's first block must build on the
    /// cursor's block (else the reorg is unwound, as near the head), and each next range's on the
    /// last block of the one before (else the node's answers do not hold together: refused).
    async fn catch_up_final(
        &mut self,
        head: u64,
        cursor: Option<ChainCursor>,
        from: u64,
        last_final: u64,
    ) -> Result<bool, WatchError> {
        let chain_label = [self.chain.name.as_str()];
        let mut ranges = Vec::new();
        let mut start = from;
        while start <= last_final && ranges.len() < self.ranges_in_flight() {
            let end = last_final.min(start + self.range - 1);
            ranges.push((start, end));
            start = end + 1;
        }
        let fetches: Vec<BoxFuture<'_, Result<Fetched, WatchError>>> =
            ranges.iter().map(|(from, to)| self.fetch_final(*from, *to).boxed()).collect();
        let fetched: Vec<Result<Fetched, WatchError>> =
            stream::iter(fetches).buffered(ranges.len().max(1)).collect().await;
        let mut anchor = cursor.map(|c| c.block_hash);
        let mut recorded_to = None;
        let mut outcome = Ok(());
        for (i, ((from, to), result)) in ranges.iter().zip(fetched).enumerate() {
            let step = async {
                let (blocks, logs) = result?;
                // The range's anchors by number, never by their place in `blocks`: the cursor
                // moves to block `to` and nowhere else.
                let anchor_at = |number: u64| {
                    blocks.iter().find(|b| b.header.number == number).ok_or_else(|| {
                        WatchError::Inconsistent(format!("block {number} is missing from its range's answer"))
                    })
                };
                let (first, last) = (anchor_at(*from)?, anchor_at(*to)?);
                if let Some(anchor) = &anchor
                    && first.header.parent_hash.to_string() != *anchor
                {
                    return Ok(None);
                }
                let found = self.scan(&blocks, logs).await?;
                self.record(&blocks, last, found).await?;
                Ok::<_, WatchError>(Some(last.header.hash.to_string()))
            };
            match step.await {
                Ok(Some(last_hash)) => anchor = Some(last_hash),
                Ok(None) if i == 0 => {
                    if let Some(cursor) = cursor_now(&self.store, self.chain.chain_id).await? {
                        self.unwind_reorg(&cursor).await?;
                    }
                    return Ok(true);
                }
                Ok(None) => {
                    outcome = Err(WatchError::Inconsistent(format!(
                        "block {from} does not follow block {} of the range before",
                        from - 1
                    )));
                    break;
                }
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
            recorded_to = Some(*to);
            self.metrics.chain_blocks_scanned_total.with_label_values(&chain_label).inc_by(to - from + 1);
            self.metrics.chain_lag_blocks.with_label_values(&chain_label).set(head.saturating_sub(*to) as i64);
        }
        self.recent_timestamps.clear();
        if let Some(to) = recorded_to {
            self.confirm(head, Some(to)).await?;
        }
        match outcome {
            Ok(()) => {
                self.successes += 1;
                if self.successes >= 5 && self.range < self.chain.max_block_range {
                    self.range = (self.range * 2).min(self.chain.max_block_range);
                    self.successes = 0;
                }
                Ok(recorded_to.is_some_and(|to| to < head))
            }
            Err(WatchError::RangeTooLarge { suggested }) => {
                self.shrink_range(suggested);
                Ok(true)
            }
            Err(other) => Err(other),
        }
    }

    /// Final ranges fetched at once during a catch-up. Token-only ranges are small (their logs
    /// and a few headers): half of `rpc_concurrency`, at most 4, each range's header batches
    /// sharing the rest. With native deposits on a range is all its blocks with their
    /// transactions, already `rpc_concurrency` batches in flight: one range at a time, so memory
    /// holds one range's blocks, as near the head.
    fn ranges_in_flight(&self) -> usize {
        if self.chain.native_deposits_on() { 1 } else { (self.concurrency() / 2).clamp(1, 4) }
    }

    /// A final range ([`Self::last_final`]) with what its deposits need. With native deposits
    /// on: every block with its transactions (batched, checked to form one chain) and the
    /// range's logs. Token deposits only: the range's logs and the headers of its first and last
    /// blocks in one batch ([`crate::batch::logs_and_anchors`]: the range is refused unless the
    /// node that answered the logs has its last block), then, batched, the headers of the blocks
    /// that hold a transfer to a watched address, whose hashes the logs must name
    /// ([`Self::scan`]). The blocks come back in order: the first, those, the last.
    async fn fetch_final(&self, from: u64, to: u64) -> Result<Fetched, WatchError> {
        if self.chain.native_deposits_on() {
            let numbers: Vec<u64> = (from..=to).collect();
            let (blocks, logs) = tokio::try_join!(self.fetch_batched(&numbers, true), self.fetch_logs(from, to))?;
            check_linked(from, &blocks)?;
            return Ok((blocks, logs));
        }
        let filter = self.logs_filter().map(|f| f.from_block(from).to_block(to));
        let (logs, first, last) = loop {
            let size = self.batch_size();
            let answer = if size >= 3 {
                crate::batch::logs_and_anchors(&self.rpc, filter.clone(), from, to).await
            } else {
                // No batches: the headers first, one by one, then the logs.
                crate::batch::logs_and_anchors_apart(&self.rpc, filter.clone(), from, to).await
            };
            match answer {
                Ok(answer) => break answer,
                Err(RpcError::RangeTooLarge { suggested }) => return Err(WatchError::RangeTooLarge { suggested }),
                Err(error) if size >= 3 => self.shrink_batch(size, &error),
                Err(error) => return Err(error.into()),
            }
        };
        check_logs_within(from, to, &logs)?;
        let (Some(first), Some(last)) = (first, last) else {
            return Err(WatchError::Inconsistent(format!(
                "the node that answered eth_getLogs for blocks {from}..={to} does not have block {to} (a lagging \
                 node): the range is refused"
            )));
        };
        if first.header.number != from || last.header.number != to {
            return Err(WatchError::Inconsistent(format!("the node did not return blocks {from} and {to} when asked")));
        }
        let holding: std::collections::BTreeSet<u64> = logs
            .iter()
            .filter(|log| self.pays_watched(log))
            .filter_map(|log| log.block_number)
            .filter(|number| *number > from && *number < to)
            .collect();
        let holding: Vec<u64> = holding.into_iter().collect();
        let middle = self.fetch_batched(&holding, false).await?;
        let mut blocks = Vec::with_capacity(middle.len() + 2);
        blocks.push(first);
        blocks.extend(middle);
        if to != from {
            blocks.push(last);
        }
        Ok((blocks, logs))
    }

    /// Blocks `numbers`, [`crate::batch::MAX_BATCH`] to a batch, the batches sent a few at a
    /// time; every one must be there.
    async fn fetch_batched(&self, numbers: &[u64], full: bool) -> Result<Vec<Block>, WatchError> {
        let in_flight = (self.concurrency() / self.ranges_in_flight()).max(1);
        // (With native deposits on that is `rpc_concurrency` batches of one range.)
        let answers: Vec<Vec<Option<Block>>> = loop {
            let size = self.batch_size();
            let batches: Vec<BoxFuture<'_, Result<Vec<Option<Block>>, RpcError>>> =
                numbers.chunks(size).map(|chunk| crate::batch::blocks(&self.rpc, chunk, full).boxed()).collect();
            match stream::iter(batches).buffered(in_flight).try_collect().await {
                Ok(answers) => break answers,
                Err(error) if size > 1 && numbers.len() > 1 => self.shrink_batch(size, &error),
                Err(error) => return Err(error.into()),
            }
        };
        let mut blocks = Vec::with_capacity(numbers.len());
        for (number, block) in numbers.iter().zip(answers.into_iter().flatten()) {
            match block {
                Some(block) if block.header.number == *number => blocks.push(block),
                _ => return Err(WatchError::Inconsistent(format!("block {number} is missing below the head"))),
            }
        }
        if blocks.len() != numbers.len() {
            return Err(WatchError::Inconsistent("a batch of blocks came back short".into()));
        }
        Ok(blocks)
    }

    /// Calls per batch for now (see the `batch_size` field).
    fn batch_size(&self) -> usize {
        self.batch_size.load(std::sync::atomic::Ordering::Relaxed).max(1)
    }

    /// A batch of `size` calls failed as a whole (after the RPC layer's retries): the provider
    /// may cap batches (a size limit, HTTP 413) or refuse them. Halved, down to single calls.
    fn shrink_batch(&self, size: usize, error: &RpcError) {
        let smaller = (size / 2).max(1);
        if self
            .batch_size
            .compare_exchange(size, smaller, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(chain = %self.chain.name, from = size, to = smaller, %error, "a JSON-RPC batch failed; smaller batches from now on");
        }
    }

    /// Whether `log` is a `Transfer` to a watched address (what [`Self::match_log`] looks at).
    fn pays_watched(&self, log: &Log) -> bool {
        let topics = log.topics();
        topics.len() == 3 && self.watched.contains(&Address::from_word(topics[2]))
    }

    /// Scans blocks `from..=to` again and records what the watcher missed there (an operator's
    /// repair, `depositd rescan`). Idempotent: a transfer recorded before stays recorded once
    /// (deposits are unique by transaction and log index), a missed one is recorded now, as
    /// detected (late, if its invoice expired meanwhile); the watcher's next step confirms it.
    /// Only blocks the watcher has already verified (at or below its cursor) can be rescanned,
    /// and each block must still be the one the watcher recorded where it kept its hash, or,
    /// within the reorg window where it kept none (a catch-up over final blocks keeps a few),
    /// an ancestor of a block whose kept hash still holds: a rescan never records from a block
    /// the chain may still take away unnoticed. The cursor and
    /// the stored block hashes are not touched.
    pub async fn rescan(&mut self, from: u64, to: u64) -> Result<Rescanned, WatchError> {
        if from > to {
            return Err(WatchError::Refused(format!("--from {from} is above --to {to}")));
        }
        let cursor = {
            let mut conn = self.store.conn().await?;
            self.watched.refresh(&mut conn).await?;
            cursors::get(&mut conn, self.chain.chain_id).await?
        };
        let Some(cursor) = cursor else {
            return Err(WatchError::Refused(format!(
                "the watcher has not scanned {} yet: nothing to rescan",
                self.chain.name
            )));
        };
        if to > cursor.block_number {
            return Err(WatchError::Refused(format!(
                "block {to} is above the watcher's cursor ({}): the watcher has not scanned it yet; rescan up to {} at most",
                cursor.block_number, cursor.block_number
            )));
        }
        let mut outcome = Rescanned::default();
        let mut start = from;
        while start <= to {
            let end = to.min(start + self.range - 1);
            let (headers, logs) = match self.fetch_range(start, end).await {
                Ok(fetched) => fetched,
                Err(WatchError::RangeTooLarge { suggested }) => {
                    self.shrink_range(suggested);
                    continue;
                }
                Err(other) => return Err(other),
            };
            // Within the reorg window a block the watcher kept no hash for (a catch-up over final
            // blocks keeps only a few) counts when it is an ancestor of a block whose hash the
            // watcher kept: a reorg that takes it away takes that block too, and the unwinding
            // reaches below it.
            let window_floor = cursor.block_number.saturating_sub(self.reorg_window());
            let mut link: Option<BlockRef> = None;
            let mut needs_link = false;
            {
                let mut conn = self.store.conn().await?;
                for block in &headers {
                    match blocks::get(&mut conn, self.chain.chain_id, block.header.number).await? {
                        Some(stored) if stored.hash != block.header.hash.to_string() => {
                            return Err(WatchError::Refused(format!(
                                "block {} is not the one the watcher recorded (a reorganisation the watcher has not \
                                 unwound yet): try again in a few blocks",
                                block.header.number
                            )));
                        }
                        Some(stored) if needs_link => (link, needs_link) = (Some(stored), false),
                        Some(_) => {}
                        None if block.header.number > window_floor => (link, needs_link) = (None, true),
                        None => {}
                    }
                }
                if needs_link {
                    link = blocks::lowest_above(&mut conn, self.chain.chain_id, end).await?;
                }
            }
            if needs_link && let Some(stored) = &link {
                let numbers: Vec<u64> = (end + 1..=stored.number).collect();
                let above = self.fetch_batched(&numbers, false).await?;
                let mut chain: Vec<Block> = vec![headers[headers.len() - 1].clone()];
                chain.extend(above);
                check_linked(end, &chain)?;
                if chain[chain.len() - 1].header.hash.to_string() != stored.hash {
                    return Err(WatchError::Refused(format!(
                        "block {} is not the one the watcher recorded (a reorganisation the watcher has not \
                         unwound yet): try again in a few blocks",
                        stored.number
                    )));
                }
            }
            let found = match self.scan(&headers, logs).await {
                Ok(found) => found,
                Err(WatchError::RangeTooLarge { suggested }) => {
                    self.shrink_range(suggested);
                    continue;
                }
                Err(other) => return Err(other),
            };
            outcome.blocks += headers.len() as u64;
            outcome.transfers += found.len() as u64;
            outcome.recorded += self.record_transfers(found, &headers, link.as_ref()).await?;
            start = end + 1;
        }
        Ok(outcome)
    }

    /// Records transfers found by a rescan (without moving the cursor); returns how many were
    /// new. The checks [`Self::rescan`] made before fetching are made again inside the recording
    /// transaction, with the cursor row locked, so a reorg the watcher unwinds meanwhile can never
    /// leave a deposit from an orphaned block behind: every block must be at or below the
    /// cursor, and within the stored-hash window its stored hash must be there and equal, or
    /// (none kept) `link`, the kept block it was found to lead up to, must still be kept.
    /// A deposit found late is dated by its block, so a payment made in time is not "late".
    async fn record_transfers(
        &self,
        found: Vec<Found>,
        blocks: &[Block],
        link: Option<&BlockRef>,
    ) -> Result<u64, WatchError> {
        let timestamps: HashMap<u64, u64> = blocks.iter().map(|b| (b.header.number, b.header.timestamp)).collect();
        let mut tx = self.store.begin().await?;
        let cursor = cursors::get_locked(&mut tx, self.chain.chain_id)
            .await?
            .ok_or_else(|| WatchError::Refused(format!("the watcher's cursor on {} vanished", self.chain.name)))?;
        let window_floor = cursor.block_number.saturating_sub(self.reorg_window());
        // The kept block the rescanned ones (those without a kept hash) lead up to, still kept.
        let link_holds = match link {
            Some(link) if link.number <= cursor.block_number => {
                blocks::get(&mut tx, self.chain.chain_id, link.number).await?.is_some_and(|s| s.hash == link.hash)
            }
            _ => false,
        };
        for block in blocks {
            let number = block.header.number;
            if number > cursor.block_number {
                return Err(WatchError::Refused(format!(
                    "block {number} is above the watcher's cursor ({}) now: a reorganisation was unwound meanwhile; \
                     try again",
                    cursor.block_number
                )));
            }
            let stored = blocks::get(&mut tx, self.chain.chain_id, number).await?;
            match stored {
                Some(stored) if stored.hash == block.header.hash.to_string() => {}
                None if number <= window_floor => {}
                None if link_holds => {}
                _ => {
                    return Err(WatchError::Refused(format!(
                        "block {number} is not the one the watcher recorded (a reorganisation the watcher has not \
                         unwound yet): try again in a few blocks"
                    )));
                }
            }
        }
        let mut recorded = 0;
        for transfer in found {
            if transfer.token.is_none() && chain_txs::is_gas_topup(&mut tx, &format!("{:#x}", transfer.tx_hash)).await?
            {
                continue;
            }
            let block_time = timestamps.get(&transfer.block_number).map(|secs| *secs as i64 * 1000);
            let (mut deposit, _) = self.to_deposit(&mut tx, transfer).await?;
            if let Some(at) = block_time {
                deposit.detected_at = at;
            }
            match deposits::record(&mut tx, &deposit).await? {
                Recorded::New(d) | Recorded::Revived(d) if d.state == DepositState::Detected => {
                    tracing::warn!(chain = %self.chain.name, tx_hash = %d.tx_hash, amount = %d.amount, asset = %d.asset, block = d.block_number, "rescan found a missed deposit");
                    crediting::on_detected(&mut tx, self.ctx(), &d).await?;
                    recorded += 1;
                }
                Recorded::New(d) | Recorded::Revived(d) => {
                    tracing::warn!(chain = %self.chain.name, tx_hash = %d.tx_hash, reason = ?d.reject_reason, "rescan found a missed transfer; recorded as rejected");
                    crediting::on_rejected(&mut tx, &d).await?;
                    recorded += 1;
                }
                _ => {}
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(recorded)
    }

    /// A provider said the `eth_getLogs` range was too large: use the range it suggests, or half.
    fn shrink_range(&mut self, suggested: Option<u64>) {
        let shrunk = suggested.unwrap_or(self.range / 2).clamp(1, self.range.saturating_sub(1).max(1));
        tracing::info!(chain = %self.chain.name, from = self.range, to = shrunk, "eth_getLogs range too large; shrinking");
        self.range = shrunk;
        self.successes = 0;
    }

    /// How many RPC calls of one step may be in flight at once.
    fn concurrency(&self) -> usize {
        usize::try_from(self.chain.rpc_concurrency).unwrap_or(usize::MAX).max(1)
    }

    /// Blocks `from..=to` (checked to form one chain) and the allow-listed tokens' `Transfer`
    /// logs in that range, fetched at the same time. The logs are checked against the blocks'
    /// hashes by [`Self::scan`], once both have arrived.
    /// Without native deposits the blocks are headers only (their hashes, parents and blooms are
    /// what the checks need).
    async fn fetch_range(&self, from: u64, to: u64) -> Result<(Vec<Block>, Vec<Log>), WatchError> {
        tokio::try_join!(self.fetch_blocks(from, to), self.fetch_logs(from, to))
    }

    /// Blocks `from..=to` with their transactions, fetched `rpc_concurrency` at a time (each call
    /// with the RPC layer's failover and retries), then checked in order to form one chain.
    async fn fetch_blocks(&self, from: u64, to: u64) -> Result<Vec<Block>, WatchError> {
        // The futures are made up front and boxed: a stream that maps to borrowing futures is too
        // general for the compiler to prove the watcher's task `Send`.
        let fetches: Vec<BoxFuture<'_, Result<Block, WatchError>>> =
            (from..=to).map(|number| self.fetch_block(number).boxed()).collect();
        let blocks: Vec<Block> = stream::iter(fetches).buffered(self.concurrency()).try_collect().await?;
        check_linked(from, &blocks)?;
        Ok(blocks)
    }

    /// Block `number`: with its transactions when native deposits are on, else its header.
    async fn fetch_block(&self, number: u64) -> Result<Block, WatchError> {
        let full = self.chain.native_deposits_on();
        self.rpc
            .call("eth_getBlockByNumber", |p| async move {
                let call = p.get_block_by_number(BlockNumberOrTag::Number(number));
                if full { call.full().await } else { call.await }
            })
            .await?
            .ok_or_else(|| WatchError::Inconsistent(format!("block {number} is missing below the head")))
    }

    /// Whether transaction `hash` succeeded (a reverted transaction moved nothing).
    async fn succeeded(&self, hash: B256) -> Result<bool, WatchError> {
        let receipt = self
            .rpc
            .call("eth_getTransactionReceipt", |p| async move { p.get_transaction_receipt(hash).await })
            .await?
            .ok_or_else(|| WatchError::Inconsistent(format!("no receipt for {hash}")))?;
        Ok(receipt.status())
    }

    /// `Transfer` logs of the allow-listed token contracts in `from..=to` (by contract and topic0
    /// only: recipients are matched in memory); none when the chain has no tokens.
    async fn fetch_logs(&self, from: u64, to: u64) -> Result<Vec<Log>, WatchError> {
        let Some(filter) = self.logs_filter() else { return Ok(Vec::new()) };
        let filter = filter.from_block(from).to_block(to);
        let logs = self
            .rpc
            .call("eth_getLogs", |p| {
                let filter = filter.clone();
                async move { p.get_logs(&filter).await }
            })
            .await
            .map_err(WatchError::from)?;
        check_logs_within(from, to, &logs)?;
        Ok(logs)
    }

    /// The allow-listed tokens' `Transfer` filter (no block range yet); `None` without tokens.
    fn logs_filter(&self) -> Option<Filter> {
        let tokens: Vec<Address> = self.chain.tokens.iter().map(|t| t.address).collect();
        (!tokens.is_empty()).then(|| Filter::new().address(tokens).event_signature(Transfer::SIGNATURE_HASH))
    }

    /// Token transfers (from `logs`, the range's `Transfer` logs) and native transfers to watched
    /// addresses in `blocks`. A log whose block hash differs from the block we fetched means the
    /// node is lagging or mid-reorg: the whole range is refused. The receipts of native transfers
    /// are fetched `rpc_concurrency` at a time.
    async fn scan(&self, blocks: &[Block], logs: Vec<Log>) -> Result<Vec<Found>, WatchError> {
        let hashes: HashMap<u64, B256> = blocks.iter().map(|b| (b.header.number, b.header.hash)).collect();
        let logs = self.complete_logs(blocks, logs).await?;
        let mut found = Vec::new();
        self.metrics.chain_logs_scanned_total.with_label_values(&[self.chain.name.as_str()]).inc_by(logs.len() as u64);
        for log in logs {
            if let Some(transfer) = self.match_log(&log, &hashes)? {
                found.push(transfer);
            }
        }
        let mut candidates = Vec::new();
        for block in blocks {
            for tx in block.transactions.txns() {
                let Some(to) = tx.to() else { continue };
                if tx.value().is_zero() || !self.watched.contains(&to) {
                    continue;
                }
                let hash = tx.tx_hash();
                let index =
                    tx.transaction_index.ok_or_else(|| WatchError::Inconsistent(format!("{hash} has no index")))?;
                candidates.push(Found {
                    tx_hash: hash,
                    log_index: -1 - index as i64,
                    block_number: block.header.number,
                    block_hash: block.header.hash,
                    from: tx.from(),
                    to,
                    token: None,
                    amount: Ok(BaseUnits(tx.value())),
                });
            }
        }
        let receipts: Vec<BoxFuture<'_, Result<bool, WatchError>>> =
            candidates.iter().map(|c| self.succeeded(c.tx_hash).boxed()).collect();
        let succeeded: Vec<bool> = stream::iter(receipts).buffered(self.concurrency()).try_collect().await?;
        // A reverted transaction moved nothing.
        found.extend(candidates.into_iter().zip(succeeded).filter(|(_, ok)| *ok).map(|(candidate, _)| candidate));
        Ok(found)
    }

    /// Guards against an `eth_getLogs` answer that does not cover the whole range (a node a few
    /// blocks behind the one that served the headers answers "no logs" for blocks it does not
    /// have yet, go-ethereum issue 24078). Every block's `logsBloom` says whether it may hold a
    /// `Transfer` of an allow-listed token (a bloom has no false negatives); a block whose bloom
    /// says it may while the range's answer has no log in it is asked again ([`Self::fetch_logs_at`]).
    /// What the re-asks return is added to the range's logs.
    async fn complete_logs(&self, blocks: &[Block], mut logs: Vec<Log>) -> Result<Vec<Log>, WatchError> {
        let tokens: Vec<Address> = self.chain.tokens.iter().map(|t| t.address).collect();
        if tokens.is_empty() {
            return Ok(logs);
        }
        // A log from another block than the header we hold (a node on another fork) refuses the
        // whole range, before any block is judged by what the answer holds.
        let headers: HashMap<u64, B256> = blocks.iter().map(|b| (b.header.number, b.header.hash)).collect();
        for log in &logs {
            if let (Some(number), Some(hash)) = (log.block_number, log.block_hash)
                && headers.get(&number).is_some_and(|header| *header != hash)
            {
                return Err(WatchError::Inconsistent(format!(
                    "log in block {number} names another block hash than the header"
                )));
            }
        }
        let answered: std::collections::HashSet<B256> = logs.iter().filter_map(|log| log.block_hash).collect();
        let topic = [Transfer::SIGNATURE_HASH];
        let suspect: Vec<&Block> = blocks
            .iter()
            .filter(|block| !answered.contains(&block.header.hash))
            .filter(|block| tokens.iter().any(|token| block.header.logs_bloom.contains_raw_log(*token, &topic)))
            .collect();
        if suspect.is_empty() {
            return Ok(logs);
        }
        self.metrics
            .chain_logs_rechecked_blocks_total
            .with_label_values(&[self.chain.name.as_str()])
            .inc_by(suspect.len() as u64);
        let fetches: Vec<BoxFuture<'_, Result<Vec<Log>, WatchError>>> =
            suspect.iter().map(|block| self.fetch_logs_at(block).boxed()).collect();
        let rechecked: Vec<Vec<Log>> = stream::iter(fetches).buffered(self.concurrency()).try_collect().await?;
        let recovered: usize = rechecked.iter().map(Vec::len).sum();
        if recovered > 0 {
            tracing::warn!(
                chain = %self.chain.name, blocks = suspect.len(), logs = recovered,
                "eth_getLogs answered without logs that blocks' blooms promise (a lagging node?); recovered them by block hash"
            );
        }
        for (block, block_logs) in suspect.iter().zip(rechecked) {
            let hash = block.header.hash;
            if block_logs.iter().any(|log| log.block_hash != Some(hash)) {
                return Err(WatchError::Inconsistent(format!(
                    "eth_getLogs for block {hash} returned another block's logs"
                )));
            }
            logs.extend(block_logs);
        }
        Ok(logs)
    }

    /// The allow-listed tokens' `Transfer` logs of `block`, asked by its hash (EIP-234). geth
    /// answers that with an error for a block it does not have, but other clients (and older
    /// versions) answer an unknown hash with an empty list, so an empty or refused answer is not
    /// taken as given: the block's receipts settle it. All of them (one per transaction), their
    /// blooms adding up to the header's, prove what the block holds, whichever node answers; a
    /// node without the block has no receipts for it, and the step fails and is retried.
    async fn fetch_logs_at(&self, block: &Block) -> Result<Vec<Log>, WatchError> {
        let hash = block.header.hash;
        let tokens: Vec<Address> = self.chain.tokens.iter().map(|t| t.address).collect();
        let filter =
            Filter::new().address(tokens.clone()).event_signature(Transfer::SIGNATURE_HASH).at_block_hash(hash);
        let by_hash = self
            .rpc
            .call("eth_getLogs", |p| {
                let filter = filter.clone();
                async move { p.get_logs(&filter).await }
            })
            .await;
        match by_hash {
            Ok(logs) if !logs.is_empty() => return Ok(logs),
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(chain = %self.chain.name, block = block.header.number, %error, "eth_getLogs by block hash refused; reading the block's receipts");
            }
        }
        let receipts =
            self.rpc
                .call("eth_getBlockReceipts", |p| async move {
                    p.get_block_receipts(alloy::eips::BlockId::hash(hash)).await
                })
                .await?
                .ok_or_else(|| WatchError::Inconsistent(format!("the node has no receipts for block {hash}")))?;
        if receipts.len() != block.transactions.len() {
            return Err(WatchError::Inconsistent(format!(
                "block {hash} has {} transactions but the node returned {} receipts",
                block.transactions.len(),
                receipts.len()
            )));
        }
        let mut bloom = alloy::primitives::Bloom::default();
        for receipt in &receipts {
            bloom.accrue_bloom(receipt.inner.logs_bloom());
        }
        if bloom != block.header.logs_bloom {
            return Err(WatchError::Inconsistent(format!(
                "the receipts of block {hash} do not add up to its logsBloom"
            )));
        }
        Ok(receipts
            .iter()
            .flat_map(|receipt| receipt.inner.logs())
            .filter(|log| tokens.contains(&log.address()) && log.topics().first() == Some(&Transfer::SIGNATURE_HASH))
            .cloned()
            .collect())
    }

    fn match_log(&self, log: &Log, hashes: &HashMap<u64, B256>) -> Result<Option<Found>, WatchError> {
        let topics = log.topics();
        if log.removed || topics.len() != 3 {
            return Ok(None);
        }
        let to = Address::from_word(topics[2]);
        if !self.watched.contains(&to) {
            return Ok(None);
        }
        let (Some(number), Some(block_hash), Some(tx_hash), Some(index)) =
            (log.block_number, log.block_hash, log.transaction_hash, log.log_index)
        else {
            return Err(WatchError::Inconsistent("a log without its position".into()));
        };
        if hashes.get(&number) != Some(&block_hash) {
            return Err(WatchError::Inconsistent(format!(
                "log in block {number} names another block hash than the header"
            )));
        }
        let data = &log.data().data;
        let amount = if data.len() == 32 {
            Ok(BaseUnits(U256::from_be_slice(data)))
        } else {
            Err(format!("Transfer data is {} bytes, not a 32-byte uint256", data.len()))
        };
        if matches!(amount, Ok(a) if a.is_zero()) {
            return Ok(None); // Zero-value transfers are address poisoning, not payments.
        }
        Ok(Some(Found {
            tx_hash,
            log_index: index as i64,
            block_number: number,
            block_hash,
            from: Address::from_word(topics[1]),
            to,
            token: Some(log.address()),
            amount,
        }))
    }

    /// Records the range's transfers, its block hashes and the cursor in one transaction.
    /// The cursor moves to `last`, the range's last block (given, not taken from `blocks`, which
    /// may hold only a few of the range's blocks).
    async fn record(&self, blocks: &[Block], last: &Block, found: Vec<Found>) -> Result<(), WatchError> {
        let last = &last.header;
        let mut tx = self.store.begin().await?;
        // Counted only once the transaction commits: a rolled-back step counts nothing.
        let mut counts: Vec<(String, &'static str, Option<RejectReason>)> = Vec::new();
        let mut delays: Vec<f64> = Vec::new();
        let timestamps: HashMap<u64, u64> = blocks.iter().map(|b| (b.header.number, b.header.timestamp)).collect();
        for transfer in found {
            // The treasury's gas top-ups to deposit addresses are depositd's own money moving,
            // not payments.
            if transfer.token.is_none() && chain_txs::is_gas_topup(&mut tx, &format!("{:#x}", transfer.tx_hash)).await?
            {
                continue;
            }
            let block_time = timestamps.get(&transfer.block_number).copied();
            let (deposit, rejected) = self.to_deposit(&mut tx, transfer).await?;
            match deposits::record(&mut tx, &deposit).await? {
                Recorded::New(d) | Recorded::Revived(d) if d.state == DepositState::Detected => {
                    tracing::info!(chain = %self.chain.name, tx_hash = %d.tx_hash, amount = %d.amount, asset = %d.asset, "deposit detected");
                    crediting::on_detected(&mut tx, self.ctx(), &d).await?;
                    counts.push((d.asset.clone(), "detected", None));
                    if let Some(at) = block_time {
                        delays.push((now_ms() as f64 / 1000.0 - at as f64).max(0.0));
                    }
                }
                Recorded::New(d) | Recorded::Revived(d) if d.state == DepositState::Rejected => {
                    tracing::warn!(chain = %self.chain.name, tx_hash = %d.tx_hash, reason = ?d.reject_reason, "transfer recorded as rejected; its money is in suspense");
                    crediting::on_rejected(&mut tx, &d).await?;
                    counts.push((d.asset.clone(), "rejected", rejected));
                }
                _ => {}
            }
        }
        // Only the hashes the reorg window keeps (the rest would be pruned at once).
        let keep_from = last.number.saturating_sub(self.reorg_window());
        let refs: Vec<BlockRef> = blocks
            .iter()
            .filter(|b| b.header.number >= keep_from)
            .map(|b| BlockRef {
                number: b.header.number,
                hash: b.header.hash.to_string(),
                parent_hash: b.header.parent_hash.to_string(),
            })
            .collect();
        blocks::save(&mut tx, self.chain.chain_id, &refs).await?;
        blocks::prune(&mut tx, self.chain.chain_id, None, keep_from).await?;
        cursors::set(
            &mut tx,
            &ChainCursor {
                chain_id: self.chain.chain_id,
                block_number: last.number,
                block_hash: last.hash.to_string(),
            },
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        let chain = self.chain.name.as_str();
        for (asset, state, reason) in counts {
            self.metrics.deposits_total.with_label_values(&[chain, &asset, state]).inc();
            if let Some(reason) = reason {
                self.metrics.deposits_rejected_total.with_label_values(&[chain, reason.as_str()]).inc();
            }
        }
        for delay in delays {
            self.metrics.deposit_detection_seconds.with_label_values(&[chain]).observe(delay);
        }
        self.metrics.chain_processed_block.with_label_values(&[chain]).set(last.number as i64);
        Ok(())
    }

    /// Recent block hashes kept: well deeper than the confirmation depth.
    fn reorg_window(&self) -> u64 {
        (self.chain.confirmations * 4).max(128)
    }

    /// Resolves who a transfer is for, and whether it can be credited.
    async fn to_deposit(
        &self,
        conn: &mut depositd_core::store::Conn,
        found: Found,
    ) -> Result<(Deposit, Option<RejectReason>), WatchError> {
        // Only watched recipients are found, and every watched address has its row.
        let watched = deposit_addresses::watched(conn, found.to)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("watched address {} has no deposit_addresses row", found.to)))?;
        let asset = match found.token {
            None => Some(self.chain.native.symbol.clone()),
            Some(token) => self.chain.tokens.iter().find(|t| t.address == token).map(|t| t.symbol.clone()),
        };
        let mut deposit = Deposit {
            id: Uuid::now_v7(),
            chain_id: self.chain.chain_id,
            tx_hash: found.tx_hash.to_string(),
            log_index: found.log_index,
            block_number: found.block_number,
            block_hash: found.block_hash.to_string(),
            from_address: found.from.to_checksum(None),
            to_address: found.to.to_checksum(None),
            token_address: found.token.map(|t| t.to_checksum(None)),
            asset: asset.clone().unwrap_or_default(),
            amount: found.amount.clone().unwrap_or_default(),
            state: DepositState::Detected,
            reject_reason: None,
            merchant_id: None,
            invoice_id: None,
            static_address_id: None,
            detected_at: now_ms(),
            confirmed_at: None,
            generation: 0,
        };
        // What the owner accepts: (chain id, asset) pairs (an invoice with payment options, several).
        let expected: Option<Vec<(u64, String)>> = match watched.purpose {
            AddressPurpose::Invoice => match invoices::by_deposit_address(conn, watched.id).await? {
                Some(invoice) => {
                    deposit.merchant_id = Some(invoice.merchant_id);
                    deposit.invoice_id = Some(invoice.id);
                    Some(if invoice.options.is_empty() {
                        vec![(invoice.chain_id, invoice.asset)]
                    } else {
                        invoice.options.into_iter().map(|o| (o.chain_id, o.asset)).collect()
                    })
                }
                None => None,
            },
            AddressPurpose::Static => match static_addresses::by_deposit_address(conn, watched.id).await? {
                Some(rail) => {
                    deposit.merchant_id = Some(rail.merchant_id);
                    deposit.static_address_id = Some(rail.id);
                    if rail.status != depositd_core::static_address::StaticAddressStatus::Active {
                        deposit.reject_reason = Some("static address is disabled".into());
                    }
                    Some(vec![(rail.chain_id, rail.asset)])
                }
                None => None,
            },
        };
        let here = self.chain.chain_id;
        let reason = match (&found.amount, expected) {
            (Err(why), _) => Some((RejectReason::Undecodable, why.clone())),
            (_, None) => Some((RejectReason::Unowned, "no invoice or static address owns this address".into())),
            (_, Some(pairs)) if !pairs.iter().any(|(chain_id, _)| *chain_id == here) => {
                let chains: Vec<String> = pairs.iter().map(|(chain_id, _)| chain_id.to_string()).collect();
                Some((
                    RejectReason::WrongChain,
                    format!("paid on chain {here} but expected on chain {}", chains.join(" or ")),
                ))
            }
            (_, Some(pairs))
                if !pairs.iter().any(|(chain_id, expected_asset)| {
                    *chain_id == here && asset.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(expected_asset))
                }) =>
            {
                let paid_in = asset.as_deref().unwrap_or("an unknown token");
                let offered: Vec<&str> =
                    pairs.iter().filter(|(chain_id, _)| *chain_id == here).map(|(_, a)| a.as_str()).collect();
                Some((RejectReason::WrongAsset, format!("paid in {paid_in} but expected {}", offered.join(" or "))))
            }
            _ => deposit.reject_reason.take().map(|text| (RejectReason::Disabled, text)),
        };
        let category = reason.as_ref().map(|(category, _)| *category);
        if let Some((_, text)) = reason {
            deposit.state = DepositState::Rejected;
            deposit.reject_reason = Some(text);
        }
        Ok((deposit, category))
    }

    /// Credits detected deposits that have `confirmations` blocks on top (and are at or below the
    /// verified cursor).
    async fn confirm(&self, head: u64, verified: Option<u64>) -> Result<(), WatchError> {
        let Some(verified) = verified else { return Ok(()) };
        let Some(deep_enough) = (head + 1).checked_sub(self.chain.confirmations) else { return Ok(()) };
        let mut tx = self.store.begin().await?;
        let due = deposits::detected_up_to(&mut tx, self.chain.chain_id, deep_enough.min(verified)).await?;
        let mut confirmed = Vec::new();
        for deposit in &due {
            if crediting::on_confirmed(&mut tx, self.ctx(), &self.chain, deposit).await? {
                tracing::info!(chain = %self.chain.name, tx_hash = %deposit.tx_hash, "deposit confirmed");
                // From the block that gave it its last confirmation, when that block is one this
                // step scanned (live operation; a backfill confirms old blocks and says nothing).
                let confirming = deposit.block_number + self.chain.confirmations.saturating_sub(1);
                let delay =
                    self.recent_timestamps.get(&confirming).map(|at| (now_ms() as f64 / 1000.0 - *at as f64).max(0.0));
                confirmed.push((deposit.asset.as_str(), delay));
            }
        }
        // Transfers in suspense as deep: resolvable and sweepable from now on.
        for rejected in
            deposits::rejected_unconfirmed_up_to(&mut tx, self.chain.chain_id, deep_enough.min(verified)).await?
        {
            crediting::on_rejected_confirmed(&mut tx, &rejected).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        for (asset, delay) in confirmed {
            self.metrics.deposits_total.with_label_values(&[self.chain.name.as_str(), asset, "confirmed"]).inc();
            if let Some(delay) = delay {
                self.metrics
                    .deposit_confirmation_to_credit_seconds
                    .with_label_values(&[self.chain.name.as_str()])
                    .observe(delay);
            }
        }
        Ok(())
    }

    /// Where the new chain holds `deposit`'s transfer, if it moved to another block above
    /// `ancestor` at the same position: its receipt names a block other than the deposit's, the
    /// header at that number has that hash (one node's consistent view, and not the old one),
    /// the transaction succeeded, and the transfer is at the same log index (tokens: the same
    /// token, recipient and amount) or transaction index (native). Anything else is `None`,
    /// and the deposit is unwound as before.
    async fn moved_to(&self, deposit: &Deposit, ancestor: u64) -> Result<Option<(u64, B256)>, WatchError> {
        let hash: B256 = deposit
            .tx_hash
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("deposit {} has a malformed tx hash", deposit.id)))?;
        let Some(receipt) = self
            .rpc
            .call("eth_getTransactionReceipt", |p| async move { p.get_transaction_receipt(hash).await })
            .await?
        else {
            return Ok(None);
        };
        let (Some(number), Some(block_hash)) = (receipt.block_number, receipt.block_hash) else { return Ok(None) };
        if !receipt.status() || number <= ancestor || block_hash.to_string() == deposit.block_hash {
            return Ok(None);
        }
        let header =
            self.rpc
                .call("eth_getBlockByNumber", |p| async move {
                    p.get_block_by_number(BlockNumberOrTag::Number(number)).await
                })
                .await?;
        if header.map(|b| b.header.hash) != Some(block_hash) {
            return Ok(None);
        }
        let same_place = if deposit.log_index < 0 {
            receipt.transaction_index.map(|i| -1 - i as i64) == Some(deposit.log_index)
        } else {
            receipt.inner.logs().iter().any(|log| {
                let topics = log.topics();
                log.log_index == Some(deposit.log_index as u64)
                    && Some(log.address().to_checksum(None)) == deposit.token_address
                    && topics.first() == Some(&Transfer::SIGNATURE_HASH)
                    && topics.len() == 3
                    && Address::from_word(topics[2]).to_checksum(None) == deposit.to_address
                    && log.data().data.len() == 32
                    && BaseUnits(U256::from_be_slice(&log.data().data)) == deposit.amount
            })
        };
        Ok(same_place.then_some((number, block_hash)))
    }

    /// The block after the cursor does not build on it: walk back to the last block whose stored
    /// hash is still canonical, undo every deposit above it, and move the cursor there.
    async fn unwind_reorg(&self, cursor: &ChainCursor) -> Result<(), WatchError> {
        let chain_id = self.chain.chain_id;
        let mut conn = self.store.conn().await?;
        let floor = cursor.block_number.saturating_sub(self.reorg_window());
        let mut ancestor: Option<(u64, B256)> = None;
        // The stored hashes, walked down: where the watcher caught up over final blocks it kept
        // only a few of them (every block holding a deposit among them), and a height without a
        // stored hash says nothing about the chain there.
        let mut number = cursor.block_number;
        while number > floor {
            let Some(stored) = blocks::highest_below(&mut conn, chain_id, number).await? else { break };
            if stored.number < floor {
                break;
            }
            number = stored.number;
            let canonical = self
                .rpc
                .call("eth_getBlockByNumber", |p| async move {
                    p.get_block_by_number(BlockNumberOrTag::Number(number)).await
                })
                .await?
                .ok_or_else(|| WatchError::Inconsistent(format!("block {number} is missing")))?;
            if canonical.header.hash.to_string() == stored.hash {
                ancestor = Some((number, canonical.header.hash));
                break;
            }
        }
        drop(conn);
        let (ancestor, ancestor_hash) = match ancestor {
            Some(found) => found,
            None => {
                // Deeper than the window: rescan from its floor; every deposit above is re-checked.
                let canonical = self
                    .rpc
                    .call("eth_getBlockByNumber", |p| async move {
                        p.get_block_by_number(BlockNumberOrTag::Number(floor)).await
                    })
                    .await?
                    .ok_or_else(|| WatchError::Inconsistent(format!("block {floor} is missing")))?;
                (floor, canonical.header.hash)
            }
        };
        let depth = cursor.block_number - ancestor;
        tracing::warn!(chain = %self.chain.name, depth, ancestor, "chain reorganisation: unwinding");
        // A credited deposit whose transaction the new chain still holds, at the same position,
        // only moved: it keeps its credit (reversing it could take money already swept, and
        // would announce a reversal that did not happen). The new chain is read before the
        // transaction that unwinds.
        let live = {
            let mut conn = self.store.conn().await?;
            deposits::live_above(&mut conn, chain_id, ancestor).await?
        };
        let mut relocated = HashMap::new();
        for deposit in live.iter().filter(|d| d.state == DepositState::Confirmed) {
            if let Some(place) = self.moved_to(deposit, ancestor).await? {
                relocated.insert(deposit.id, place);
            }
        }
        let mut tx = self.store.begin().await?;
        let mut moved = Vec::new();
        for deposit in deposits::live_above(&mut tx, chain_id, ancestor).await? {
            if let Some((number, hash)) = relocated.get(&deposit.id)
                && deposits::relocate(&mut tx, deposit.id, *number, &hash.to_string()).await?
            {
                tracing::warn!(chain = %self.chain.name, tx_hash = %deposit.tx_hash, from = deposit.block_number, to = number, "a reorg moved a credited deposit to another block; it stays credited");
                continue;
            }
            if let Some(unwound) = crediting::on_reorged(&mut tx, &deposit).await? {
                moved.push((deposit.asset.clone(), unwound));
            }
        }
        blocks::prune(&mut tx, chain_id, Some(ancestor), 0).await?;
        cursors::set(&mut tx, &ChainCursor { chain_id, block_number: ancestor, block_hash: ancestor_hash.to_string() })
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        let chain = self.chain.name.as_str();
        self.metrics.chain_reorgs_total.with_label_values(&[chain]).inc();
        let deepest = self.metrics.chain_reorg_depth_max.with_label_values(&[chain]);
        deepest.set(deepest.get().max(depth as i64));
        for (asset, unwound) in moved {
            self.metrics.deposits_total.with_label_values(&[chain, &asset, unwound.state.as_str()]).inc();
            if !unwound.reorg_loss.is_zero() {
                // Counted after the commit: a retried unwinding posts (and counts) nothing again.
                self.metrics.reorg_losses_total.with_label_values(&[chain, &asset]).inc();
            }
        }
        Ok(())
    }
}

/// The watcher's step under its chain's lease: `tick`, which says whether more blocks wait.
impl LeasedWork for ChainWatcher {
    type Error = WatchError;

    async fn step(&mut self) -> Result<bool, WatchError> {
        self.tick().await
    }
}

/// `blocks` start at `from`, are consecutive and each builds on the one before.
fn check_linked(from: u64, blocks: &[Block]) -> Result<(), WatchError> {
    for (number, pair) in (from + 1..).zip(blocks.windows(2)) {
        if pair[1].header.number != number || pair[1].header.parent_hash != pair[0].header.hash {
            return Err(WatchError::Inconsistent(format!("block {number} does not follow block {}", number - 1)));
        }
    }
    if blocks.first().map(|b| b.header.number) != Some(from) {
        return Err(WatchError::Inconsistent(format!("the node did not return block {from} when asked for it")));
    }
    Ok(())
}

async fn cursor_now(store: &Store, chain_id: u64) -> Result<Option<ChainCursor>, WatchError> {
    let mut conn = store.conn().await?;
    Ok(cursors::get(&mut conn, chain_id).await?)
}

/// Every log of an `eth_getLogs` answer for blocks `from..=to` names its block, by number and
/// hash, inside that range; else the whole answer is refused (a node or proxy that answers
/// something else than what was asked for cannot be trusted for the rest of it).
fn check_logs_within(from: u64, to: u64, logs: &[Log]) -> Result<(), WatchError> {
    for log in logs {
        match (log.block_number, log.block_hash) {
            (Some(number), Some(_)) if (from..=to).contains(&number) => {}
            (number, _) => {
                return Err(WatchError::Inconsistent(format!(
                    "the eth_getLogs answer for blocks {from}..={to} holds a log of block {}: the range is refused",
                    number.map_or_else(|| "(none named)".to_owned(), |n| n.to_string())
                )));
            }
        }
    }
    Ok(())
}
