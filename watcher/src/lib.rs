//! depositd's chain watcher: one task per configured chain that finds payments to watched
//! addresses and records them exactly once.
//!
//! Not implemented yet (issue 4, "Chain watcher"). What it will do, so the rest of the workspace
//! can be read against it: scan `Transfer` logs of allow-listed token contracts and native
//! transfers, match recipients against the in-memory set of deposit addresses, write deposits and
//! the chain cursor in one store transaction, follow confirmations, and unwind reorgs.
//! `depositd run` does not list a watcher component until this crate provides one.
//!
//! # Layout
//! Empty until issue 4 lands.
