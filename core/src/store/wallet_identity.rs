//! The deployment's wallet, as the first process that started on this database recorded it
//! (issue 21): the xpub deposit addresses are derived from, the treasury's address and a check
//! value of each web key. Every later process compares its own with it at start-up
//! (`HdWallet::check_identity`), so a settler whose mnemonic does not own the addresses the API
//! hands out, or an API with another xpub, is refused before it does anything.

use alloy::primitives::Address;

use super::{Store, StoreError};
use crate::time::now_ms;
use crate::wallet::WalletIdentity;

#[derive(sqlx::FromRow)]
struct Row {
    xpub: String,
    treasury_address: String,
    sealing_key_check: String,
    session_key_check: String,
}

/// Records `mine` if the database has no wallet yet, and returns the one it has (which is
/// `mine` when this process was the first). Two processes starting at once agree: one insert wins.
#[tracing::instrument(skip_all)]
pub async fn record_or_read(store: &Store, mine: &WalletIdentity) -> Result<WalletIdentity, StoreError> {
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
    let row: Row = sqlx::query_as(
        "SELECT xpub, treasury_address, sealing_key_check, session_key_check FROM wallet_identity WHERE id = 1",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(WalletIdentity {
        xpub: row.xpub,
        treasury_address: row
            .treasury_address
            .parse::<Address>()
            .map_err(|e| StoreError::Corrupt(format!("wallet_identity.treasury_address: {e}")))?,
        sealing_key_check: row.sealing_key_check,
        session_key_check: row.session_key_check,
    })
}
