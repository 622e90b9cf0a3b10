//! The benchmark chain: the real anvil with the project's test ERC-20 (`depositd_testkit`'s
//! [`TestChain`]), and fast chain generation: transfers pre-signed here, sent to anvil
//! in JSON-RPC batches while its mining is paused, then mined one block per batch.

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::network::TxSignerSync;
use alloy::network::eip2718::Encodable2718;
use alloy::primitives::{Address, TxKind, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use anyhow::{Context, bail};
use depositd_testkit::anvil::{Anvil, AnvilOptions, DEV_ACCOUNT_1_KEY};
use depositd_testkit::chain::TestChain;
use depositd_testkit::tokens::{DECIMALS, TestToken};
use serde_json::json;

use crate::rpc::{Rpc, hex_u64};

pub const CHAIN_ID: u64 = 31337;
/// Enough for every transfer a benchmark makes.
const MINT: u64 = 1_000_000_000_000_000;
/// Generous for a token transfer to a fresh holder (about 52,000 gas).
const TRANSFER_GAS: u64 = 90_000;
const MAX_FEE_PER_GAS: u128 = 20_000_000_000;
const PRIORITY_FEE_PER_GAS: u128 = 1_000_000_000;

/// anvil with the allow-listed test tokens and, optionally, a look-alike that reuses a symbol but
/// is not allow-listed.
pub struct BenchChain {
    pub anvil: Anvil,
    pub rpc: Rpc,
    /// anvil's account 1, holding every token.
    pub payer: PrivateKeySigner,
    /// (symbol, contract), the allow-listed tokens.
    pub tokens: Vec<(String, Address)>,
    pub lookalike: Option<Address>,
}

/// How the chain file's watcher settings are set.
pub struct ChainFile {
    pub confirmations: u64,
    pub poll_interval_ms: u64,
    pub max_block_range: u64,
    pub websocket: bool,
    pub start_block: u64,
}

impl BenchChain {
    /// Starts anvil (each transaction mined at once) and deploys the tokens.
    pub async fn start(symbols: &[&str], lookalike: bool) -> anyhow::Result<BenchChain> {
        let payer: PrivateKeySigner = DEV_ACCOUNT_1_KEY.parse()?;
        let names: Vec<String> = symbols.iter().map(|symbol| format!("Bench {symbol}")).collect();
        let mut specs: Vec<(&str, &str)> = names.iter().map(String::as_str).zip(symbols.iter().copied()).collect();
        if lookalike {
            specs.push(("Look-alike USD Coin", "USDC"));
        }
        let TestChain { anvil, tokens: deployed } =
            TestChain::start_with(AnvilOptions::default(), &specs, &[payer.address()], U256::from(MINT)).await?;
        let tokens = symbols.iter().map(|s| (*s).to_owned()).zip(deployed.iter().copied()).collect();
        let lookalike = lookalike.then(|| deployed[symbols.len()]);
        Ok(BenchChain { rpc: Rpc::new(&anvil.rpc_url()), anvil, payer, tokens, lookalike })
    }

    pub fn token(&self, symbol: &str) -> Address {
        self.tokens.iter().find(|(s, _)| s == symbol).map(|(_, a)| *a).expect("a deployed token")
    }

    /// The `chains/anvil.toml` depositd reads, for this anvil and these tokens.
    pub fn chain_file(&self, settings: &ChainFile) -> String {
        let mut text = format!(
            "name = \"anvil\"\nchain_id = {CHAIN_ID}\nrpc_urls = [\"{}\"]\n{}confirmations = {}\n\
             block_time_ms = 1000\npoll_interval_ms = {}\nmax_block_range = {}\nstart_block = {}\ntestnet = true\n\n\
             [native]\nsymbol = \"ETH\"\ndecimals = 18\n",
            self.anvil.rpc_url(),
            if settings.websocket { format!("ws_url = \"{}\"\n", self.anvil.ws_url()) } else { String::new() },
            settings.confirmations,
            settings.poll_interval_ms,
            settings.max_block_range,
            settings.start_block,
        );
        for (symbol, address) in &self.tokens {
            text.push_str(&format!(
                "\n[[tokens]]\nsymbol = \"{symbol}\"\naddress = \"{}\"\ndecimals = {DECIMALS}\n",
                address.to_checksum(None)
            ));
        }
        text
    }

    pub async fn nonce(&self, address: Address) -> anyhow::Result<u64> {
        hex_u64(&self.rpc.call("eth_getTransactionCount", json!([address, "pending"])).await?)
    }

    /// Sends each block's raw transactions in one batch with mining paused, then mines them into
    /// one block. Returns the first and last block numbers.
    pub async fn mine_blocks(&self, blocks: &[Vec<String>]) -> anyhow::Result<(u64, u64)> {
        self.rpc.call("evm_setAutomine", json!([false])).await?;
        let first = self.rpc.block_number().await? + 1;
        let started = std::time::Instant::now();
        for (i, raw) in blocks.iter().enumerate() {
            let calls: Vec<(&str, serde_json::Value)> =
                raw.iter().map(|tx| ("eth_sendRawTransaction", json!([tx]))).collect();
            if !calls.is_empty() {
                self.rpc.batch(&calls).await.with_context(|| format!("sending block {i}'s transactions"))?;
            }
            self.rpc.call("anvil_mine", json!([1])).await?;
            if (i + 1) % (blocks.len() / 10).max(1) == 0 {
                eprintln!(
                    "    {} of {} blocks mined after {:.1} s",
                    i + 1,
                    blocks.len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let last = self.rpc.block_number().await?;
        self.rpc.call("evm_setAutomine", json!([true])).await?;
        if last + 1 - first != blocks.len() as u64 {
            bail!("mined {} blocks, expected {}", last + 1 - first, blocks.len());
        }
        let status = self.rpc.call("txpool_status", json!([])).await?;
        let pending = match &status["pending"] {
            serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
            other => hex_u64(other).unwrap_or(0),
        };
        if pending > 0 {
            bail!("{pending} transactions were left unmined (a block overflowed its gas limit?)");
        }
        Ok((first, last))
    }
}

/// One ERC-20 `transfer` to make.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub token: Address,
    pub to: Address,
    pub amount: U256,
}

/// Signs `transfer` as an EIP-1559 transaction with `nonce`; returns the raw transaction (0x hex).
pub fn sign_transfer(signer: &PrivateKeySigner, nonce: u64, transfer: &Transfer) -> anyhow::Result<String> {
    let input = TestToken::transferCall { to: transfer.to, value: transfer.amount }.abi_encode();
    let mut tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: TRANSFER_GAS,
        max_fee_per_gas: MAX_FEE_PER_GAS,
        max_priority_fee_per_gas: PRIORITY_FEE_PER_GAS,
        to: TxKind::Call(transfer.token),
        value: U256::ZERO,
        access_list: Default::default(),
        input: input.into(),
    };
    let signature = signer.sign_transaction_sync(&mut tx)?;
    let envelope = TxEnvelope::from(tx.into_signed(signature));
    Ok(format!("0x{}", alloy::primitives::hex::encode(envelope.encoded_2718())))
}

/// Signs `transfers` with consecutive nonces from `first_nonce`, on every core.
pub fn sign_all(signer: &PrivateKeySigner, first_nonce: u64, transfers: &[Transfer]) -> anyhow::Result<Vec<String>> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
    let chunk = transfers.len().div_ceil(threads).max(1);
    let signed: Vec<anyhow::Result<Vec<String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = transfers
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let signer = signer.clone();
                scope.spawn(move || {
                    let base = first_nonce + (i * chunk) as u64;
                    part.iter().enumerate().map(|(j, t)| sign_transfer(&signer, base + j as u64, t)).collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a signing thread")).collect()
    });
    let mut all = Vec::with_capacity(transfers.len());
    for part in signed {
        all.extend(part?);
    }
    Ok(all)
}

/// A watched address, derived cheaply (not an HD derivation): the last 20 bytes of
/// keccak256("depositd-bench", seed, index). Good for filling a watched set, never for receiving
/// real money: nobody holds its key.
pub fn cheap_address(seed: u64, index: u64) -> Address {
    let mut input = Vec::with_capacity(30);
    input.extend_from_slice(b"depositd-bench");
    input.extend_from_slice(&seed.to_be_bytes());
    input.extend_from_slice(&index.to_be_bytes());
    Address::from_word(keccak256(&input))
}
