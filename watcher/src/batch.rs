//! JSON-RPC batches for catching up on final blocks: several calls in one HTTP request, each
//! through [`ChainRpc::call`] (failover, retries; a failed batch is sent again whole). A batch
//! goes to one endpoint in one request, so its answers come from one node's view whenever the
//! provider does not split batches (the usual case; see [`logs_and_anchors`]).
//!
//! Only final ranges (below the reorg window) are fetched this way. Near the head a step covers a
//! block or two in real time: single calls cost nothing more there, and a load balancer that
//! spreads single calls is what the near-head guards (blooms, per-block hashes) are made for.

use alloy::providers::Provider as _;
use alloy::rpc::client::BatchRequest;
use alloy::rpc::types::{Block, BlockNumberOrTag, Filter, Log};
use depositd_rpc::{ChainRpc, RpcError};

/// Calls per batch: providers cap batches (commonly at 100 to 1,000 calls); 100 is under the
/// smallest common cap that allows batches at all.
pub const MAX_BATCH: usize = 100;

/// In one batch: the headers of the range's first and last blocks, then the range's `eth_getLogs`
/// (none when `filter` is `None`). A node that answers "no logs" for blocks it does not have yet
/// (a lagging node behind a load balancer) has no header for the last block either: the caller
/// refuses the range when a header is missing, so an empty answer counts only from a node that
/// has the whole range. What this cannot catch: a node that has the blocks but an incomplete log
/// index, or a provider that splits one batch across backends (see ARCHITECTURE.md).
pub async fn logs_and_anchors(
    rpc: &ChainRpc,
    filter: Option<Filter>,
    from: u64,
    to: u64,
) -> Result<(Vec<Log>, Option<Block>, Option<Block>), RpcError> {
    rpc.call("eth_getLogs+eth_getBlockByNumber (batch)", |p| {
        let filter = filter.clone();
        async move {
            let mut batch = BatchRequest::new(p.client());
            // The headers first: a node that works through a batch in order has the range's
            // last block before it answers the range's logs.
            let first =
                batch.add_call::<_, Option<Block>>("eth_getBlockByNumber", &(BlockNumberOrTag::Number(from), false))?;
            let last =
                batch.add_call::<_, Option<Block>>("eth_getBlockByNumber", &(BlockNumberOrTag::Number(to), false))?;
            let logs = match &filter {
                Some(filter) => Some(batch.add_call::<_, Vec<Log>>("eth_getLogs", &(filter,))?),
                None => None,
            };
            batch.send().await?;
            let logs = match logs {
                Some(waiter) => waiter.await?,
                None => Vec::new(),
            };
            Ok((logs, first.await?, last.await?))
        }
    })
    .await
}

/// What [`logs_and_anchors`] fetches, without a batch (for a provider that takes none): the two
/// headers first, then the logs, each a call of its own.
pub async fn logs_and_anchors_apart(
    rpc: &ChainRpc,
    filter: Option<Filter>,
    from: u64,
    to: u64,
) -> Result<(Vec<Log>, Option<Block>, Option<Block>), RpcError> {
    let header = |number: u64| {
        rpc.call("eth_getBlockByNumber", move |p| async move {
            p.get_block_by_number(BlockNumberOrTag::Number(number)).await
        })
    };
    let first = header(from).await?;
    let last = header(to).await?;
    let logs = match filter {
        Some(filter) => {
            rpc.call("eth_getLogs", |p| {
                let filter = filter.clone();
                async move { p.get_logs(&filter).await }
            })
            .await?
        }
        None => Vec::new(),
    };
    Ok((logs, first, last))
}

/// Blocks `numbers` (at most [`MAX_BATCH`]) in one batch: headers only, or with their
/// transactions (`full`). `None` where the node has no such block.
pub async fn blocks(rpc: &ChainRpc, numbers: &[u64], full: bool) -> Result<Vec<Option<Block>>, RpcError> {
    if let [number] = numbers {
        // One block: a plain call (a provider that refuses batches takes it).
        let number = *number;
        let block = rpc
            .call("eth_getBlockByNumber", |p| async move {
                let call = p.get_block_by_number(BlockNumberOrTag::Number(number));
                if full { call.full().await } else { call.await }
            })
            .await?;
        return Ok(vec![block]);
    }
    let what = if full { "eth_getBlockByNumber full (batch)" } else { "eth_getBlockByNumber (batch)" };
    rpc.call(what, |p| async move {
        let mut batch = BatchRequest::new(p.client());
        let mut waiters = Vec::with_capacity(numbers.len());
        for number in numbers {
            waiters.push(
                batch
                    .add_call::<_, Option<Block>>("eth_getBlockByNumber", &(BlockNumberOrTag::Number(*number), full))?,
            );
        }
        batch.send().await?;
        let mut blocks = Vec::with_capacity(waiters.len());
        for waiter in waiters {
            blocks.push(waiter.await?);
        }
        Ok(blocks)
    })
    .await
}
