//! Settings, the team: `GET|POST /dashboard/settings/team` (the members, and inviting one),
//! `POST /dashboard/settings/team/{id}/role`, `POST /dashboard/settings/team/{id}/remove`.
//! Every member reads the page; changes are the owners' (`Action::ManageMerchant`). The rules
//! (invites, the last owner, sessions ending with a removal) are `depositd_core::members`'; each
//! change is recorded with `depositd_core::audit::record` in its transaction. An invite's
//! one-time link is shown once, on the page that answers the invite, and e-mailed
//! (`depositd_core::notify::member_invite`) when SMTP is configured.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use depositd_core::audit;
use depositd_core::member::{Action, Member, Role};
use depositd_core::members::{self, MemberError};
use depositd_core::notify;
use depositd_core::outbox::Subject;
use depositd_core::store::{StoreError, members as member_rows};
use secrecy::ExposeSecret;
use serde_json::json;
use uuid::Uuid;

use super::{Chrome, Refused, SignedIn, internal, not_found, render, secured, when};
use crate::state::AppState;

const TEAM: &str = "/dashboard/settings/team";

/// A member as the list shows it.
struct MemberRow {
    id: Uuid,
    email: String,
    role: &'static str,
    status: &'static str,
    totp: bool,
    is_self: bool,
    /// A refused change of this member, shown next to its controls.
    error: Option<String>,
}

/// The invite just made, its link shown once.
struct Invited {
    email: String,
    role: &'static str,
    link: String,
    expires: String,
    emailed: bool,
}

#[derive(Template)]
#[template(path = "dashboard/team.html")]
struct TeamPage {
    chrome: Option<Chrome>,
    csrf: String,
    members: Vec<MemberRow>,
    may_manage: bool,
    roles: [&'static str; 3],
    invited: Option<Invited>,
    form_email: String,
    form_role: String,
    email_error: Option<String>,
    role_error: Option<String>,
}

async fn team_of(state: &AppState, signed_in: &SignedIn) -> Result<Vec<Member>, Refused> {
    let failed = |error: StoreError| Box::new(internal(error));
    let mut conn = state.store.conn().await.map_err(failed)?;
    member_rows::list(&mut conn, signed_in.merchant.id).await.map_err(failed)
}

impl TeamPage {
    fn new(signed_in: &SignedIn, team: &[Member]) -> TeamPage {
        TeamPage {
            chrome: Some(signed_in.chrome("settings")),
            csrf: signed_in.session.csrf_token.clone(),
            members: team
                .iter()
                .map(|m| MemberRow {
                    id: m.id,
                    email: m.email.clone(),
                    role: m.role.as_str(),
                    status: if m.password_hash.is_some() { "active" } else { "invited" },
                    totp: m.totp_enabled_at.is_some(),
                    is_self: m.id == signed_in.member.id,
                    error: None,
                })
                .collect(),
            may_manage: signed_in.member.role.may(Action::ManageMerchant),
            roles: [Role::Viewer.as_str(), Role::Developer.as_str(), Role::Owner.as_str()],
            invited: None,
            form_email: String::new(),
            form_role: Role::Viewer.as_str().to_owned(),
            email_error: None,
            role_error: None,
        }
    }
}

/// The page with `page` changed by `change`, or the page that refused.
async fn team_page(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    change: impl FnOnce(&mut TeamPage),
) -> Response {
    match team_of(state, signed_in).await {
        Ok(team) => {
            let mut page = TeamPage::new(signed_in, &team);
            change(&mut page);
            render(status, &page)
        }
        Err(refused) => *refused,
    }
}

const ROLE_CHOICE: &str = "choose viewer, developer or owner";

pub async fn page(State(state): State<AppState>, signed_in: SignedIn) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    team_page(&state, &signed_in, StatusCode::OK, |_| {}).await
}

pub async fn invite(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    let form = match signed_in.form_for(&body, Action::ManageMerchant) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let email = form.text("email");
    let role_word = form.text("role");
    let role = role_word.parse::<Role>().ok();
    let role_error = role.is_none().then(|| ROLE_CHOICE.to_owned());
    let email_error = members::normalize_email(&email).err().map(|e| e.to_string());
    let refused = |email_error: Option<String>, role_error: Option<String>| {
        let (email, role_word) = (email.clone(), role_word.clone());
        move |page: &mut TeamPage| {
            page.form_email = email;
            page.form_role = role_word;
            page.email_error = email_error;
            page.role_error = role_error;
        }
    };
    let Some(role) = role.filter(|_| email_error.is_none()) else {
        return team_page(&state, &signed_in, StatusCode::BAD_REQUEST, refused(email_error, role_error)).await;
    };
    let shop = signed_in.merchant.display_name().to_owned();
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let invited_by = format!("user:{}", signed_in.member.id);
        let invitation = members::invite(&mut tx, signed_in.merchant.id, &email, role, &invited_by).await?;
        let details =
            json!({ "email": invitation.member.email, "role": role.as_str(), "expires_at": invitation.expires_at });
        let event_id = audit::record(
            &mut tx,
            &signed_in.member,
            "member.invite",
            Subject::new("member", invitation.member.id),
            &details,
        )
        .await?;
        let link = members::invite_link(&state.config.settings.api.public_url, invitation.token.expose_secret());
        notify::member_invite(&mut tx, event_id, &invitation.email(&shop, &link)).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, MemberError>((invitation, link))
    }
    .await;
    match outcome {
        Ok((invitation, link)) => {
            let invited = Invited {
                email: invitation.member.email.clone(),
                role: role.as_str(),
                link,
                expires: when(invitation.expires_at),
                emailed: state.config.settings.smtp.is_some(),
            };
            // The link is on this answer only (not cached; a reload asks before posting again).
            team_page(&state, &signed_in, StatusCode::CREATED, move |page| page.invited = Some(invited)).await
        }
        Err(error @ (MemberError::InvalidEmail | MemberError::EmailTaken(_) | MemberError::AlreadyMember(_))) => {
            team_page(&state, &signed_in, StatusCode::BAD_REQUEST, refused(Some(error.to_string()), None)).await
        }
        Err(error) => internal(error),
    }
}

/// The member id of a path, or the 404 page.
fn member_id(signed_in: &SignedIn, id: &str) -> Result<Uuid, Refused> {
    id.parse::<Uuid>().map_err(|_| Box::new(not_found(Some(signed_in.chrome("settings")), "member")))
}

/// The answer to a change of member `id`: back to the team page, or the page with the error
/// next to the member's controls.
async fn changed(state: &AppState, signed_in: &SignedIn, id: Uuid, outcome: Result<(), MemberError>) -> Response {
    match outcome {
        Ok(()) => secured(Redirect::to(TEAM).into_response()),
        Err(MemberError::NotFound) => not_found(Some(signed_in.chrome("settings")), "member"),
        Err(error @ MemberError::LastOwner) => {
            let message = error.to_string();
            team_page(state, signed_in, StatusCode::CONFLICT, move |page| {
                if let Some(row) = page.members.iter_mut().find(|m| m.id == id) {
                    row.error = Some(message);
                }
            })
            .await
        }
        Err(error) => internal(error),
    }
}

pub async fn change_role(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = match signed_in.form_for(&body, Action::ManageMerchant) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let id = match member_id(&signed_in, &id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let Ok(role) = form.text("role").parse::<Role>() else {
        return team_page(&state, &signed_in, StatusCode::BAD_REQUEST, move |page| {
            if let Some(row) = page.members.iter_mut().find(|m| m.id == id) {
                row.error = Some(ROLE_CHOICE.to_owned());
            }
        })
        .await;
    };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let before = members::change_role(&mut tx, &signed_in.member, id, role).await?;
        let details = json!({ "email": before.email, "from": before.role.as_str(), "to": role.as_str() });
        audit::record(&mut tx, &signed_in.member, "member.role_change", Subject::new("member", id), &details).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, MemberError>(())
    }
    .await;
    changed(&state, &signed_in, id, outcome).await
}

pub async fn remove(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(refused) = signed_in.form_for(&body, Action::ManageMerchant) {
        return *refused;
    }
    let id = match member_id(&signed_in, &id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let removed = members::remove(&mut tx, &signed_in.member, id).await?;
        let details = json!({ "email": removed.email, "role": removed.role.as_str() });
        audit::record(&mut tx, &signed_in.member, "member.remove", Subject::new("member", id), &details).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, MemberError>(())
    }
    .await;
    changed(&state, &signed_in, id, outcome).await
}
