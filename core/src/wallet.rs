//! The hot wallet's HD key tree (BIP-32/39/44), derived from the operator's mnemonic.
//!
//! - Deposit addresses: `m/44'/60'/0'/0/i`, one fresh index per invoice or static address
//!   (the index is allocated by the store, so an address is never handed out twice).
//! - Treasury (the hot wallet proper): `m/44'/60'/1'/0/0`, a separate account, so no deposit
//!   index can ever collide with it.
//!
//! The hardened part of each path is derived once at start-up; a deposit address is then one
//! public-key child derivation. Nothing here implements `Debug` in a way that shows key material.

use std::fmt;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use coins_bip32::prelude::{Parent, XPriv, XPub};
use coins_bip39::{English, Mnemonic};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

const DEPOSIT_ACCOUNT_PATH: &str = "m/44'/60'/0'/0";
const TREASURY_PATH: &str = "m/44'/60'/1'/0/0";

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// Deliberately vague: the phrase (or a word of it) must not end up in a log.
    #[error("the hot-wallet mnemonic is not a valid BIP-39 English phrase")]
    InvalidMnemonic,
    #[error("deposit address index {0} is out of range (non-hardened BIP-32 indices stop at 2^31-1)")]
    IndexOutOfRange(u64),
    #[error("key derivation failed: {0}")]
    Derivation(String),
}

/// Keys derived from the mnemonic. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct HdWallet {
    deposit_account: XPriv,
    deposit_account_pub: XPub,
    treasury: PrivateKeySigner,
}

impl fmt::Debug for HdWallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HdWallet").field("treasury", &self.treasury.address()).finish_non_exhaustive()
    }
}

impl HdWallet {
    pub fn from_mnemonic(phrase: &SecretString) -> Result<HdWallet, WalletError> {
        let normalized = phrase.expose_secret().split_whitespace().collect::<Vec<_>>().join(" ");
        let mnemonic = Mnemonic::<English>::new_from_phrase(&normalized).map_err(|_| WalletError::InvalidMnemonic)?;
        let deposit_account =
            mnemonic.derive_key(DEPOSIT_ACCOUNT_PATH, None).map_err(|e| WalletError::Derivation(e.to_string()))?;
        let treasury_key =
            mnemonic.derive_key(TREASURY_PATH, None).map_err(|e| WalletError::Derivation(e.to_string()))?;
        let treasury_signing_key: &coins_bip32::ecdsa::SigningKey = treasury_key.as_ref();
        Ok(HdWallet {
            deposit_account_pub: deposit_account.verify_key(),
            deposit_account,
            treasury: PrivateKeySigner::from_signing_key(treasury_signing_key.clone()),
        })
    }

    /// A new random 24-word mnemonic (256 bits of entropy from the OS), for `depositd dev`.
    pub fn generate_mnemonic() -> SecretString {
        let mut entropy = [0u8; 32];
        rand::rng().fill_bytes(&mut entropy);
        let mnemonic = Mnemonic::<English>::new_from_entropy(entropy.into());
        SecretString::from(mnemonic.to_phrase())
    }

    /// The deposit address at `m/44'/60'/0'/0/index`.
    pub fn deposit_address(&self, index: u64) -> Result<Address, WalletError> {
        let child = self
            .deposit_account_pub
            .derive_child(non_hardened(index)?)
            .map_err(|e| WalletError::Derivation(e.to_string()))?;
        let key: &coins_bip32::ecdsa::VerifyingKey = child.as_ref();
        Ok(Address::from_public_key(key))
    }

    /// The signer for the deposit address at `index` (sweeps and pass-through settlement).
    pub fn deposit_signer(&self, index: u64) -> Result<PrivateKeySigner, WalletError> {
        let child = self
            .deposit_account
            .derive_child(non_hardened(index)?)
            .map_err(|e| WalletError::Derivation(e.to_string()))?;
        let key: &coins_bip32::ecdsa::SigningKey = child.as_ref();
        Ok(PrivateKeySigner::from_signing_key(key.clone()))
    }

    /// A 32-byte key for signing payment sessions, derived one-way from the deposit account key:
    /// every daemon sharing the mnemonic agrees on it, and it reveals nothing about the keys.
    pub fn session_key(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let key: &coins_bip32::ecdsa::SigningKey = self.deposit_account.as_ref();
        let mut hasher = Sha256::new();
        hasher.update(b"depositd/payment-session/v1");
        hasher.update(key.to_bytes());
        hasher.finalize().into()
    }

    /// The key that encrypts webhook signing secrets at rest, derived like [`Self::session_key`]
    /// (every daemon with the same mnemonic can read what another stored).
    pub fn webhook_secrets_key(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let key: &coins_bip32::ecdsa::SigningKey = self.deposit_account.as_ref();
        let mut hasher = Sha256::new();
        hasher.update(b"depositd/webhook-secrets/v1");
        hasher.update(key.to_bytes());
        hasher.finalize().into()
    }

    /// The treasury (hot wallet) signer, on its own account path.
    pub fn treasury(&self) -> &PrivateKeySigner {
        &self.treasury
    }
}

fn non_hardened(index: u64) -> Result<u32, WalletError> {
    u32::try_from(index).ok().filter(|i| *i < coins_bip32::BIP32_HARDEN).ok_or(WalletError::IndexOutOfRange(index))
}

#[cfg(test)]
mod tests {
    use alloy::signers::local::{MnemonicBuilder, coins_bip39::English as AlloyEnglish};

    use super::*;

    /// The well-known test mnemonic (anvil's default accounts).
    const TEST_PHRASE: &str = "test test test test test test test test test test test junk";

    #[test]
    fn deposit_addresses_match_standard_bip44_derivation() {
        let wallet = HdWallet::from_mnemonic(&SecretString::from(TEST_PHRASE)).unwrap();
        // anvil's account 0 is m/44'/60'/0'/0/0 of this phrase.
        assert_eq!(
            wallet.deposit_address(0).unwrap(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".parse::<Address>().unwrap()
        );
        for index in [1u32, 7, 1000] {
            let reference = MnemonicBuilder::<AlloyEnglish>::default()
                .phrase(TEST_PHRASE)
                .derivation_path(format!("m/44'/60'/0'/0/{index}"))
                .unwrap()
                .build()
                .unwrap();
            assert_eq!(wallet.deposit_address(index as u64).unwrap(), reference.address());
            assert_eq!(wallet.deposit_signer(index as u64).unwrap().address(), reference.address());
        }
        assert_ne!(wallet.treasury().address(), wallet.deposit_address(0).unwrap());
    }

    #[test]
    fn refuses_bad_input_without_echoing_it() {
        let err = HdWallet::from_mnemonic(&SecretString::from("correct horse battery staple")).unwrap_err();
        assert!(!err.to_string().contains("horse"));
        let wallet = HdWallet::from_mnemonic(&HdWallet::generate_mnemonic()).unwrap();
        assert!(matches!(wallet.deposit_address(1 << 31), Err(WalletError::IndexOutOfRange(_))));
        assert!(!format!("{wallet:?}").contains("XPriv"));
    }
}
