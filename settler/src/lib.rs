//! depositd's settler: the hot wallet that moves money on chain (sweeps, pass-through settlement,
//! payouts and refunds) with crash-safe nonces and fee bumping.
//!
//! Not implemented yet (issue 7, "Settler"). The schema it needs (`chain_transactions`,
//! `chain_transaction_attempts`, `signer_nonces`, `payouts`) is in the initial migration, and the
//! treasury key comes from `depositd_core::wallet`. `depositd run` does not list a settler
//! component until this crate provides one.
//!
//! # Layout
//! Empty until issue 7 lands.
