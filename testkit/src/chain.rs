//! A test chain: anvil with the test tokens deployed, a payer holding them, and typed ways to pay,
//! mine and read balances. Its methods panic on failure: they are for tests, where a chain that
//! refuses a payment is a failed test, not an error to handle.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use anyhow::Context;

use crate::anvil::{self, Anvil, AnvilOptions, DEV_ACCOUNT_0_KEY, DEV_ACCOUNT_1_KEY};
use crate::tokens::{self, DECIMALS, PAYER_MINT, TestToken};

/// Where a payment goes: an address, or its text as the API shows it (`pay.address`).
pub trait Recipient {
    fn address(&self) -> Address;
}

impl Recipient for Address {
    fn address(&self) -> Address {
        *self
    }
}

impl Recipient for &Address {
    fn address(&self) -> Address {
        **self
    }
}

impl Recipient for &str {
    fn address(&self) -> Address {
        self.parse().unwrap_or_else(|e| panic!("{self:?} is not an address: {e}"))
    }
}

impl Recipient for &String {
    fn address(&self) -> Address {
        self.as_str().address()
    }
}

/// anvil with test tokens. anvil's account 0 deployed them (and owns them); the payer (account 1)
/// and any other holders named at the start hold what was minted to them.
pub struct TestChain {
    pub anvil: Anvil,
    /// The deployed tokens, in the order they were asked for.
    pub tokens: Vec<Address>,
}

impl TestChain {
    /// anvil mining each transaction at once, with `tokens` (name, symbol) deployed (6 decimals)
    /// and [`PAYER_MINT`] of each minted to the payer.
    pub async fn start(tokens: &[(&str, &str)]) -> anyhow::Result<TestChain> {
        Self::start_with(AnvilOptions::default(), tokens, &[payer_address()], U256::from(PAYER_MINT)).await
    }

    /// anvil started with `options`, with `tokens` deployed and `mint` of each minted to every
    /// one of `holders`.
    pub async fn start_with(
        options: AnvilOptions,
        tokens: &[(&str, &str)],
        holders: &[Address],
        mint: U256,
    ) -> anyhow::Result<TestChain> {
        let mut chain = Self::launch(options).await?;
        for (name, symbol) in tokens {
            chain.deploy_token(name, symbol, holders, mint).await?;
        }
        Ok(chain)
    }

    /// anvil started with `options`, no tokens yet.
    pub async fn launch(options: AnvilOptions) -> anyhow::Result<TestChain> {
        let anvil = Anvil::spawn(options)
            .await
            .context("anvil does not start (run `npm install` in the repository root, or set ANVIL_BIN)")?;
        Ok(TestChain { anvil, tokens: Vec::new() })
    }

    /// Deploys a test token (6 decimals) from anvil's account 0, mints `mint` to each of
    /// `holders`, and adds it to [`TestChain::tokens`].
    pub async fn deploy_token(
        &mut self,
        name: &str,
        symbol: &str,
        holders: &[Address],
        mint: U256,
    ) -> anyhow::Result<Address> {
        let address =
            tokens::deploy_and_mint(&self.rpc_url(), DEV_ACCOUNT_0_KEY, name, symbol, DECIMALS, holders, mint).await?;
        self.tokens.push(address);
        Ok(address)
    }

    pub fn rpc_url(&self) -> String {
        self.anvil.rpc_url()
    }

    pub fn ws_url(&self) -> String {
        self.anvil.ws_url()
    }

    /// A read-only provider.
    pub fn provider(&self) -> impl Provider + Clone {
        ProviderBuilder::new().connect_http(self.rpc_url().parse().expect("anvil's URL parses"))
    }

    /// A provider that signs as the payer.
    pub fn payer(&self) -> impl Provider + Clone {
        self.wallet(DEV_ACCOUNT_1_KEY.parse().expect("the payer's key parses"))
    }

    /// A provider that signs as `signer`.
    pub fn wallet(&self, signer: PrivateKeySigner) -> impl Provider + Clone {
        ProviderBuilder::new().wallet(signer).connect_http(self.rpc_url().parse().expect("anvil's URL parses"))
    }

    /// One JSON-RPC call (anvil's own methods too); panics on an error answer.
    pub async fn rpc(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        anvil::call(&self.rpc_url(), method, params).await.unwrap_or_else(|e| panic!("anvil: {e:#}"))
    }

    /// Mines `blocks` empty blocks.
    pub async fn mine(&self, blocks: u64) {
        self.rpc("anvil_mine", serde_json::json!([blocks])).await;
    }

    /// The payer sends `base_units` of `token` to `to`; returns the mined transaction's hash.
    pub async fn pay_token(&self, token: Address, to: impl Recipient, base_units: u64) -> B256 {
        tokens::transfer(&self.payer(), token, to.address(), U256::from(base_units))
            .await
            .unwrap_or_else(|e| panic!("the payer's token transfer: {e:#}"))
    }

    /// The payer sends `wei` of the native coin to `to`; returns the mined transaction's hash.
    pub async fn pay_native(&self, to: impl Recipient, wei: u128) -> B256 {
        let request = TransactionRequest::default().with_to(to.address()).with_value(U256::from(wei));
        let receipt = self
            .payer()
            .send_transaction(request)
            .await
            .expect("the native transfer is sent")
            .get_receipt()
            .await
            .expect("the native transfer is mined");
        assert!(receipt.status(), "the native transfer reverted");
        receipt.transaction_hash
    }

    /// `owner`'s balance of `token`, in base units.
    pub async fn token_balance(&self, token: Address, owner: Address) -> U256 {
        TestToken::new(token, self.provider()).balanceOf(owner).call().await.expect("balanceOf answers")
    }

    /// `owner`'s balance of the native coin, in wei.
    pub async fn native_balance(&self, owner: Address) -> U256 {
        self.provider().get_balance(owner).await.expect("eth_getBalance answers")
    }
}

/// The payer: anvil's account 1.
pub fn payer_address() -> Address {
    DEV_ACCOUNT_1_KEY.parse::<PrivateKeySigner>().expect("the payer's key parses").address()
}
