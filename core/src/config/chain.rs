//! One supported chain, from `chains/<name>.toml`.

use std::collections::BTreeMap;
use std::path::Path;

use alloy::primitives::Address;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::ConfigError;
use crate::evm::parse_address;
use crate::money::{BaseUnits, MAX_TOKEN_DECIMALS};
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
    /// Whether `rpc_urls` came from `rpc_urls_env` (the operator's own endpoints) rather than the
    /// file: a mainnet file's URLs are public placeholders, which `check-config` refuses for real money.
    #[serde(skip)]
    pub rpc_urls_from_env: bool,
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
    /// Whether the watcher looks for native-coin deposits, which only block bodies show: on, it
    /// fetches every block with its transactions; off, it needs only the tokens' `Transfer` logs
    /// and a few headers, and native-coin invoices and static addresses cannot be made on the
    /// chain. `None` (unset) = on: the native coin is an accepted asset on every chain.
    #[serde(default)]
    pub native_deposits: Option<bool>,
    /// Testnets and dev chains hold no real value: keys for them are `dk_test_...`.
    pub testnet: bool,
    pub native: NativeAsset,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Per asset symbol (the native coin's or a token's): where the treasury's excess goes.
    #[serde(default)]
    pub cold_storage: BTreeMap<String, ColdStorage>,
}

/// `[cold_storage.<SYMBOL>]`: whatever the treasury holds of the asset above `hot_max` (less what
/// its pending payouts and gas need) is sent to `cold_address` by the settler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColdStorage {
    /// The operator's cold wallet: EIP-55 checksummed (a mistyped address loses everything sent to
    /// it), never the treasury or a deposit address.
    #[serde(deserialize_with = "checksummed_address")]
    pub cold_address: Address,
    /// What the treasury keeps, in whole units as an exact decimal string (`"5000"`, `"0.5"`).
    #[serde(deserialize_with = "super::decimal")]
    pub hot_max: Decimal,
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

    /// Whether native-coin deposits are watched for (`native_deposits`, on unless set to false).
    pub fn native_deposits_on(&self) -> bool {
        self.native_deposits.unwrap_or(true)
    }

    /// The asset with this symbol if payments in it can be taken: [`Self::asset`], less the
    /// native coin when native deposits are off (the watcher would never see them).
    pub fn payable_asset(&self, symbol: &str) -> Option<AssetRef<'_>> {
        self.asset(symbol).filter(|a| a.token_address.is_some() || self.native_deposits_on())
    }

    /// The symbols of [`Self::payable_asset`]s.
    pub fn payable_symbols(&self) -> Vec<&str> {
        self.asset_symbols().into_iter().filter(|s| self.payable_asset(s).is_some()).collect()
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

    /// The cold storage of `symbol` with its `hot_max` in base units, if the file configures one.
    /// A `hot_max` that does not convert exactly is an error, never "no cold storage" (`load`
    /// refuses such a file; this guards configurations built otherwise).
    pub fn cold_storage_of(&self, symbol: &str) -> Result<Option<(&ColdStorage, BaseUnits)>, ConfigError> {
        let Some(asset) = self.asset(symbol) else { return Ok(None) };
        let Some((key, cold)) = self.cold_storage.iter().find(|(s, _)| s.eq_ignore_ascii_case(symbol)) else {
            return Ok(None);
        };
        let hot_max = hot_max_units(key, cold, asset).map_err(|e| ConfigError::Invalid(vec![e]))?;
        Ok(Some((cold, hot_max)))
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
                self.rpc_urls_from_env = true;
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
        if !self.native_deposits_on() && self.tokens.is_empty() {
            problems.push(
                "native_deposits: false on a chain without tokens would watch for nothing (configure tokens, or \
                 keep native deposits on)"
                    .into(),
            );
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
        for (symbol, cold) in &self.cold_storage {
            match self.asset(symbol) {
                None => problems.push(format!(
                    "cold_storage.{symbol}: not an asset of this chain (it has {})",
                    self.asset_symbols().join(", ")
                )),
                Some(asset) => {
                    if let Err(problem) = hot_max_units(symbol, cold, asset) {
                        problems.push(problem);
                    }
                }
            }
            let upper = symbol.to_ascii_uppercase();
            if self.cold_storage.keys().filter(|s| s.to_ascii_uppercase() == upper).count() > 1
                && self.cold_storage.keys().find(|s| s.to_ascii_uppercase() == upper) == Some(symbol)
            {
                problems.push(format!(
                    "cold_storage.{symbol}: configured twice (symbols are case-insensitive: one table per asset)"
                ));
            }
            if let Some(token) = self.tokens.iter().find(|t| t.address == cold.cold_address) {
                problems.push(format!(
                    "cold_storage.{symbol}.cold_address: {} is the {} token contract",
                    cold.cold_address, token.symbol
                ));
            }
        }
        problems
    }
}

/// `hot_max` in the asset's base units: at least 0, no more decimal places than the asset has
/// (trailing zeros do not count: `"5000.0000000"` is 5000), and within range.
fn hot_max_units(symbol: &str, cold: &ColdStorage, asset: AssetRef<'_>) -> Result<BaseUnits, String> {
    let hot_max = cold.hot_max.normalize();
    if hot_max.is_sign_negative() && !hot_max.is_zero() {
        return Err(format!("cold_storage.{symbol}.hot_max: must be at least 0"));
    }
    if hot_max.scale() > u32::from(asset.decimals) {
        return Err(format!(
            "cold_storage.{symbol}.hot_max: `{}` has more decimal places than {}'s {}",
            cold.hot_max, asset.symbol, asset.decimals
        ));
    }
    BaseUnits::from_decimal_round_down(hot_max, asset.decimals)
        .map_err(|e| format!("cold_storage.{symbol}.hot_max: `{}` is not a {} amount: {e}", cold.hot_max, asset.symbol))
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

/// An address that must be written EIP-55 checksummed (all-lowercase carries no checksum).
fn checksummed_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    let s = String::deserialize(d)?;
    let address = parse_address(&s).map_err(|e| serde::de::Error::custom(format!("address `{s}` {e}")))?;
    if address.to_checksum(None) != s {
        return Err(serde::de::Error::custom(format!(
            "address `{s}` must be EIP-55 checksummed ({})",
            address.to_checksum(None)
        )));
    }
    Ok(address)
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

    /// What the issuers publish for each mainnet stablecoin the files list: Circle's "USDC contract
    /// addresses" page (native USDC, 6 decimals on every chain) and Tether's "Supported Protocols"
    /// page (USDT on Ethereum and Polygon PoS, 6 decimals). Written out here, apart from the files,
    /// so that a typo in a file's address or decimals fails this test rather than misprices invoices.
    const PUBLISHED: [(&str, &str, &str, u8); 7] = [
        ("arbitrum-one", "USDC", "0xaf88d065e77c8cC2239327C5EDb3A432268e5831", 6),
        ("base", "USDC", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 6),
        ("ethereum", "USDC", "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", 6),
        ("ethereum", "USDT", "0xdAC17F958D2ee523a2206206994597C13D831ec7", 6),
        ("op-mainnet", "USDC", "0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85", 6),
        ("polygon", "USDC", "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359", 6),
        ("polygon", "USDT", "0xc2132D05D31c914a87C6611C10748AEb04B58e8F", 6),
    ];

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
                assert_eq!(chain.native.decimals, 18, "{stem}: the gas coin counts in 10^-18 units");
                let mut listed: Vec<(&str, &str, String, u8)> = chain
                    .tokens
                    .iter()
                    .map(|t| (stem, t.symbol.as_str(), t.address.to_checksum(None), t.decimals))
                    .collect();
                let mut published: Vec<(&str, &str, String, u8)> = PUBLISHED
                    .iter()
                    .filter(|p| p.0 == stem)
                    .map(|&(c, symbol, address, decimals)| (c, symbol, address.to_owned(), decimals))
                    .collect();
                listed.sort();
                published.sort();
                assert_eq!(
                    listed, published,
                    "{stem}: tokens differ from the issuers' published addresses and decimals"
                );
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
        assert!(PUBLISHED.iter().all(|p| MAINNETS.contains(&p.0)));
        assert!(files.len() > MAINNETS.len(), "the testnet files are shipped too");
    }

    /// `[cold_storage.<SYMBOL>]`: exact amounts, checksummed addresses, known assets.
    #[test]
    fn cold_storage_is_checked_where_it_is_read() {
        let anvil =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../chains/anvil.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anvil.toml");
        let load = |extra: &str| {
            std::fs::write(&path, format!("{anvil}\n{extra}")).unwrap();
            ChainConfig::load(&path)
        };
        let cold = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
        let chain = load(&format!("[cold_storage.eth]\ncold_address = \"{cold}\"\nhot_max = \"1.5\"\n")).unwrap();
        let (found, hot_max) = chain.cold_storage_of("ETH").unwrap().unwrap();
        assert_eq!(found.cold_address.to_checksum(None), cold);
        assert_eq!(hot_max, crate::money::BaseUnits::from(1_500_000_000_000_000_000u64));
        assert!(chain.cold_storage_of("USDC").unwrap().is_none());

        // Trailing zeros are no decimal places: 5000.0000000 USDC (6 decimals) is 5000 USDC.
        let usdc = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        let chain = load(&format!(
            "[[tokens]]\nsymbol = \"USDC\"\naddress = \"{usdc}\"\ndecimals = 6\n\n\
             [cold_storage.USDC]\ncold_address = \"{cold}\"\nhot_max = \"5000.0000000\"\n"
        ))
        .unwrap();
        let (_, hot_max) = chain.cold_storage_of("usdc").unwrap().unwrap();
        assert_eq!(hot_max, crate::money::BaseUnits::from(5_000_000_000u64));

        // A hot_max that does not convert (built in code, not loaded) is an error, not "no cold storage".
        let mut built = chain.clone();
        built.cold_storage.get_mut("USDC").unwrap().hot_max = "0.0000001".parse().unwrap();
        let error = built.cold_storage_of("USDC").unwrap_err().to_string();
        assert!(error.contains("decimal places"), "{error}");

        let refused = [
            (format!("[cold_storage.ETH]\ncold_address = \"{}\"\nhot_max = \"1\"\n", cold.to_lowercase()), "EIP-55"),
            (format!("[cold_storage.ETH]\ncold_address = \"{cold}\"\nhot_max = 1.5\n"), "float"),
            (format!("[cold_storage.ETH]\ncold_address = \"{cold}\"\nhot_max = \"-1\"\n"), "at least 0"),
            (format!("[cold_storage.DOGE]\ncold_address = \"{cold}\"\nhot_max = \"1\"\n"), "not an asset"),
            (
                format!("[cold_storage.ETH]\ncold_address = \"{cold}\"\nhot_max = \"0.0000000000000000001\"\n"),
                "decimal places",
            ),
            (format!("[cold_storage.ETH]\ncold_address = \"{cold}\"\n"), "hot_max"),
            (
                format!(
                    "[cold_storage.eth]\ncold_address = \"{cold}\"\nhot_max = \"1\"\n\n\
                     [cold_storage.ETH]\ncold_address = \"{cold}\"\nhot_max = \"2\"\n"
                ),
                "configured twice",
            ),
        ];
        for (extra, needle) in refused {
            let error = load(&extra).unwrap_err().to_string();
            assert!(error.contains(needle), "{extra}: {error}");
        }
    }
}
