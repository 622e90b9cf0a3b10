//! Configuration: layered settings and the per-chain files.
//!
//! Layers, later wins: the built-in `defaults.toml` (embedded), the operator's TOML file
//! (`--config PATH`), then environment variables `DEPOSITD__SECTION__KEY`. Every struct rejects
//! unknown keys, so a typo in a file or an environment variable is an error naming the key rather
//! than a setting silently ignored.
//!
//! Chains come from `<chains.dir>/<name>.toml` for each name in `chains.enabled`; see
//! `chains/README.md` for the format.

mod chain;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use secrecy::SecretString;
use serde::Deserialize;

pub use chain::{AssetRef, ChainConfig, ColdStorage, NativeAsset, TokenConfig};

use crate::secret::DatabaseUrl;

const DEFAULTS: &str = include_str!("defaults.toml");

/// A configuration problem, worded for the operator: it names the file or key and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(String),
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("chain file {path}: {message}")]
    ChainFile { path: PathBuf, message: String },
}

/// Everything the daemon is configured with: the settings and the enabled chains.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub chains: Vec<ChainConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub api: ApiSettings,
    pub chains: ChainsSettings,
    pub wallet: WalletSettings,
    pub pricing: PricingSettings,
    pub invoices: InvoiceSettings,
    pub ledger: LedgerSettings,
    pub webhooks: WebhookSettings,
    pub settler: SettlerSettings,
    /// E-mail receipts and notifications (issue 23); absent: no e-mail is queued or sent.
    #[serde(default)]
    pub smtp: Option<SmtpSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://...`; the password never appears in logs (see [`DatabaseUrl`]).
    pub url: DatabaseUrl,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// Base URL payers and merchants use; `checkout_url` is `{public_url}/checkout/{id}`.
    pub public_url: String,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub ready_max_lag_blocks: u64,
    /// Failed authentications a client address may make per minute (as a burst, refilled evenly);
    /// past them its requests are answered 429 without a key lookup.
    pub auth_failures_per_minute: u32,
    /// A request's head (request line and headers) must arrive within this many seconds of the
    /// connection starting to wait for it.
    pub header_read_timeout_secs: u64,
    /// A request's body must arrive in full within this many seconds of its head (408 otherwise).
    pub body_read_timeout_secs: u64,
    /// A connection with no request in flight that sends nothing for this long is closed.
    pub idle_timeout_secs: u64,
    /// Connections served at once; more wait to be accepted. Lowered at start to fit the
    /// process's open-file limit.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainsSettings {
    pub dir: PathBuf,
    pub enabled: Vec<String>,
    pub default_chain: String,
    pub default_asset: String,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletSettings {
    pub mnemonic: Option<SecretString>,
    pub mnemonic_file: Option<PathBuf>,
    /// For a process without the settler (issue 21): the extended public key at
    /// `m/44'/60'/0'/0`, from which deposit addresses are derived without the mnemonic.
    pub xpub: Option<String>,
    /// The path of `xpub`; only `m/44'/60'/0'/0` is accepted (stated so a config says what it holds).
    pub xpub_path: Option<String>,
    /// The treasury's address, which a process without the mnemonic cannot derive (payouts name it).
    pub treasury_address: Option<String>,
    /// The key webhook signing secrets are sealed with (64 hex digits; `depositd wallet web-keys`).
    pub sealing_key: Option<SecretString>,
    /// The key payment sessions are signed with (64 hex digits; `depositd wallet web-keys`).
    pub session_key: Option<SecretString>,
}

impl std::fmt::Debug for WalletSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SecretString already redacts; say which source is configured, nothing more.
        f.debug_struct("WalletSettings")
            .field("mnemonic", &self.mnemonic.as_ref().map(|_| "[REDACTED]"))
            .field("mnemonic_file", &self.mnemonic_file)
            .field("xpub", &self.xpub.as_ref().map(|_| "[set]"))
            .field("xpub_path", &self.xpub_path)
            .field("treasury_address", &self.treasury_address)
            .field("sealing_key", &self.sealing_key.as_ref().map(|_| "[REDACTED]"))
            .field("session_key", &self.session_key.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl WalletSettings {
    /// The mnemonic when one is configured (`None` for a process run from `xpub`).
    pub fn mnemonic_if_any(&self) -> Result<Option<SecretString>, ConfigError> {
        if self.mnemonic.is_none() && self.mnemonic_file.is_none() {
            return Ok(None);
        }
        self.mnemonic().map(Some)
    }

    /// The mnemonic from `wallet.mnemonic` or `wallet.mnemonic_file`; exactly one must be set.
    pub fn mnemonic(&self) -> Result<SecretString, ConfigError> {
        match (&self.mnemonic, &self.mnemonic_file) {
            (Some(m), None) => Ok(m.clone()),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map(|s| SecretString::from(s.trim().to_owned())).map_err(|e| {
                    ConfigError::Invalid(vec![format!("wallet.mnemonic_file: cannot read {}: {e}", path.display())])
                })
            }
            (Some(_), Some(_)) => {
                Err(ConfigError::Invalid(vec!["wallet: set either mnemonic or mnemonic_file, not both".into()]))
            }
            (None, None) => Err(ConfigError::Invalid(vec![
                "wallet: no hot-wallet mnemonic; set DEPOSITD__WALLET__MNEMONIC or wallet.mnemonic_file".into(),
            ])),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingSettings {
    pub max_rate_age_secs: u64,
    pub usd_pegged: Vec<String>,
    /// Price of one unit of a currency or asset in USD. Keys are upper-cased on load.
    #[serde(deserialize_with = "decimal_map")]
    pub static_usd_rates: BTreeMap<String, Decimal>,
    /// Optional HTTP price feed: `GET` answers `{"timestamp": <epoch s>, "rates": {"EUR": "1.08", ...}}`.
    pub feed_url: Option<String>,
    pub feed_refresh_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceSettings {
    pub default_expires_in_ms: u64,
    pub max_expires_in_ms: u64,
    #[serde(deserialize_with = "decimal")]
    pub min_amount: Decimal,
    #[serde(deserialize_with = "decimal")]
    pub max_amount: Decimal,
    pub customer_rate_limit_per_minute: u32,
    pub allow_http_urls: bool,
    /// Invoice addresses kept derived ahead of time (0 = derive each at creation).
    pub address_pool_size: u64,
    /// The payment options an invoice gets when its request names none (nor a `chain` or an
    /// `asset`); options on chains of the other key mode are left out. Empty: one way, as before.
    #[serde(default)]
    pub default_payment_options: Vec<DefaultPaymentOption>,
}

/// One entry of `invoices.default_payment_options`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DefaultPaymentOption {
    /// Default: as for an invoice that names no chain.
    #[serde(default)]
    pub chain: Option<String>,
    pub asset: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// Seconds between the daemon's reconciliations; 0 = never.
    pub verify_interval_secs: u64,
    /// Whether reconciliation reads on-chain balances too.
    pub verify_on_chain: bool,
    /// Per asset symbol (on every chain), in whole units: how much money the deposit addresses
    /// may hold beyond what the ledger explains before reconciliation fails. An asset not listed
    /// has none: any unexplained amount fails.
    #[serde(deserialize_with = "decimal_map")]
    pub unexplained_dust: BTreeMap<String, Decimal>,
}

impl LedgerSettings {
    /// The dust allowance for `asset` in base units (symbols match case-insensitively).
    pub fn unexplained_dust(&self, asset: &str, decimals: u8) -> crate::money::BaseUnits {
        self.unexplained_dust
            .iter()
            .find(|(symbol, _)| symbol.eq_ignore_ascii_case(asset))
            .and_then(|(_, dust)| crate::money::BaseUnits::from_decimal_round_down(*dust, decimals).ok())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Endpoints may be plain http (dev only).
    pub allow_http: bool,
    /// Endpoints may resolve to loopback, private and link-local addresses (dev only).
    pub allow_private_targets: bool,
    /// Seconds before each retry; its length is the number of retries.
    pub retry_schedule_secs: Vec<u64>,
    pub request_timeout_secs: u64,
    pub secret_rotation_grace_secs: u64,
    pub concurrency: u32,
    pub poll_interval_ms: u64,
}

/// How the mailer talks to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the same host or network only).
    None,
    /// Plain connection upgraded with STARTTLS, refused when the server cannot (submission, 587).
    Starttls,
    /// TLS from the first byte (SMTPS, 465).
    Tls,
}

/// `[smtp]`: the server receipts and notifications go through. Only a process with it queues
/// e-mails (`crate::notify`), and only one running the `mail` component sends them.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    #[serde(default = "SmtpSettings::default_port")]
    pub port: u16,
    #[serde(default = "SmtpSettings::default_tls")]
    pub tls: SmtpTls,
    /// Credentials, both or neither (best given through `DEPOSITD__SMTP__PASSWORD`).
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// The sender, `receipts@shop.example` or `Shop <receipts@shop.example>`.
    pub from: String,
    /// How long one SMTP conversation may take.
    #[serde(default = "SmtpSettings::default_timeout_secs")]
    pub timeout_secs: u64,
    /// Seconds before each retry; its length is the number of retries.
    #[serde(default = "SmtpSettings::default_retry_schedule_secs")]
    pub retry_schedule_secs: Vec<u64>,
    /// How often the mailer looks for e-mails queued by other processes or due for a retry.
    #[serde(default = "SmtpSettings::default_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

impl SmtpSettings {
    fn default_port() -> u16 {
        587
    }
    fn default_tls() -> SmtpTls {
        SmtpTls::Starttls
    }
    fn default_timeout_secs() -> u64 {
        30
    }
    fn default_retry_schedule_secs() -> Vec<u64> {
        vec![10, 60, 300, 1800, 7200, 21600]
    }
    fn default_poll_interval_ms() -> u64 {
        1000
    }

    /// What is wrong with these settings, worded for the operator.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.host.trim().is_empty() {
            problems.push("smtp.host: must not be empty".into());
        }
        if self.port == 0 {
            problems.push("smtp.port: must be greater than 0".into());
        }
        if self.username.is_some() != self.password.is_some() {
            problems.push("smtp.username and smtp.password: give both or neither".into());
        }
        let address = match (self.from.rfind('<'), self.from.ends_with('>')) {
            (Some(open), true) => &self.from[open + 1..self.from.len() - 1],
            _ => self.from.as_str(),
        };
        if !crate::notify::is_email_address(address) || self.from.chars().any(char::is_control) {
            problems.push(format!("smtp.from: `{}` is not an e-mail address (name@example.com)", self.from));
        }
        if self.timeout_secs == 0 || self.poll_interval_ms == 0 {
            problems.push("smtp.timeout_secs and smtp.poll_interval_ms: must be at least 1".into());
        }
        if self.retry_schedule_secs.is_empty() {
            problems.push("smtp.retry_schedule_secs: give at least one retry delay".into());
        }
        problems
    }
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("from", &self.from)
            .field("timeout_secs", &self.timeout_secs)
            .field("retry_schedule_secs", &self.retry_schedule_secs)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlerSettings {
    /// How often each chain's settler plans, signs, broadcasts and checks its transactions.
    pub poll_interval_ms: u64,
    /// A transaction not mined this many blocks after its broadcast is replaced with higher fees.
    pub bump_after_blocks: u64,
    /// A transaction not mined this many seconds after it was planned is reported as stalled
    /// (`depositd_settler_stalled_transactions{reason}`) and logged as an error.
    pub stall_alert_secs: u64,
    /// How much each replacement raises both fees, in percent (at least 10: nodes refuse less).
    pub bump_percent: u64,
    /// The highest `max_fee_per_gas` (wei, an integer string) any transaction may bid.
    #[serde(deserialize_with = "integer_string")]
    pub max_fee_per_gas_cap: u128,
    /// A transaction's gas budget is this many times the fee it is first signed with (capped by
    /// `max_fee_per_gas_cap`): what a payout reserves and a gas top-up sends, so bumps are covered.
    pub fee_budget_multiplier: u64,
    /// A payout is refused (503) when the settler's last fee reading is older than this.
    pub fee_estimate_max_age_secs: u64,
    /// The smallest amount (whole units, by asset symbol) worth sweeping from a deposit address;
    /// assets not listed are swept whenever their value exceeds the sweep's gas.
    #[serde(deserialize_with = "decimal_map")]
    pub sweep_min: BTreeMap<String, Decimal>,
}

impl Config {
    /// Loads and validates the configuration. `database_url` (from `--database-url` or
    /// `DATABASE_URL`) overrides every other source of `database.url`.
    pub fn load(file: Option<&Path>, database_url: Option<&str>) -> Result<Config, ConfigError> {
        let settings = Settings::load(file, database_url)?;
        let chains = settings.load_chains()?;
        let config = Config { settings, chains };
        config.validate()?;
        Ok(config)
    }

    /// What is wrong with `invoices.default_payment_options`: each entry's chain enabled (default:
    /// `chains.default_chain`) and its asset on that chain, no pair twice, at most 10 entries
    /// (none is allowed: invoices are then payable one way).
    fn default_payment_options_problems(&self) -> Vec<String> {
        const SETTING: &str = "invoices.default_payment_options";
        let s = &self.settings;
        let options = &s.invoices.default_payment_options;
        let mut problems = Vec::new();
        if options.len() > 10 {
            problems.push(format!("{SETTING}: at most 10 entries ({} given)", options.len()));
        }
        let mut seen: Vec<(u64, String)> = Vec::new();
        for (i, option) in options.iter().enumerate() {
            let name = option.chain.as_deref().unwrap_or(&s.chains.default_chain);
            let Some(chain) = self.chain(name) else {
                problems.push(format!(
                    "{SETTING}[{i}].chain: `{name}` is not one of the enabled chains {:?}",
                    s.chains.enabled
                ));
                continue;
            };
            let Some(asset) = chain.asset(&option.asset) else {
                problems.push(format!(
                    "{SETTING}[{i}].asset: chain `{}` has no asset `{}` (it has {})",
                    chain.name,
                    option.asset,
                    chain.asset_symbols().join(", ")
                ));
                continue;
            };
            let pair = (chain.chain_id, asset.symbol.to_owned());
            if seen.contains(&pair) {
                problems.push(format!("{SETTING}[{i}]: {} on {} is listed twice", pair.1, chain.name));
            } else {
                seen.push(pair);
            }
        }
        problems
    }

    pub fn chain(&self, name: &str) -> Option<&ChainConfig> {
        self.chains.iter().find(|c| c.name == name)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.settings;
        let mut problems = Vec::new();
        let scheme = s.database.url.scheme();
        if scheme.is_empty() {
            problems
                .push(format!("database.url: {} is not a URL (use sqlite://PATH or postgres://...)", s.database.url));
        } else if !matches!(scheme.as_str(), "sqlite" | "postgres" | "postgresql") {
            problems.push(format!(
                "database.url: unsupported scheme `{scheme}` in {} (use sqlite://PATH or postgres://...)",
                s.database.url
            ));
        }
        if s.invoices.address_pool_size > 100_000 {
            problems.push("invoices.address_pool_size: at most 100000".into());
        }
        if s.webhooks.retry_schedule_secs.is_empty() {
            problems.push("webhooks.retry_schedule_secs: give at least one retry delay".into());
        }
        if s.webhooks.request_timeout_secs == 0 || s.webhooks.concurrency == 0 || s.webhooks.poll_interval_ms == 0 {
            problems.push(
                "webhooks.request_timeout_secs, webhooks.concurrency and webhooks.poll_interval_ms must be at least 1"
                    .into(),
            );
        }
        if s.settler.bump_percent < 10 {
            problems.push("settler.bump_percent: must be at least 10 (nodes refuse smaller replacements)".into());
        }
        if s.settler.fee_budget_multiplier < 1 || s.settler.poll_interval_ms == 0 {
            problems.push("settler.fee_budget_multiplier and settler.poll_interval_ms: must be at least 1".into());
        }
        if s.settler.max_fee_per_gas_cap == 0 {
            problems.push("settler.max_fee_per_gas_cap: must be greater than 0".into());
        }
        if s.database.max_connections == 0 {
            problems.push("database.max_connections: must be at least 1".into());
        }
        if let Some(smtp) = &s.smtp {
            problems.extend(smtp.problems());
        }
        if !(s.api.public_url.starts_with("http://") || s.api.public_url.starts_with("https://")) {
            problems.push(format!("api.public_url: `{}` must start with http:// or https://", s.api.public_url));
        }
        if s.api.rate_limit_per_second == 0 || s.api.rate_limit_burst == 0 {
            problems.push("api.rate_limit_per_second and api.rate_limit_burst: must be at least 1".into());
        }
        if s.api.auth_failures_per_minute == 0 {
            problems.push("api.auth_failures_per_minute: must be at least 1".into());
        }
        if s.api.header_read_timeout_secs == 0 || s.api.body_read_timeout_secs == 0 || s.api.idle_timeout_secs == 0 {
            problems.push(
                "api.header_read_timeout_secs, api.body_read_timeout_secs and api.idle_timeout_secs: must be at least 1"
                    .into(),
            );
        }
        if s.api.max_connections == 0 {
            problems.push("api.max_connections: must be at least 1".into());
        }
        if s.invoices.customer_rate_limit_per_minute == 0 {
            problems.push("invoices.customer_rate_limit_per_minute: must be at least 1".into());
        }
        if s.chains.enabled.is_empty() {
            problems.push("chains.enabled: at least one chain must be enabled".into());
        }
        match self.chain(&s.chains.default_chain) {
            None => problems.push(format!(
                "chains.default_chain: `{}` is not one of the enabled chains {:?}",
                s.chains.default_chain, s.chains.enabled
            )),
            Some(chain) if chain.payable_asset(&s.chains.default_asset).is_none() => problems.push(format!(
                "chains.default_asset: chain `{}` takes no payments in `{}` (it takes {}; a native coin only with \
                 native_deposits on)",
                chain.name,
                s.chains.default_asset,
                chain.payable_symbols().join(", ")
            )),
            Some(_) => {}
        }
        problems.extend(self.default_payment_options_problems());
        if let Some(url) = &s.pricing.feed_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            problems.push(format!("pricing.feed_url: `{url}` must be an http(s) URL"));
        }
        if s.pricing.feed_refresh_secs == 0 || s.pricing.feed_refresh_secs >= s.pricing.max_rate_age_secs {
            problems.push("pricing.feed_refresh_secs: must be at least 1 and below pricing.max_rate_age_secs".into());
        }
        for (symbol, rate) in &s.pricing.static_usd_rates {
            if *rate <= Decimal::ZERO {
                problems.push(format!("pricing.static_usd_rates.{symbol}: must be greater than 0"));
            }
        }
        let inv = &s.invoices;
        if inv.min_amount <= Decimal::ZERO || inv.min_amount > inv.max_amount {
            problems.push("invoices.min_amount: must be greater than 0 and at most invoices.max_amount".into());
        }
        if inv.default_expires_in_ms == 0 || inv.default_expires_in_ms > inv.max_expires_in_ms {
            problems.push("invoices.default_expires_in_ms: must be between 1 and invoices.max_expires_in_ms".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }
}

impl Settings {
    fn load(file: Option<&Path>, database_url: Option<&str>) -> Result<Settings, ConfigError> {
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!("configuration file {} does not exist", path.display())));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("DEPOSITD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("chains.enabled")
                .with_list_parse_key("pricing.usd_pegged"),
        );
        if let Some(url) = database_url {
            builder = builder.set_override("database.url", url).map_err(|e| ConfigError::Load(e.to_string()))?;
        }
        let raw = builder.build().map_err(|e| ConfigError::Load(one_line(&e.to_string())))?;
        let mut settings: Settings = raw.try_deserialize().map_err(|e| ConfigError::Load(one_line(&e.to_string())))?;
        settings.pricing.static_usd_rates = std::mem::take(&mut settings.pricing.static_usd_rates)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        settings.pricing.usd_pegged.iter_mut().for_each(|s| s.make_ascii_uppercase());
        Ok(settings)
    }

    fn load_chains(&self) -> Result<Vec<ChainConfig>, ConfigError> {
        let mut chains: Vec<ChainConfig> = Vec::new();
        for name in &self.chains.enabled {
            let path = self.chains.dir.join(format!("{name}.toml"));
            let chain = ChainConfig::load(&path)?;
            if chains.iter().any(|c| c.chain_id == chain.chain_id) {
                return Err(ConfigError::ChainFile {
                    path,
                    message: format!("chain_id {} is already used by another enabled chain", chain.chain_id),
                });
            }
            chains.push(chain);
        }
        Ok(chains)
    }
}

/// Parser errors quote the offending source in a multi-line snippet; an operator's terminal and
/// log lines want one line: keep the position and the reason, drop the snippet.
fn one_line(message: &str) -> String {
    let is_snippet = |line: &str| {
        let t = line.trim_start();
        t.starts_with('|')
            || t.split_once(" |").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    message.lines().map(str::trim).filter(|l| !l.is_empty() && !is_snippet(l)).collect::<Vec<_>>().join(": ")
}

/// Decimals are written as strings (`"1.08"`) or integers; a float would already have lost
/// exactness on its way through the TOML parser, so it is refused.
pub(crate) fn parse_decimal_value(value: &toml::Value) -> Result<Decimal, String> {
    match value {
        toml::Value::String(s) => {
            s.trim().parse::<Decimal>().map_err(|e| format!("`{s}` is not a decimal number: {e}"))
        }
        toml::Value::Integer(i) => Ok(Decimal::from(*i)),
        toml::Value::Float(f) => Err(format!("{f} is a float; write exact decimals as strings, e.g. \"{f}\"")),
        other => Err(format!("expected a decimal string, found {}", other.type_str())),
    }
}

fn decimal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let value = toml::Value::deserialize(d)?;
    parse_decimal_value(&value).map_err(serde::de::Error::custom)
}

fn decimal_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Decimal>, D::Error> {
    let raw = BTreeMap::<String, toml::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            parse_decimal_value(&v).map(|d| (k.clone(), d)).map_err(|e| serde::de::Error::custom(format!("{k}: {e}")))
        })
        .collect()
}

/// A non-negative integer given as a string of digits (wei do not fit TOML's 64-bit integers)
/// or as a TOML integer.
fn integer_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => {
            s.trim().parse::<u128>().map_err(|_| serde::de::Error::custom(format!("`{s}` is not a whole number")))
        }
        toml::Value::Integer(i) if i >= 0 => Ok(i as u128),
        other => Err(serde::de::Error::custom(format!("expected a whole number as a string, found {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_default_payment_options_are_load_errors_naming_the_setting() {
        // The built-in defaults (the dev chain, whose only asset is its native ETH).
        let mut settings = Settings::load(None, Some("sqlite://unused.db")).unwrap();
        settings.chains.dir = "../chains".into();
        let chains = settings.load_chains().unwrap();
        let mut config = Config { settings, chains };
        let option = |chain: Option<&str>, asset: &str| DefaultPaymentOption {
            chain: chain.map(str::to_owned),
            asset: asset.into(),
        };
        let problems = |config: &mut Config, options: Vec<DefaultPaymentOption>| {
            config.settings.invoices.default_payment_options = options;
            match config.validate() {
                Ok(()) => Vec::new(),
                Err(ConfigError::Invalid(problems)) => problems,
                Err(other) => panic!("{other}"),
            }
        };
        assert_eq!(problems(&mut config, vec![]), Vec::<String>::new());
        assert_eq!(problems(&mut config, vec![option(Some("anvil"), "ETH")]), Vec::<String>::new());
        let bad = problems(&mut config, vec![option(Some("mars"), "ETH")]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].starts_with("invoices.default_payment_options[0].chain: `mars`"), "{bad:?}");
        let bad = problems(&mut config, vec![option(None, "ETH"), option(None, "DOGE")]);
        assert!(bad[0].starts_with("invoices.default_payment_options[1].asset: chain `anvil` has no asset `DOGE`"));
        let bad = problems(&mut config, vec![option(None, "ETH"), option(Some("anvil"), "eth")]);
        assert_eq!(bad, vec!["invoices.default_payment_options[1]: ETH on anvil is listed twice".to_owned()]);
        let bad = problems(&mut config, (0..11).map(|_| option(None, "ETH")).collect());
        assert!(bad[0].starts_with("invoices.default_payment_options: at most 10 entries (11 given)"), "{bad:?}");
    }

    #[test]
    fn the_smtp_password_never_shows_in_debug() {
        let settings = super::SmtpSettings {
            host: "mail.example".into(),
            port: 587,
            tls: super::SmtpTls::Starttls,
            username: Some("u".into()),
            password: Some("SmtpPwDebug81c3".to_owned().into()),
            from: "a@shop.example".into(),
            timeout_secs: 30,
            retry_schedule_secs: vec![1],
            poll_interval_ms: 1000,
        };
        let shown = format!("{settings:?} {settings:#?}");
        assert!(!shown.contains("SmtpPwDebug81c3") && shown.contains("[REDACTED]"), "{shown}");
        assert!(settings.problems().is_empty(), "{:?}", settings.problems());
    }

    #[test]
    fn parser_snippets_fold_into_one_line() {
        let message = "TOML parse error at line 1, column 6\n  |\n1 | this is not toml\n  |      ^\nkey with no value, expected `=`\n in bad.toml";
        assert_eq!(
            super::one_line(message),
            "TOML parse error at line 1, column 6: key with no value, expected `=`: in bad.toml"
        );
    }
}
