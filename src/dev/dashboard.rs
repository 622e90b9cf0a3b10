//! The demo merchant's dashboard login for `depositd dev`: a member `demo@depositd.dev` (owner)
//! with a generated password, kept across runs in `dev.json` and printed with the quick start.

use depositd_core::config::Config;
use depositd_core::member::Role;
use depositd_core::members;
use depositd_core::store::api_keys;
use depositd_core::store::members as member_rows;
use secrecy::{ExposeSecret, SecretString};

/// The demo member's email.
pub const DEMO_EMAIL: &str = "demo@depositd.dev";

/// The demo login's password: the previous run's while the member still has it, else a new one
/// (the member invited and its invite accepted, as a merchant would, or its password reset).
pub async fn ensure_demo_login(
    config: &Config,
    api_key: &SecretString,
    previous_password: Option<&str>,
) -> anyhow::Result<String> {
    let store = crate::database::open_store(config).await?;
    let (merchant, existing) = {
        let mut conn = store.conn().await?;
        let (_, merchant) = api_keys::authenticate(&mut conn, api_key)
            .await?
            .map_err(|rejection| anyhow::anyhow!("the demo API key does not authenticate: {rejection:?}"))?;
        (merchant, member_rows::by_email(&mut conn, DEMO_EMAIL).await?)
    };
    if let (Some(member), Some(password)) = (&existing, previous_password)
        && member.merchant_id == merchant.id
        && member.password_hash.is_some()
    {
        store.close().await;
        return Ok(password.to_owned());
    }
    let password = members::random_token()[..24].to_owned();
    let secret = SecretString::from(password.clone());
    match existing {
        // Only the demo merchant's own member: the address may belong to another merchant's team.
        Some(member) if member.password_hash.is_some() && member.merchant_id == merchant.id => {
            let hash = members::hash_password(&secret).await?;
            let mut tx = store.begin().await?;
            member_rows::set_password_hash(&mut tx, member.id, &hash).await?;
            tx.commit().await?;
        }
        _ => {
            let mut tx = store.begin().await?;
            let invitation = members::invite(&mut tx, merchant.id, DEMO_EMAIL, Role::Owner, "cli").await?;
            tx.commit().await?;
            members::accept_invite(&store, invitation.token.expose_secret(), &secret).await?;
        }
    }
    store.close().await;
    Ok(password)
}
