//! The test ERC-20 (`contracts/TestToken.sol`), embedded from its compiled artifact so building
//! depositd never needs solc.

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use anyhow::Context;

alloy::sol!(
    #[sol(rpc)]
    TestToken,
    "contracts/build/TestToken.json"
);

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

/// Whether contract code exists at `address` (a previously deployed token survived a restart).
pub async fn has_code(rpc_url: &str, address: Address) -> anyhow::Result<bool> {
    let provider = ProviderBuilder::new().connect_http(rpc_url.parse()?);
    Ok(!provider.get_code_at(address).await?.is_empty())
}
