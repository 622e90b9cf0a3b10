//! `depositd merchant invite`: the operator invites a merchant's first dashboard member.

use depositd_core::config::Config;
use depositd_core::member::Role;
use depositd_core::members;
use depositd_core::notify;
use depositd_core::store::Store;
use secrecy::ExposeSecret;

use crate::cli::InviteArgs;

/// The dashboard's link for an invite token.
pub fn invite_link(config: &Config, token: &str) -> String {
    members::invite_link(&config.settings.api.public_url, token)
}

pub async fn invite(config: &Config, store: &Store, args: InviteArgs) -> anyhow::Result<()> {
    let role: Role = args.role.parse().map_err(anyhow::Error::msg)?;
    let merchant = {
        let mut conn = store.conn().await?;
        super::find_merchant(&mut conn, &args.merchant).await?
    };
    let mut tx = store.begin().await?;
    let invitation = members::invite(&mut tx, merchant.id, &args.email, role, "cli").await?;
    // The event, and the e-mail with the link when SMTP is configured, in the invite's transaction.
    let event_id = members::record_operator_invite(&mut tx, &invitation).await?;
    let link = invite_link(config, invitation.token.expose_secret());
    notify::member_invite(&mut tx, event_id, &invitation.email(merchant.display_name(), &link)).await?;
    tx.commit().await?;
    eprintln!(
        "Invited {} to {} ({}) as {}; the link can be used once, within 24 hours:",
        invitation.member.email, merchant.name, merchant.id, role
    );
    println!("{link}");
    Ok(())
}
