//! The deployment's wallet, as the first process holding the mnemonic recorded it (issue 21): the
//! xpub deposit addresses are derived from, the treasury's address and a check value of each web
//! key. Every process compares its own with it at start-up ([`check`]), so a settler whose
//! mnemonic does not own the addresses the API hands out, or an API with another xpub, is refused
//! before it does anything.
//!
//! Only a process with the mnemonic may write the record: a watch-only process (`wallet.xpub`)
//! only reads it, and refuses to start while there is none. Otherwise a mistyped xpub, pasted into
//! a web tier that happened to start first, would become the reference: the API would hand out
//! addresses no one can sign for, and the right settler would be refused.

use alloy::primitives::Address;

use super::{Store, StoreError};
use crate::time::now_ms;
use crate::wallet::{HdWallet, WalletError, WalletIdentity};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// A watch-only process started on a database no process with the mnemonic has started on.
    #[error(
        "no wallet recorded in this database yet: start a process with the mnemonic (the settler) first; \
         a process running from wallet.xpub alone only checks itself against that record"
    )]
    NotRecorded,
}

/// Checks `wallet` against the database's record, refusing to start on any difference. A wallet
/// with the mnemonic records itself when the database has no wallet yet; a watch-only one never
/// does (see the module's header) and is refused ([`IdentityError::NotRecorded`]) instead.
pub async fn check(store: &Store, wallet: &HdWallet) -> Result<(), IdentityError> {
    let recorded =
        if wallet.signs() { Some(record_or_read(store, &wallet.identity()).await?) } else { read(store).await? };
    let recorded = recorded.ok_or(IdentityError::NotRecorded)?;
    wallet.check_identity(&recorded)?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    xpub: String,
    treasury_address: String,
    sealing_key_check: String,
    session_key_check: String,
}

/// Records `mine` if the database has no wallet yet, and returns the one it has (which is
/// `mine` when this process was the first). Two processes starting at once agree: one insert wins.
/// Only for a wallet built from the mnemonic ([`check`] decides).
#[tracing::instrument(skip_all)]
async fn record_or_read(store: &Store, mine: &WalletIdentity) -> Result<WalletIdentity, StoreError> {
    let mut conn = store.conn().await?;
    sqlx::query(
        "INSERT INTO wallet_identity (id, xpub, treasury_address, sealing_key_check, session_key_check, recorded_at) \
         VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&mine.xpub)
    .bind(mine.treasury_address.to_checksum(None))
    .bind(&mine.sealing_key_check)
    .bind(&mine.session_key_check)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    drop(conn);
    read(store).await?.ok_or_else(|| StoreError::Corrupt("wallet_identity: the row just recorded is missing".into()))
}

/// The database's recorded wallet, if a process with the mnemonic has recorded one.
#[tracing::instrument(skip_all)]
pub async fn read(store: &Store) -> Result<Option<WalletIdentity>, StoreError> {
    let mut conn = store.conn().await?;
    let row: Option<Row> = sqlx::query_as(
        "SELECT xpub, treasury_address, sealing_key_check, session_key_check FROM wallet_identity WHERE id = 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(WalletIdentity {
        xpub: row.xpub,
        treasury_address: row
            .treasury_address
            .parse::<Address>()
            .map_err(|e| StoreError::Corrupt(format!("wallet_identity.treasury_address: {e}")))?,
        sealing_key_check: row.sealing_key_check,
        session_key_check: row.session_key_check,
    }))
}
