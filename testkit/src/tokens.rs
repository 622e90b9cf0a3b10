//! The test contracts (`contracts/`), embedded from their compiled artifacts so building never
//! needs solc: the test ERC-20 `TestToken` (deployed by `depositd dev`, the tests and the
//! benchmarks) and `OddTransferToken`, whose `Transfer` logs do not carry a single amount.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use anyhow::Context;

alloy::sol!(
    #[sol(rpc)]
    TestToken,
    "../contracts/build/TestToken.json"
);

alloy::sol!(
    #[sol(rpc)]
    OddTransferToken,
    "../contracts/build/OddTransferToken.json"
);

/// The test stablecoins' decimals, as USDC's and USDT's.
pub const DECIMALS: u8 = 6;
/// What the payer is minted of each test token: 1,000,000 tokens of 6 decimals.
pub const PAYER_MINT: u64 = 1_000_000_000_000;

/// Deploys a token from `deployer_key` and mints `mint_amount` base units to each of `holders`.
pub async fn deploy_and_mint(
    rpc_url: &str,
    deployer_key: &str,
    name: &str,
    symbol: &str,
    decimals: u8,
    holders: &[Address],
    mint_amount: U256,
) -> anyhow::Result<Address> {
    let signer: PrivateKeySigner = deployer_key.parse().context("invalid deployer key")?;
    let provider = ProviderBuilder::new().wallet(signer).connect_http(rpc_url.parse()?);
    let token = TestToken::deploy(&provider, name.to_owned(), symbol.to_owned(), decimals)
        .await
        .with_context(|| format!("cannot deploy the {symbol} test token"))?;
    for holder in holders {
        let receipt = token.mint(*holder, mint_amount).send().await?.get_receipt().await?;
        anyhow::ensure!(receipt.status(), "minting {symbol} to {holder} reverted");
    }
    Ok(*token.address())
}

/// Sends `amount` base units of `token` from `wallet`'s signer to `to` and waits for it to be
/// mined; a revert is an error. Returns the transaction's hash.
pub async fn transfer(wallet: &impl Provider, token: Address, to: Address, amount: U256) -> anyhow::Result<B256> {
    let receipt = TestToken::new(token, wallet).transfer(to, amount).send().await?.get_receipt().await?;
    anyhow::ensure!(receipt.status(), "the transfer of {amount} base units of {token} to {to} reverted");
    Ok(receipt.transaction_hash)
}

/// Whether contract code exists at `address` (a previously deployed token survived a restart).
pub async fn has_code(rpc_url: &str, address: Address) -> anyhow::Result<bool> {
    let provider = ProviderBuilder::new().connect_http(rpc_url.parse()?);
    Ok(!provider.get_code_at(address).await?.is_empty())
}
