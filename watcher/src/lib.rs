//! depositd's chain watcher: one task per configured chain that finds payments to watched
//! addresses, confirms them, survives reorgs, and credits each exactly once.
//!
//! Each step ([`ChainWatcher::tick`]): top up the watched set; read the head; fetch the next range
//! of blocks (at most `max_block_range`, `rpc_concurrency` calls in flight) and, at the same time,
//! the `Transfer` logs of the allow-listed token contracts in it (by contract and topic0, never by
//! recipient: recipients are matched in memory); verify the blocks form one chain; if the first
//! does not build on the cursor's block, unwind the reorg; otherwise check each log's block hash
//! against the fetched header, scan the blocks' transactions for native transfers (successful
//! receipts only, also fetched concurrently), then write deposits, block hashes and the cursor in
//! one transaction; finally confirm deposits that are deep enough through
//! `depositd_core::crediting`, the single entry point for invoice state.
//!
//! What a range fetches depends on the chain's `native_deposits` (blocks with their transactions
//! when on, headers only when off) and on its depth: below the reorg window (a catch-up) ranges
//! are final, fetched several at a time in JSON-RPC batches and recorded in order, and a
//! token-only final range needs only its logs and a few headers (ARCHITECTURE.md, "Fetch modes").
//!
//! RPC calls go through `depositd_rpc::ChainRpc` (failover across the chain's `rpc_urls`, retries
//! with backoff honouring `Retry-After`), and the step range shrinks when a provider says
//! `eth_getLogs` asked for too much. The loop runs under the chain's lease through
//! `depositd_core::leased`, stepping again at once while blocks are waiting.
//!
//! With a `ws_url`, new heads arrive over WebSocket and wake the loop at once; polling at
//! `poll_interval_ms` remains the fallback. Metrics (`core::metrics`) count deposits by state,
//! rejections by reason, reorgs and failovers.
//!
//! # Layout
//! - [`chain`]: [`ChainWatcher`], the scan/record/confirm/unwind loop for one chain.
//! - `batch`: JSON-RPC batches for catching up on final blocks.
//! - [`heads`]: the WebSocket `newHeads` follower that wakes the loop.
//! - [`watched`]: [`WatchedSet`], the in-memory set of watched addresses (addresses only), loaded
//!   and refreshed by HD index a page at a time.

mod batch;
pub mod chain;
pub mod heads;
pub mod watched;

pub use chain::{ChainWatcher, Rescanned, WatchError};
pub use watched::WatchedSet;
