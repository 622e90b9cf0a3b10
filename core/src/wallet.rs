//! The hot wallet's HD key tree (BIP-32/39/44), derived from the operator's mnemonic, or its
//! public half alone, from an extended public key.
//!
//! - Deposit addresses: `m/44'/60'/0'/0/i`, one fresh index per invoice or static address
//!   (the index is allocated by the store, so an address is never handed out twice).
//! - Treasury (the hot wallet proper): `m/44'/60'/1'/0/0`, a separate account, so no deposit
//!   index can ever collide with it.
//!
//! The hardened part of each path is derived once at start-up; a deposit address is then one
//! public-key child derivation, which is why a process that only hands out and watches addresses
//! (the API, the watcher, the webhook worker) can run from the xpub at `m/44'/60'/0'/0`
//! (`wallet.xpub`), the treasury's address and the two web keys, without the mnemonic (issue 21:
//! keys off the web tier). Only the settler signs; it needs the mnemonic.
//!
//! The web keys (the payment-session key and the key that seals webhook signing secrets) are
//! one-way derivations of the deposit account's private key: a process with the mnemonic derives
//! them, one without is given them (`depositd wallet web-keys` prints them). They never change
//! for a mnemonic, so secrets sealed before a deployment was split still open after.
//!
//! [`WalletIdentity`] is what every process compares with the database's record at start-up, so
//! an xpub the settler's mnemonic does not own is refused before any address is handed out.
//! Nothing here implements `Debug` in a way that shows key material.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use coins_bip32::enc::{MainnetEncoder, XKeyEncoder};
use coins_bip32::prelude::{Hint, Parent, XKeyInfo, XPriv, XPub};
use coins_bip39::{English, Mnemonic};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::config::WalletSettings;

/// Where deposit addresses are derived from: `wallet.xpub` is the extended public key at this path.
pub const DEPOSIT_ACCOUNT_PATH: &str = "m/44'/60'/0'/0";
const TREASURY_PATH: &str = "m/44'/60'/1'/0/0";
/// The depth of [`DEPOSIT_ACCOUNT_PATH`] in the tree (an xpub records its depth and index).
const DEPOSIT_ACCOUNT_DEPTH: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// Deliberately vague: the phrase (or a word of it) must not end up in a log.
    #[error("the hot-wallet mnemonic is not a valid BIP-39 English phrase")]
    InvalidMnemonic,
    #[error("deposit address index {0} is out of range (non-hardened BIP-32 indices stop at 2^31-1)")]
    IndexOutOfRange(u64),
    #[error("key derivation failed: {0}")]
    Derivation(String),
    /// A watch-only wallet (`wallet.xpub`) was asked to sign.
    #[error("this process has no mnemonic (it runs from wallet.xpub): it cannot sign")]
    WatchOnly,
    /// The wallet settings are incomplete or contradict each other; the message names the keys.
    #[error("wallet: {0}")]
    Settings(String),
    /// This process's keys are not the ones the database's addresses were derived from.
    #[error("{0}; refusing to start")]
    Mismatch(String),
}

/// The private half: only in a process that signs (the settler, and commands that sign).
#[derive(Clone)]
struct SigningKeys {
    deposit_account: XPriv,
    treasury: PrivateKeySigner,
}

/// The two 32-byte keys the web tier needs besides the xpub (see the module's header).
#[derive(Clone)]
struct WebKeys {
    session: [u8; 32],
    sealing: [u8; 32],
}

/// The hot wallet as one process knows it: always the public half (deposit addresses, the
/// treasury's address, the web keys), and the private keys when it was built from the mnemonic.
/// Cheap to clone; share one per process.
#[derive(Clone)]
pub struct HdWallet {
    deposit_account_pub: XPub,
    treasury_address: Address,
    web: WebKeys,
    /// `None` for a watch-only wallet, built from `wallet.xpub`.
    signing: Option<SigningKeys>,
    /// Deposit addresses derived lately, by index (see [`HdWallet::is_own_deposit_address`]).
    derived: Arc<Mutex<HashMap<u64, Address>>>,
}

/// Deposit addresses [`HdWallet`] remembers at most; past it, it forgets them all and starts over
/// (a pool refill derives at most `invoices.address_pool_size` at once).
const REMEMBERED_ADDRESSES: usize = 1 << 16;

impl fmt::Debug for HdWallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HdWallet")
            .field("treasury", &self.treasury_address)
            .field("signs", &self.signing.is_some())
            .finish_non_exhaustive()
    }
}

/// What identifies a deployment's wallet, recorded in the database by the first process that
/// starts on it (`store::wallet_identity`) and compared by every later one. All of it is public
/// or a one-way check value: the xpub, the treasury's address, and a hash of each web key.
#[derive(Clone, PartialEq, Eq)]
pub struct WalletIdentity {
    pub xpub: String,
    pub treasury_address: Address,
    pub sealing_key_check: String,
    pub session_key_check: String,
}

impl fmt::Debug for WalletIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The xpub links every deposit address to one owner: not for logs.
        f.debug_struct("WalletIdentity").field("treasury_address", &self.treasury_address).finish_non_exhaustive()
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
        let treasury = PrivateKeySigner::from_signing_key(treasury_signing_key.clone());
        let account_key: &coins_bip32::ecdsa::SigningKey = deposit_account.as_ref();
        let account_bytes = account_key.to_bytes();
        let web = WebKeys {
            session: tagged_hash(b"depositd/payment-session/v1", &account_bytes),
            sealing: tagged_hash(b"depositd/webhook-secrets/v1", &account_bytes),
        };
        Ok(HdWallet {
            deposit_account_pub: as_xpub_version(&deposit_account.verify_key()),
            treasury_address: treasury.address(),
            web,
            signing: Some(SigningKeys { deposit_account, treasury }),
            derived: Arc::default(),
        })
    }

    /// The wallet this process runs with: from the mnemonic when one is configured (and then
    /// every public setting given beside it must agree with it), else watch-only from
    /// `wallet.xpub`, `wallet.treasury_address`, `wallet.sealing_key` and `wallet.session_key`.
    /// `signs`: the process runs the settler, which needs the mnemonic.
    pub fn from_settings(settings: &WalletSettings, signs: bool) -> Result<HdWallet, WalletError> {
        if let Some(path) = &settings.xpub_path
            && path != DEPOSIT_ACCOUNT_PATH
        {
            return Err(WalletError::Settings(format!(
                "wallet.xpub_path is {path:?}; deposit addresses are derived at {DEPOSIT_ACCOUNT_PATH}/i, \
                 so the xpub must be the one at {DEPOSIT_ACCOUNT_PATH}"
            )));
        }
        let mnemonic = settings.mnemonic_if_any().map_err(|e| WalletError::Settings(e.to_string()))?;
        let Some(mnemonic) = mnemonic else {
            if signs {
                return Err(WalletError::Settings(
                    "the settler signs, so it needs the mnemonic: set DEPOSITD__WALLET__MNEMONIC or \
                     wallet.mnemonic_file (a process without the settler can run from wallet.xpub)"
                        .into(),
                ));
            }
            return HdWallet::watch_only(settings);
        };
        let wallet = HdWallet::from_mnemonic(&mnemonic)?;
        wallet.agrees_with(settings)?;
        Ok(wallet)
    }

    /// The public half alone, from the settings (see [`Self::from_settings`]).
    fn watch_only(settings: &WalletSettings) -> Result<HdWallet, WalletError> {
        let WalletSettings { xpub, treasury_address, sealing_key, session_key, .. } = settings;
        let Some(xpub) = xpub else {
            return Err(WalletError::Settings(
                "no hot-wallet mnemonic and no xpub; set DEPOSITD__WALLET__MNEMONIC or wallet.mnemonic_file, or \
                 (for a process without the settler) wallet.xpub, wallet.treasury_address, wallet.sealing_key \
                 and wallet.session_key (`depositd wallet xpub` and `depositd wallet web-keys` print them)"
                    .into(),
            ));
        };
        match (treasury_address, sealing_key, session_key) {
            (Some(treasury), Some(sealing), Some(session)) => {
                let wallet = HdWallet {
                    deposit_account_pub: parse_xpub(xpub)?,
                    treasury_address: parse_treasury(treasury)?,
                    web: WebKeys {
                        session: parse_key("wallet.session_key", session)?,
                        sealing: parse_key("wallet.sealing_key", sealing)?,
                    },
                    signing: None,
                    derived: Arc::default(),
                };
                // The treasury's account m/44'/60'/1'/0 has the same depth and index as the
                // deposit account: its xpub parses, and its address 0 is the treasury.
                if wallet.deposit_address(0)? == wallet.treasury_address {
                    return Err(WalletError::Settings(format!(
                        "wallet.xpub derives the treasury's address as deposit address 0: it is the treasury \
                         account's xpub, not the one at {DEPOSIT_ACCOUNT_PATH} (`depositd wallet xpub` prints it)"
                    )));
                }
                Ok(wallet)
            }
            _ => {
                let missing: Vec<&str> = [
                    ("wallet.treasury_address", treasury_address.is_none()),
                    ("wallet.sealing_key", sealing_key.is_none()),
                    ("wallet.session_key", session_key.is_none()),
                ]
                .into_iter()
                .filter_map(|(key, absent)| absent.then_some(key))
                .collect();
                Err(WalletError::Settings(format!(
                    "wallet.xpub is set without the mnemonic, so {} must be set too (`depositd wallet xpub` and \
                     `depositd wallet web-keys` print them)",
                    missing.join(", ")
                )))
            }
        }
    }

    /// Every public setting given beside the mnemonic must be the mnemonic's own.
    fn agrees_with(&self, settings: &WalletSettings) -> Result<(), WalletError> {
        if let Some(xpub) = &settings.xpub {
            let given = parse_xpub(xpub)?;
            if given != self.deposit_account_pub {
                return Err(WalletError::Mismatch(format!(
                    "wallet.xpub is not the mnemonic's xpub at {DEPOSIT_ACCOUNT_PATH} (wallet.xpub's address 0 is {}, \
                     the mnemonic's is {})",
                    address_at(&given, 0)?,
                    self.deposit_address(0)?
                )));
            }
        }
        if let Some(treasury) = &settings.treasury_address {
            let given = parse_treasury(treasury)?;
            if given != self.treasury_address {
                return Err(WalletError::Mismatch(format!(
                    "wallet.treasury_address is {given}, but the mnemonic's treasury is {}",
                    self.treasury_address
                )));
            }
        }
        for (key, given, own) in [
            ("wallet.sealing_key", &settings.sealing_key, &self.web.sealing),
            ("wallet.session_key", &settings.session_key, &self.web.session),
        ] {
            if let Some(given) = given
                && parse_key(key, given)? != *own
            {
                return Err(WalletError::Mismatch(format!(
                    "{key} is not the key derived from the mnemonic (remove it: a process with the mnemonic \
                     derives it; `depositd wallet web-keys` prints the right one)"
                )));
            }
        }
        Ok(())
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
        let address = address_at(&self.deposit_account_pub, index)?;
        let mut derived = self.derived.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if derived.len() >= REMEMBERED_ADDRESSES {
            derived.clear();
        }
        derived.insert(index, address);
        Ok(address)
    }

    /// Whether `address` is this wallet's deposit address at `index`: remembered when this
    /// process derived it lately (the pool's refill derives ahead of the claims that check), else
    /// derived again (an elliptic-curve multiplication, which a creation should not wait for).
    pub fn is_own_deposit_address(&self, index: u64, address: Address) -> Result<bool, WalletError> {
        let remembered = self.derived.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&index).copied();
        Ok(match remembered {
            Some(own) => own == address,
            None => self.deposit_address(index)? == address,
        })
    }

    /// The signer for the deposit address at `index` (sweeps and pass-through settlement).
    pub fn deposit_signer(&self, index: u64) -> Result<PrivateKeySigner, WalletError> {
        let keys = self.signing.as_ref().ok_or(WalletError::WatchOnly)?;
        let child = keys
            .deposit_account
            .derive_child(non_hardened(index)?)
            .map_err(|e| WalletError::Derivation(e.to_string()))?;
        let key: &coins_bip32::ecdsa::SigningKey = child.as_ref();
        Ok(PrivateKeySigner::from_signing_key(key.clone()))
    }

    /// A 32-byte key for signing payment sessions, derived one-way from the deposit account key:
    /// every daemon sharing the mnemonic agrees on it, and it reveals nothing about the keys.
    pub fn session_key(&self) -> [u8; 32] {
        self.web.session
    }

    /// The key that encrypts webhook signing secrets at rest, derived like [`Self::session_key`]
    /// (every daemon with the same mnemonic can read what another stored).
    pub fn webhook_secrets_key(&self) -> [u8; 32] {
        self.web.sealing
    }

    /// The treasury (hot wallet) signer, on its own account path; a watch-only wallet has none.
    pub fn treasury(&self) -> Result<&PrivateKeySigner, WalletError> {
        self.signing.as_ref().map(|keys| &keys.treasury).ok_or(WalletError::WatchOnly)
    }

    /// The treasury's address, known to every process.
    pub fn treasury_address(&self) -> Address {
        self.treasury_address
    }

    /// Whether this wallet holds the private keys (it was built from the mnemonic).
    pub fn signs(&self) -> bool {
        self.signing.is_some()
    }

    /// The extended public key at [`DEPOSIT_ACCOUNT_PATH`], in the usual `xpub...` encoding.
    pub fn xpub(&self) -> String {
        MainnetEncoder::xpub_to_base58(&self.deposit_account_pub).expect("an xpub always serializes")
    }

    /// The web keys as `wallet.sealing_key` and `wallet.session_key` take them (hex): secrets.
    pub fn web_keys_hex(&self) -> (SecretString, SecretString) {
        (SecretString::from(hex::encode(self.web.sealing)), SecretString::from(hex::encode(self.web.session)))
    }

    /// What the database records of this wallet (see [`WalletIdentity`]).
    pub fn identity(&self) -> WalletIdentity {
        WalletIdentity {
            xpub: self.xpub(),
            treasury_address: self.treasury_address,
            sealing_key_check: key_check(&self.web.sealing),
            session_key_check: key_check(&self.web.session),
        }
    }

    /// Refuses a wallet that is not the one `recorded` in the database, saying what differs (by
    /// address 0 and the treasury's address, never a secret).
    pub fn check_identity(&self, recorded: &WalletIdentity) -> Result<(), WalletError> {
        let mine = self.identity();
        let who = if self.signs() { "the mnemonic" } else { "wallet.xpub" };
        if mine.xpub != recorded.xpub {
            let theirs = parse_xpub(&recorded.xpub).and_then(|x| address_at(&x, 0));
            let theirs = theirs.map(|a| a.to_string()).unwrap_or_else(|_| "unreadable".into());
            return Err(WalletError::Mismatch(format!(
                "{who} does not own this database's deposit addresses: they were derived from another xpub at \
                 {DEPOSIT_ACCOUNT_PATH} (the database's address 0 is {theirs}, {who}'s is {})",
                self.deposit_address(0)?
            )));
        }
        if mine.treasury_address != recorded.treasury_address {
            let which = if self.signs() { "the mnemonic's treasury" } else { "wallet.treasury_address" };
            return Err(WalletError::Mismatch(format!(
                "{which} is {}, but this database's treasury is {}",
                mine.treasury_address, recorded.treasury_address
            )));
        }
        for (key, own, theirs) in [
            ("wallet.sealing_key", &mine.sealing_key_check, &recorded.sealing_key_check),
            ("wallet.session_key", &mine.session_key_check, &recorded.session_key_check),
        ] {
            if own != theirs {
                return Err(WalletError::Mismatch(format!(
                    "{key} is not the key this database's other processes use (print it from the mnemonic with \
                     `depositd wallet web-keys`)"
                )));
            }
        }
        Ok(())
    }
}

/// The same key with the BIP-32 `xpub` version bytes, as Ethereum wallets show it (coins-bip32
/// defaults a key from a seed to BIP-84's `zpub`; the version changes nothing derived from it).
fn as_xpub_version(key: &XPub) -> XPub {
    let info: &XKeyInfo = key.as_ref();
    let verifying: &coins_bip32::ecdsa::VerifyingKey = key.as_ref();
    XPub::new(*verifying, XKeyInfo { hint: Hint::Legacy, ..*info })
}

fn address_at(xpub: &XPub, index: u64) -> Result<Address, WalletError> {
    let child = xpub.derive_child(non_hardened(index)?).map_err(|e| WalletError::Derivation(e.to_string()))?;
    let key: &coins_bip32::ecdsa::VerifyingKey = child.as_ref();
    Ok(Address::from_public_key(key))
}

/// An `xpub...` string that is the key at [`DEPOSIT_ACCOUNT_PATH`] (by its recorded depth and
/// index: the path itself is not in the encoding).
fn parse_xpub(text: &str) -> Result<XPub, WalletError> {
    let xpub = MainnetEncoder::xpub_from_base58(text.trim()).map_err(|_| {
        WalletError::Settings(
            "wallet.xpub is not a BIP-32 extended public key (\"xpub...\"; `depositd wallet xpub` prints it)".into(),
        )
    })?;
    if !text.trim().starts_with("xpub") {
        return Err(WalletError::Settings(
            "wallet.xpub must be an \"xpub...\" key (BIP-32 version bytes; `depositd wallet xpub` prints it)".into(),
        ));
    }
    let info: &XKeyInfo = xpub.as_ref();
    if info.depth != DEPOSIT_ACCOUNT_DEPTH || info.index != 0 {
        return Err(WalletError::Settings(format!(
            "wallet.xpub is a key at depth {} (index {}); it must be the one at {DEPOSIT_ACCOUNT_PATH} (depth 4, \
             index 0), which `depositd wallet xpub` prints",
            info.depth, info.index
        )));
    }
    Ok(xpub)
}

/// The treasury's address, in its EIP-55 checksummed form only: a typo in a mixed-case address is
/// caught by its checksum, one in an all-lowercase (or all-uppercase) address would not be.
fn parse_treasury(text: &str) -> Result<Address, WalletError> {
    let address =
        crate::evm::parse_address(text).map_err(|e| WalletError::Settings(format!("wallet.treasury_address: {e}")))?;
    if text.trim() != address.to_checksum(None) {
        return Err(WalletError::Settings(format!(
            "wallet.treasury_address must be written in its EIP-55 checksummed form ({}), so that a typo is caught \
             (`depositd wallet xpub` prints it)",
            address.to_checksum(None)
        )));
    }
    Ok(address)
}

/// A web key: 64 hex digits. The error never repeats the value.
fn parse_key(name: &str, value: &SecretString) -> Result<[u8; 32], WalletError> {
    let bytes = hex::decode(value.expose_secret().trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
    bytes.ok_or_else(|| WalletError::Settings(format!("{name} must be 64 hex digits (32 bytes)")))
}

fn tagged_hash(tag: &[u8], data: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(tag);
    hasher.update(data);
    hasher.finalize().into()
}

/// A check value for a secret key: equal keys give equal values; it reveals nothing of the key.
fn key_check(key: &[u8; 32]) -> String {
    hex::encode(&tagged_hash(b"depositd/key-check/v1", key)[..16])
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
        assert_ne!(wallet.treasury().unwrap().address(), wallet.deposit_address(0).unwrap());
    }

    #[test]
    fn refuses_bad_input_without_echoing_it() {
        let err = HdWallet::from_mnemonic(&SecretString::from("correct horse battery staple")).unwrap_err();
        assert!(!err.to_string().contains("horse"));
        let wallet = HdWallet::from_mnemonic(&HdWallet::generate_mnemonic()).unwrap();
        assert!(matches!(wallet.deposit_address(1 << 31), Err(WalletError::IndexOutOfRange(_))));
        assert!(!format!("{wallet:?}").contains("XPriv"));
    }

    /// The settings a process without the mnemonic runs from, as `depositd wallet xpub` and
    /// `depositd wallet web-keys` print them for `wallet`.
    fn watch_settings(wallet: &HdWallet) -> WalletSettings {
        let (sealing, session) = wallet.web_keys_hex();
        WalletSettings {
            xpub: Some(wallet.xpub()),
            treasury_address: Some(wallet.treasury_address().to_checksum(None)),
            sealing_key: Some(sealing),
            session_key: Some(session),
            ..WalletSettings::default()
        }
    }

    #[test]
    fn the_xpub_derives_the_mnemonics_addresses_and_web_keys() {
        // Known vectors: anvil's accounts 0 and 1 are m/44'/60'/0'/0/{0,1} of the test phrase.
        let full = HdWallet::from_mnemonic(&SecretString::from(TEST_PHRASE)).unwrap();
        let watch = HdWallet::from_settings(&watch_settings(&full), false).unwrap();
        assert!(!watch.signs());
        assert_eq!(
            watch.deposit_address(0).unwrap(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".parse::<Address>().unwrap()
        );
        assert_eq!(
            watch.deposit_address(1).unwrap(),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".parse::<Address>().unwrap()
        );
        // And against the mnemonic path, for a random mnemonic and indices across the range.
        let full = HdWallet::from_mnemonic(&HdWallet::generate_mnemonic()).unwrap();
        let watch = HdWallet::from_settings(&watch_settings(&full), false).unwrap();
        for index in [0u64, 1, 2, 99, 4096, (1 << 31) - 1] {
            assert_eq!(watch.deposit_address(index).unwrap(), full.deposit_address(index).unwrap());
        }
        assert_eq!(watch.treasury_address(), full.treasury_address());
        assert_eq!(watch.session_key(), full.session_key());
        assert_eq!(watch.webhook_secrets_key(), full.webhook_secrets_key());
        assert_eq!(watch.identity(), full.identity());
        watch.check_identity(&full.identity()).unwrap();
        // It cannot sign.
        assert!(matches!(watch.treasury(), Err(WalletError::WatchOnly)));
        assert!(matches!(watch.deposit_signer(0), Err(WalletError::WatchOnly)));
    }

    #[test]
    fn public_derivation_matches_bip32_test_vector_1() {
        // BIP-32 test vector 1: chain m/0H/1/2H/2 and its non-hardened child 1000000000.
        let parent = MainnetEncoder::xpub_from_base58(
            "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV",
        )
        .unwrap();
        let child = parent.derive_child(1_000_000_000).unwrap();
        assert_eq!(
            MainnetEncoder::xpub_to_base58(&child).unwrap(),
            "xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy"
        );
    }

    #[test]
    fn settings_that_disagree_are_refused_without_secrets() {
        let phrase = HdWallet::generate_mnemonic();
        let full = HdWallet::from_mnemonic(&phrase).unwrap();
        let other = HdWallet::from_mnemonic(&HdWallet::generate_mnemonic()).unwrap();

        // The settler needs the mnemonic.
        let err = HdWallet::from_settings(&watch_settings(&full), true).unwrap_err();
        assert!(err.to_string().contains("the settler signs"), "{err}");
        // An xpub alone is not enough.
        let bare = WalletSettings { xpub: Some(full.xpub()), ..WalletSettings::default() };
        let err = HdWallet::from_settings(&bare, false).unwrap_err().to_string();
        assert!(err.contains("wallet.treasury_address, wallet.sealing_key, wallet.session_key"), "{err}");
        // An xpub at another depth (the master key's) is refused.
        let master = Mnemonic::<English>::new_from_phrase(TEST_PHRASE).unwrap().master_key(None).unwrap();
        let at_root = WalletSettings {
            xpub: Some(MainnetEncoder::xpub_to_base58(&as_xpub_version(&master.verify_key())).unwrap()),
            ..watch_settings(&full)
        };
        let err = HdWallet::from_settings(&at_root, false).unwrap_err().to_string();
        assert!(err.contains("depth 0"), "{err}");
        assert!(full.xpub().starts_with("xpub6"), "BIP-32 version bytes, depth 4");

        // Beside the mnemonic, another wallet's xpub or key is a mismatch that names no secret.
        let mut given = watch_settings(&other);
        given.mnemonic = Some(phrase.clone());
        let err = HdWallet::from_settings(&given, true).unwrap_err().to_string();
        assert!(err.contains("wallet.xpub is not the mnemonic's xpub"), "{err}");
        let (sealing, _) = other.web_keys_hex();
        let with_key = WalletSettings {
            mnemonic: Some(phrase.clone()),
            sealing_key: Some(sealing.clone()),
            ..WalletSettings::default()
        };
        let err = HdWallet::from_settings(&with_key, true).unwrap_err().to_string();
        assert!(err.contains("wallet.sealing_key is not the key derived from the mnemonic"), "{err}");
        // No two consecutive words of the phrase (a single word may be an ordinary English word
        // of the message, such as "key", which is on the BIP-39 list).
        let words: Vec<&str> = phrase.expose_secret().split_whitespace().collect();
        for pair in words.windows(2) {
            assert!(!err.contains(&pair.join(" ")), "{err}");
        }
        assert!(!err.contains(sealing.expose_secret()));

        // The database's record refuses another wallet, by address 0.
        let err = full.check_identity(&other.identity()).unwrap_err().to_string();
        assert!(err.contains("the mnemonic does not own this database's deposit addresses"), "{err}");
        assert!(err.contains(&other.deposit_address(0).unwrap().to_string()), "{err}");
        let watch = HdWallet::from_settings(&watch_settings(&full), false).unwrap();
        let mut recorded = full.identity();
        recorded.sealing_key_check = other.identity().sealing_key_check;
        let err = watch.check_identity(&recorded).unwrap_err().to_string();
        assert!(err.starts_with("wallet.sealing_key is not the key"), "{err}");
        assert!(!format!("{:?}", full.identity()).contains("xpub6"));
    }

    #[test]
    fn the_treasury_address_must_be_checksummed() {
        let full = HdWallet::from_mnemonic(&HdWallet::generate_mnemonic()).unwrap();
        let checksummed = full.treasury_address().to_checksum(None);
        let lower = format!("0x{}", checksummed[2..].to_ascii_lowercase());
        let upper = format!("0x{}", checksummed[2..].to_ascii_uppercase());
        assert_ne!(lower, checksummed, "the address has letters to checksum");
        for text in [&lower, &upper] {
            let settings = WalletSettings { treasury_address: Some(text.clone()), ..watch_settings(&full) };
            let err = HdWallet::from_settings(&settings, false).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "wallet: wallet.treasury_address must be written in its EIP-55 checksummed form ({checksummed}), \
                     so that a typo is caught (`depositd wallet xpub` prints it)"
                )
            );
        }
        // A mixed-case typo fails its checksum.
        let mut typo = checksummed.clone().into_bytes();
        let at = typo.iter().rposition(|b| b.is_ascii_alphabetic() && *b != b'x').unwrap();
        typo[at] ^= 0x20;
        let typo = String::from_utf8(typo).unwrap();
        let settings = WalletSettings { treasury_address: Some(typo), ..watch_settings(&full) };
        assert!(HdWallet::from_settings(&settings, false).unwrap_err().to_string().contains("checksum"));
        // The checksummed form is accepted.
        HdWallet::from_settings(&watch_settings(&full), false).unwrap();
    }

    #[test]
    fn the_treasury_accounts_xpub_is_refused() {
        // m/44'/60'/1'/0 has the deposit account's depth and index, so it parses as an xpub; its
        // address 0 is the treasury.
        let phrase = SecretString::from(TEST_PHRASE);
        let full = HdWallet::from_mnemonic(&phrase).unwrap();
        let mnemonic = Mnemonic::<English>::new_from_phrase(TEST_PHRASE).unwrap();
        let treasury_account = mnemonic.derive_key("m/44'/60'/1'/0", None).unwrap();
        let wrong = MainnetEncoder::xpub_to_base58(&as_xpub_version(&treasury_account.verify_key())).unwrap();
        let settings = WalletSettings { xpub: Some(wrong), ..watch_settings(&full) };
        let err = HdWallet::from_settings(&settings, false).unwrap_err().to_string();
        assert!(err.contains("it is the treasury account's xpub, not the one at m/44'/60'/0'/0"), "{err}");
    }
}
