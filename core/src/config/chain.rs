//! One supported chain, from `chains/<name>.toml`.

use std::path::Path;

use alloy::primitives::Address;
use serde::Deserialize;

use super::ConfigError;
use crate::evm::parse_address;
use crate::money::MAX_TOKEN_DECIMALS;
use crate::secret::RpcUrl;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Unique lowercase name; equals the file stem. Used in the API (`"chain": "sepolia"`).
    pub name: String,
    pub chain_id: u64,
    /// Tried in order: on errors or timeouts the watcher fails over to the next. Secrets (keys in
    /// the path, query or userinfo): shown as scheme and host only.
    pub rpc_urls: Vec<RpcUrl>,
    /// Environment variable whose comma-separated value replaces `rpc_urls` (operators' own nodes).
    pub rpc_urls_env: Option<String>,
    /// WebSocket endpoint for `newHeads`; without one the watcher polls.
    pub ws_url: Option<RpcUrl>,
    pub ws_url_env: Option<String>,
    /// Blocks on top of a deposit's block before it is credited.
    pub confirmations: u64,
    pub block_time_ms: u64,
    pub poll_interval_ms: u64,
    /// Upper bound of the `eth_getLogs` block range (the watcher shrinks it when a provider objects).
    pub max_block_range: u64,
    /// How long one RPC call may take before the watcher fails over and retries.
    #[serde(default = "default_rpc_timeout_ms")]
    pub rpc_timeout_ms: u64,
    /// How many RPC calls of one step the watcher has in flight at once (the range's blocks, its
    /// `eth_getLogs`, the receipts of native transfers).
    #[serde(default = "default_rpc_concurrency")]
    pub rpc_concurrency: u64,
    /// First block to scan on a fresh database; `None` = the head at first start.
    pub start_block: Option<u64>,
    /// Testnets and dev chains hold no real value: keys for them are `dk_test_...`.
    pub testnet: bool,
    pub native: NativeAsset,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeAsset {
    pub symbol: String,
    pub decimals: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub symbol: String,
    /// Only `Transfer` logs emitted by this contract count: a look-alike with the same symbol does not.
    #[serde(deserialize_with = "checked_address")]
    pub address: Address,
    pub decimals: u8,
}

/// An asset a chain accepts: its native coin or one of its allow-listed tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetRef<'a> {
    pub symbol: &'a str,
    pub decimals: u8,
    /// `None` for the native coin.
    pub token_address: Option<Address>,
}

impl ChainConfig {
    pub fn load(path: &Path) -> Result<ChainConfig, ConfigError> {
        let err = |message: String| ConfigError::ChainFile { path: path.to_owned(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut chain: ChainConfig =
            toml::from_str(&text).map_err(|e| err(e.message().to_owned() + &location(&text, e.span())))?;
        chain.apply_env_overrides();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let problems = chain.problems(stem);
        if problems.is_empty() { Ok(chain) } else { Err(err(problems.join("; "))) }
    }

    /// The native coin or the allow-listed token with this symbol (case-insensitive).
    pub fn asset(&self, symbol: &str) -> Option<AssetRef<'_>> {
        if self.native.symbol.eq_ignore_ascii_case(symbol) {
            return Some(AssetRef { symbol: &self.native.symbol, decimals: self.native.decimals, token_address: None });
        }
        self.tokens.iter().find(|t| t.symbol.eq_ignore_ascii_case(symbol)).map(|t| AssetRef {
            symbol: &t.symbol,
            decimals: t.decimals,
            token_address: Some(t.address),
        })
    }

    pub fn asset_symbols(&self) -> Vec<&str> {
        std::iter::once(self.native.symbol.as_str()).chain(self.tokens.iter().map(|t| t.symbol.as_str())).collect()
    }

    fn apply_env_overrides(&mut self) {
        if let Some(urls) = self.rpc_urls_env.as_deref().and_then(|var| std::env::var(var).ok()) {
            let urls: Vec<RpcUrl> =
                urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(RpcUrl::from).collect();
            if !urls.is_empty() {
                self.rpc_urls = urls;
            }
        }
        if let Some(ws) = self.ws_url_env.as_deref().and_then(|var| std::env::var(var).ok())
            && !ws.trim().is_empty()
        {
            self.ws_url = Some(RpcUrl::from(ws.trim()));
        }
    }

    fn problems(&self, stem: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.name != stem {
            problems.push(format!("name: `{}` must equal the file name `{stem}`", self.name));
        }
        if self.name.is_empty() || !self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            problems.push(format!("name: `{}` must be lowercase letters, digits and '-'", self.name));
        }
        if self.chain_id == 0 {
            problems.push("chain_id: must not be 0".into());
        }
        if self.rpc_urls.is_empty() {
            problems.push("rpc_urls: at least one RPC URL is required".into());
        }
        for url in &self.rpc_urls {
            if !(url.scheme() == "http" || url.scheme() == "https") {
                problems.push(format!("rpc_urls: `{url}` must be an http(s) URL"));
            }
        }
        if let Some(ws) = &self.ws_url
            && !(ws.scheme() == "ws" || ws.scheme() == "wss")
        {
            problems.push(format!("ws_url: `{ws}` must be a ws(s) URL"));
        }
        if self.confirmations == 0 {
            problems.push("confirmations: must be at least 1 (0 would credit unmined or reorgable payments)".into());
        }
        if self.block_time_ms == 0 || self.poll_interval_ms == 0 {
            problems.push("block_time_ms and poll_interval_ms: must be greater than 0".into());
        }
        if self.rpc_timeout_ms == 0 {
            problems.push("rpc_timeout_ms: must be greater than 0".into());
        }
        if self.rpc_concurrency == 0 {
            problems.push("rpc_concurrency: must be at least 1".into());
        }
        if self.max_block_range == 0 {
            problems.push("max_block_range: must be at least 1".into());
        }
        let mut symbols = vec![self.native.symbol.to_ascii_uppercase()];
        for (asset, decimals) in std::iter::once((&self.native.symbol, self.native.decimals))
            .chain(self.tokens.iter().map(|t| (&t.symbol, t.decimals)))
        {
            if decimals > MAX_TOKEN_DECIMALS {
                problems.push(format!("{asset}: decimals {decimals} is above the supported {MAX_TOKEN_DECIMALS}"));
            }
            if asset.is_empty() || !asset.bytes().all(|b| b.is_ascii_alphanumeric()) {
                problems.push(format!("symbol `{asset}` must be ASCII letters and digits"));
            }
        }
        for token in &self.tokens {
            let upper = token.symbol.to_ascii_uppercase();
            if symbols.contains(&upper) {
                problems.push(format!("tokens: symbol `{}` appears twice", token.symbol));
            }
            symbols.push(upper);
        }
        problems
    }
}

fn default_rpc_timeout_ms() -> u64 {
    10_000
}

fn default_rpc_concurrency() -> u64 {
    8
}

fn checked_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    let s = String::deserialize(d)?;
    parse_address(&s).map_err(|e| serde::de::Error::custom(format!("address `{s}` {e}")))
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => format!(" (line {})", text[..span.start.min(text.len())].lines().count().max(1)),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::ChainConfig;
    use crate::evm::parse_address;

    /// The mainnet files in `chains/`: exactly these say `testnet = false` (their API keys are live).
    const MAINNETS: [&str; 5] = ["arbitrum-one", "base", "ethereum", "op-mainnet", "polygon"];

    fn shipped_chain_files() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../chains");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        files.sort();
        files
    }

    /// Every file shipped in `chains/` loads through the real loader (unknown keys, names, URLs,
    /// confirmations, decimals and address checksums are all checked there), follows the
    /// conventions in `chains/README.md`, and is listed in its table.
    #[test]
    fn every_shipped_chain_file_loads_and_follows_the_conventions() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../chains/README.md")).unwrap();
        let mut chain_ids: BTreeMap<u64, String> = BTreeMap::new();
        let mut mainnets = Vec::new();
        let files = shipped_chain_files();
        for path in &files {
            let stem = path.file_stem().unwrap().to_str().unwrap();
            let chain = ChainConfig::load(path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(chain.name, stem, "{}", path.display());
            assert_eq!(
                chain.testnet,
                !MAINNETS.contains(&stem),
                "{stem}: `testnet` must be false exactly for mainnets"
            );
            if !chain.testnet {
                mainnets.push(stem.to_owned());
            }
            let env_name = stem.to_ascii_uppercase().replace('-', "_");
            assert_eq!(chain.rpc_urls_env.as_deref(), Some(format!("DEPOSITD_RPC_URLS_{env_name}").as_str()), "{stem}");
            assert_eq!(chain.ws_url_env.as_deref(), Some(format!("DEPOSITD_WS_URL_{env_name}").as_str()), "{stem}");
            if let Some(other) = chain_ids.insert(chain.chain_id, stem.to_owned()) {
                panic!("{stem} and {other} share chain_id {}", chain.chain_id);
            }

            // The loader also accepts all-lowercase addresses; shipped files must be EIP-55
            // checksummed, so compare the text as written with its checksummed form.
            let text: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let tokens = text.get("tokens").and_then(|t| t.as_array()).cloned().unwrap_or_default();
            assert_eq!(tokens.len(), chain.tokens.len());
            for (written, token) in tokens.iter().zip(&chain.tokens) {
                let written = written["address"].as_str().unwrap();
                assert_eq!(parse_address(written).unwrap(), token.address);
                assert_eq!(written, token.address.to_checksum(None), "{stem} {}: not EIP-55 checksummed", token.symbol);
            }
            if !chain.testnet {
                assert!(!chain.tokens.is_empty(), "{stem}: a mainnet file lists its stablecoins");
            }

            let row = format!("| `{stem}.toml` |");
            let line = readme
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("{row} missing in chains/README.md"));
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            assert_eq!(cells[3], chain.chain_id.to_string(), "chains/README.md chain_id of {stem}");
            assert_eq!(cells[4], chain.confirmations.to_string(), "chains/README.md confirmations of {stem}");
        }
        assert_eq!(mainnets, MAINNETS, "every mainnet file is shipped");
        assert!(files.len() > MAINNETS.len(), "the testnet files are shipped too");
    }
}
