//! The dashboard's sign-in lifecycle: the one place its rules are written, for the operator's
//! CLI (`depositd merchant invite`), the dashboard and `depositd dev` alike.
//!
//! - **Invites**: a member is invited by email with a role; the invite is a random token (the
//!   link's last segment, stored as its SHA-256) valid for [`INVITE_VALIDITY`] and usable once.
//!   Inviting an address again (before it set a password) replaces its earlier invites. An
//!   address belongs to one merchant and signs in once set up: inviting it again is refused.
//! - **Passwords**: [`MIN_PASSWORD_CHARS`] to [`MAX_PASSWORD_CHARS`] characters, stored as argon2id
//!   (PHC string, random salt). Hashing and verifying run off the async threads, at most one
//!   per CPU at a time; a request that waits more than [`ARGON2_WAIT`] for its turn is refused
//!   ([`MemberError::Busy`]) rather than queued without end.
//! - **Sign-in throttling**: after [`MAX_FAILURES_PER_ACCOUNT`] failed sign-ins for one address, or
//!   [`MAX_FAILURES_PER_CLIENT`] from one client address, within [`THROTTLE_WINDOW`], sign-ins for
//!   it are refused (before the password is checked; each attempt is counted as a failure
//!   before its password is checked, so parallel attempts cannot pass the limit) until the oldest failure leaves the window;
//!   the answer says how long. Failures are kept in the database, so every daemon on it counts
//!   them together. A success forgets the account's failures (not the client's).
//! - **Sessions**: a random token (the cookie's value, stored as its SHA-256) and a CSRF token
//!   every form of the session posts back; a session ends [`SESSION_LIFETIME`] after sign-in, or
//!   after [`SESSION_IDLE`] without use, or at log-out; "log out everywhere" ends all of the
//!   member's sessions. Use is written at most once a minute per session.
//! - **Second factor (TOTP, optional)**: a member enrols an authenticator app ([`totp_begin`]: a
//!   random 160-bit secret, sealed with the process's [`SecretBox`] before it is stored, shown
//!   once as an `otpauth://` URI) and confirms it with a current code ([`totp_confirm`]). From
//!   then on a right password opens no session but a short challenge ([`CHALLENGE_VALIDITY`]),
//!   and [`sign_in_second_factor`] opens the session for a current code. Codes are RFC 6238
//!   (SHA-1, 6 digits, 30-second steps, one step either side accepted), each accepted once;
//!   a wrong code counts as a failed sign-in (the same throttle).
//! - **Re-authentication** before money moves ([`reauthenticate`]): the member's password, or a
//!   current TOTP code when TOTP is on, throttled like sign-in.
//! - **The team**: owners change roles ([`change_role`]) and remove members ([`remove`], which ends
//!   their sessions); the last owner who signs in can be neither demoted nor removed.

use std::sync::LazyLock;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, SemaphorePermit};
use uuid::Uuid;

use crate::member::{Member, Role, Session};
use crate::store::members::{self, Failures, Invite};
use crate::store::{Conn, Store, StoreError, Tx};
use crate::time::now_ms;
use crate::webhooks::SecretBox;

/// How long an invite link can be used.
pub const INVITE_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// A session's longest life.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A session unused this long has ended.
pub const SESSION_IDLE: Duration = Duration::from_secs(2 * 3600);
/// A session's use is written at most this often.
const SESSION_TOUCH: Duration = Duration::from_secs(60);
/// Failed sign-ins counted over this window.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failed sign-ins for one account within the window before its sign-ins are refused.
pub const MAX_FAILURES_PER_ACCOUNT: i64 = 5;
/// Failed sign-ins from one client address within the window before its sign-ins are refused.
pub const MAX_FAILURES_PER_CLIENT: i64 = 20;
pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_CHARS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("enter a valid email address")]
    InvalidEmail,
    #[error("the password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")]
    InvalidPassword,
    #[error("{0} is already a member of another merchant")]
    EmailTaken(String),
    #[error("{0} is already a member and signs in with a password")]
    AlreadyMember(String),
    #[error("this invite link is not valid; ask for a new one")]
    InviteUnknown,
    #[error("this invite link was already used; sign in, or ask for a new one")]
    InviteUsed,
    #[error("this invite link has expired (links are valid for 24 hours); ask for a new one")]
    InviteExpired,
    #[error("the email or the password is not correct")]
    WrongCredentials,
    /// Too many failed sign-ins; `account` says whether the account's or the address's limit.
    #[error(
        "too many failed sign-ins {}; try again in {} minute(s)",
        if *account { "for this account" } else { "from your network address" },
        retry_after_secs.div_ceil(60)
    )]
    Throttled { account: bool, retry_after_secs: u64 },
    /// Every argon2 turn stayed taken for [`ARGON2_WAIT`].
    #[error("the server is busy checking passwords; try again in a few seconds")]
    Busy,
    #[error("enter the 6-digit code from your authenticator app")]
    InvalidCode,
    #[error("the code is not correct; enter the current code from your authenticator app")]
    WrongCode,
    /// Re-authentication refused; `totp` says whether a code would have been accepted too.
    #[error("{}", if *totp { "the password or the code is not correct" } else { "the password is not correct" })]
    WrongPassword { totp: bool },
    #[error("two-factor authentication is already on")]
    TotpEnabled,
    #[error("two-factor authentication is not on")]
    TotpNotEnabled,
    #[error("the set-up has not started or has ended; start it again")]
    TotpNotStarted,
    #[error("this sign-in has expired; enter your email and password again")]
    ChallengeExpired,
    #[error("no such member")]
    NotFound,
    #[error("the team needs an owner who can sign in: make another member owner first")]
    LastOwner,
    /// A stored TOTP secret cannot be opened (deliberately without the value).
    #[error("a stored authenticator secret cannot be decrypted (was the mnemonic or wallet.sealing_key changed?)")]
    Sealed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a request waits for an argon2 turn before it is refused with [`MemberError::Busy`].
pub const ARGON2_WAIT: Duration = Duration::from_secs(2);

/// Turns to hash or verify a password: one per CPU (argon2 takes a core and 19 MiB for tens of
/// milliseconds, so more at once only queues blocking threads and memory).
static ARGON2_TURNS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

/// An argon2 turn, or [`MemberError::Busy`] after [`ARGON2_WAIT`].
async fn argon2_turn() -> Result<SemaphorePermit<'static>, MemberError> {
    turn_of(&ARGON2_TURNS).await
}

async fn turn_of(turns: &Semaphore) -> Result<SemaphorePermit<'_>, MemberError> {
    match tokio::time::timeout(ARGON2_WAIT, turns.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => {
            tracing::warn!("every argon2 turn is taken: a password request is refused as busy");
            Err(MemberError::Busy)
        }
    }
}

/// The SHA-256 of a token, hex: what is stored and looked up.
fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// 32 random bytes, hex: tokens (invites, sessions, CSRF) and generated passwords.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An email address as stored: trimmed, lower-cased, one `@` with text either side and a dot in
/// the domain, at most 254 characters, no spaces or control characters.
pub fn normalize_email(raw: &str) -> Result<String, MemberError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid { Ok(email) } else { Err(MemberError::InvalidEmail) }
}

fn check_password(password: &SecretString) -> Result<(), MemberError> {
    let chars = password.expose_secret().chars().count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) { Ok(()) } else { Err(MemberError::InvalidPassword) }
}

/// argon2id of `password` with a random salt, in PHC string format (off the async threads).
pub async fn hash_password(password: &SecretString) -> Result<String, MemberError> {
    let password = password.clone();
    let turn = argon2_turn().await?;
    let hashed = tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .expect("argon2id hashes any password of the allowed length")
    })
    .await;
    drop(turn);
    hashed.map_err(|e| MemberError::Store(StoreError::Corrupt(format!("password hashing task: {e}"))))
}

/// Whether `password` matches `stored` (off the async threads; the caller holds an
/// [`argon2_turn`]). With no stored hash (an unknown
/// address, a member who never set a password) a dummy hash is verified, so the answer takes as
/// long either way.
async fn verify_password(password: &SecretString, stored: Option<String>) -> bool {
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        let (stored, real) = match stored {
            Some(stored) => (stored, true),
            None => (DUMMY_HASH.to_owned(), false),
        };
        let Ok(parsed) = PasswordHash::new(&stored) else { return false };
        Argon2::default().verify_password(password.expose_secret().as_bytes(), &parsed).is_ok() && real
    })
    .await
    .unwrap_or(false)
}

/// An argon2id hash (default parameters) of a random password nobody knows.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$wJ0bPe0eRVHXdFJH5aW7Ml4sHxm3qYDo7vyqX0P3kyY";

/// An invite just made: the member it is for, the token (for the link, shown once) and when it
/// expires.
pub struct Invitation {
    pub member: Member,
    /// The invite's id (names its e-mail: one per invite).
    pub invite_id: Uuid,
    pub token: SecretString,
    pub expires_at: i64,
}

/// Invites `email` to merchant `merchant_id`'s team with `role`, on behalf of `invited_by`
/// (`cli` or `user:<id>`), in `tx`. See the module doc for re-invitations.
#[tracing::instrument(skip(tx))]
pub async fn invite(
    tx: &mut Tx,
    merchant_id: Uuid,
    email: &str,
    role: Role,
    invited_by: &str,
) -> Result<Invitation, MemberError> {
    let email = normalize_email(email)?;
    let now = now_ms();
    let member = match members::by_email(tx, &email).await? {
        Some(existing) if existing.merchant_id != merchant_id => return Err(MemberError::EmailTaken(email)),
        Some(existing) if existing.password_hash.is_some() => return Err(MemberError::AlreadyMember(email)),
        Some(mut existing) => {
            members::set_role(tx, existing.id, role).await?;
            members::retire_invites(tx, existing.id, now).await?;
            existing.role = role;
            existing
        }
        None => {
            let member = Member {
                id: Uuid::now_v7(),
                merchant_id,
                email,
                role,
                password_hash: None,
                created_at: now,
                invited_by: invited_by.to_owned(),
                totp_enabled_at: None,
            };
            members::insert(tx, &member).await?;
            member
        }
    };
    let token = random_token();
    let invite = Invite {
        id: Uuid::now_v7(),
        user_id: member.id,
        created_at: now,
        expires_at: now + INVITE_VALIDITY.as_millis() as i64,
        used_at: None,
    };
    members::insert_invite(tx, &invite, &hash_token(&token)).await?;
    tracing::info!(user_id = %member.id, %merchant_id, role = %role, "member invited");
    Ok(Invitation { member, invite_id: invite.id, token: SecretString::from(token), expires_at: invite.expires_at })
}

impl Invitation {
    /// Its e-mail (`notify::member_invite`), with `link` for its token and `shop` the merchant's name.
    pub fn email<'a>(&'a self, shop: &'a str, link: &'a str) -> crate::notify::InviteEmail<'a> {
        crate::notify::InviteEmail {
            merchant_id: self.member.merchant_id,
            invite_id: self.invite_id,
            recipient: &self.member.email,
            role: self.member.role.as_str(),
            shop,
            link,
            expires_at: self.expires_at,
        }
    }
}

/// The dashboard's link for an invite token, under the daemon's public URL.
pub fn invite_link(public_url: &str, token: &str) -> String {
    format!("{}/dashboard/invite/{token}", public_url.trim_end_matches('/'))
}

/// Records an invite the operator made (`depositd merchant invite`) as the merchant's
/// `member.action` event, as `audit::record` does for a member's (the actor is the operator);
/// returns the event id (the invite e-mail's, `notify::member_invite`).
pub async fn record_operator_invite(tx: &mut Tx, invitation: &Invitation) -> Result<Uuid, StoreError> {
    let member = &invitation.member;
    let data = serde_json::json!({
        "action": "member.invite",
        "member": { "operator": "cli" },
        "resource_type": "member",
        "resource_id": member.id,
        "details": { "email": member.email, "role": member.role.as_str(), "expires_at": invitation.expires_at },
    });
    crate::outbox::record(
        tx,
        member.merchant_id,
        crate::outbox::EventType::MemberAction,
        crate::outbox::Subject::new("member", member.id),
        &data,
    )
    .await
}

/// The member an invite token is for, if it can still be used.
pub async fn invited_member(conn: &mut Conn, token: &str) -> Result<Member, MemberError> {
    let invite = usable_invite(conn, token).await?;
    members::get(conn, invite.user_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("invite {} names a missing member", invite.id)).into())
}

async fn usable_invite(conn: &mut Conn, token: &str) -> Result<Invite, MemberError> {
    let invite = members::invite_by_token_hash(conn, &hash_token(token)).await?.ok_or(MemberError::InviteUnknown)?;
    if invite.used_at.is_some() {
        return Err(MemberError::InviteUsed);
    }
    if invite.expires_at <= now_ms() {
        return Err(MemberError::InviteExpired);
    }
    Ok(invite)
}

/// Accepts an invite: sets the member's password, uses the invite up. The member then signs in.
#[tracing::instrument(skip_all)]
pub async fn accept_invite(store: &Store, token: &str, password: &SecretString) -> Result<Member, MemberError> {
    {
        let mut conn = store.conn().await?;
        usable_invite(&mut conn, token).await?;
    }
    check_password(password)?;
    // Hashed before the write transaction: no lock is held while argon2 runs.
    let hash = hash_password(password).await?;
    let mut tx = store.begin().await?;
    let invite = usable_invite(&mut tx, token).await?;
    if !members::use_invite(&mut tx, invite.id, now_ms()).await? {
        return Err(MemberError::InviteUsed);
    }
    members::set_password_hash(&mut tx, invite.user_id, &hash).await?;
    let member = members::get(&mut tx, invite.user_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("invite {} names a missing member", invite.id)))?;
    tx.commit().await.map_err(StoreError::from)?;
    tracing::info!(user_id = %member.id, "invite accepted");
    Ok(member)
}

/// A session just opened: the cookie's token (shown once) and the session.
pub struct OpenedSession {
    pub token: SecretString,
    pub session: Session,
}

/// Signs `email` in with `password` from `client` (its network address): checks the throttle,
/// then the password; a failure is recorded, a success opens a session.
/// What a right password opens.
pub enum SignInStep {
    /// The member's session (no second factor).
    Session(Member, OpenedSession),
    /// The member has TOTP on: the challenge's token (for a cookie) awaits a code
    /// ([`sign_in_second_factor`]).
    SecondFactor(Member, SecretString),
}

/// How long the TOTP step of a sign-in may take.
pub const CHALLENGE_VALIDITY: Duration = Duration::from_secs(5 * 60);

/// The throttle's refusal for the failures counted (this attempt included), if any.
fn throttle(by_email: Failures, by_client: Failures, now: i64) -> Option<MemberError> {
    let window = THROTTLE_WINDOW.as_millis() as i64;
    let retry = |oldest: Option<i64>| ((oldest.unwrap_or(now) + window - now).max(1000) as u64).div_ceil(1000);
    if by_email.count > MAX_FAILURES_PER_ACCOUNT {
        Some(MemberError::Throttled { account: true, retry_after_secs: retry(by_email.oldest) })
    } else if by_client.count > MAX_FAILURES_PER_CLIENT {
        Some(MemberError::Throttled { account: false, retry_after_secs: retry(by_client.oldest) })
    } else {
        None
    }
}

/// Records an attempt for `email` from `client` as a failure before it is checked (see
/// `store::members::record_attempt`), or refuses it as throttled (recording nothing).
async fn attempt(store: &Store, email: &str, client: &str) -> Result<(), MemberError> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    let (by_email, by_client) =
        members::record_attempt(&mut tx, email, client, now, now - THROTTLE_WINDOW.as_millis() as i64).await?;
    if let Some(throttled) = throttle(by_email, by_client, now) {
        tx.rollback().await.map_err(StoreError::from)?;
        return Err(throttled);
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

#[tracing::instrument(skip(store, password))]
pub async fn sign_in(
    store: &Store,
    email: &str,
    password: &SecretString,
    client: &str,
) -> Result<SignInStep, MemberError> {
    // The address as stored (an invalid one is still checked against the dummy hash, so it
    // costs the same time, and recorded at most 254 characters long).
    let email = normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase().chars().take(254).collect());
    let now = now_ms();
    let window = THROTTLE_WINDOW.as_millis() as i64;
    // The attempt counts as a failure before its password is checked, in one write transaction
    // with the count (`store::members::record_attempt`): parallel attempts cannot all pass.
    // The argon2 turn is taken first: a refusal as busy records nothing.
    let turn = argon2_turn().await?;
    let found = {
        let mut tx = store.begin().await?;
        let (by_email, by_client) = members::record_attempt(&mut tx, &email, client, now, now - window).await?;
        if let Some(throttled) = throttle(by_email, by_client, now) {
            // A refused attempt is not a failure: nothing is recorded.
            tx.rollback().await.map_err(StoreError::from)?;
            return Err(throttled);
        }
        let found = members::by_email(&mut tx, &email).await?;
        tx.commit().await.map_err(StoreError::from)?;
        found
    };
    let stored = found.as_ref().and_then(|m| m.password_hash.clone());
    let good = verify_password(password, stored).await;
    drop(turn);
    // A failure is already recorded.
    let Some(member) = found.filter(|_| good) else { return Err(MemberError::WrongCredentials) };
    let mut tx = store.begin().await?;
    if member.totp_enabled_at.is_some() {
        // The failures stay counted until the code is right too: a right password alone does not
        // reset the throttle the code's guesses count against.
        let token = random_token();
        let now = now_ms();
        members::insert_challenge(
            &mut tx,
            &hash_token(&token),
            member.id,
            now,
            now + CHALLENGE_VALIDITY.as_millis() as i64,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        tracing::info!(user_id = %member.id, "member's password accepted; the TOTP code is awaited");
        return Ok(SignInStep::SecondFactor(member, SecretString::from(token)));
    }
    members::clear_failures(&mut tx, &email).await?;
    let opened = open_session(&mut tx, member.id).await?;
    tx.commit().await.map_err(StoreError::from)?;
    tracing::info!(user_id = %member.id, "member signed in");
    Ok(SignInStep::Session(member, opened))
}

/// The member a sign-in challenge token is for, while it lasts (for the code page).
pub async fn challenged_member(store: &Store, challenge: &str) -> Result<Member, MemberError> {
    let mut conn = store.conn().await?;
    let user_id =
        members::challenge(&mut conn, &hash_token(challenge), now_ms()).await?.ok_or(MemberError::ChallengeExpired)?;
    members::get(&mut conn, user_id).await?.ok_or(MemberError::ChallengeExpired)
}

/// The second step of a sign-in with TOTP: a current `code` for the `challenge` a right
/// password opened, from `client`. A wrong code counts as a failed sign-in; a right one uses
/// the challenge up and opens the session.
#[tracing::instrument(skip_all)]
pub async fn sign_in_second_factor(
    store: &Store,
    secrets: &SecretBox,
    challenge: &str,
    code: &str,
    client: &str,
) -> Result<(Member, OpenedSession), MemberError> {
    let member = challenged_member(store, challenge).await?;
    attempt(store, &member.email, client).await?;
    let step = matching_step(store, secrets, &member, code).await?;
    let mut tx = store.begin().await?;
    if !members::delete_challenge(&mut tx, &hash_token(challenge)).await? {
        return Err(MemberError::ChallengeExpired);
    }
    if !members::use_totp_step(&mut tx, member.id, step).await? {
        return Err(MemberError::WrongCode);
    }
    members::clear_failures(&mut tx, &member.email).await?;
    let opened = open_session(&mut tx, member.id).await?;
    tx.commit().await.map_err(StoreError::from)?;
    tracing::info!(user_id = %member.id, "member signed in with a TOTP code");
    Ok((member, opened))
}

// === TOTP ===

/// Seconds per TOTP step.
const TOTP_STEP_SECS: u64 = 30;
/// Digits of a code.
const TOTP_DIGITS: usize = 6;
/// Random bytes of a TOTP secret (RFC 4226 recommends 160 bits).
const TOTP_SECRET_BYTES: usize = 20;

/// An enrolment to show once: the `otpauth://` URI (for the QR code) and the secret in base32
/// (to type in). No `Debug`.
pub struct TotpEnrolment {
    pub uri: SecretString,
    pub secret_base32: SecretString,
}

/// The RFC 6238 generator for `secret`, labelled `issuer` / the member's email.
fn totp_of(secret: Vec<u8>, issuer: &str, account: &str) -> Result<totp_rs::TOTP, MemberError> {
    // A label holds no `:` (it separates issuer and account in the URI).
    let clean = |s: &str| s.replace(':', " ").trim().to_owned();
    totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        TOTP_DIGITS,
        1,
        TOTP_STEP_SECS,
        secret,
        Some(clean(issuer)).filter(|i| !i.is_empty()),
        clean(account),
    )
    .map_err(|_| MemberError::Sealed)
}

/// A code as typed: spaces dropped; exactly six digits, else [`MemberError::InvalidCode`].
fn clean_code(code: &str) -> Result<String, MemberError> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() == TOTP_DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err(MemberError::InvalidCode)
    }
}

/// The stored secret of `member`, opened: `(secret, enabled, last step used)`.
async fn stored_totp(
    conn: &mut Conn,
    secrets: &SecretBox,
    member: Uuid,
) -> Result<Option<(Vec<u8>, bool, Option<i64>)>, MemberError> {
    let Some(row) = members::totp(conn, member).await? else { return Err(MemberError::NotFound) };
    let Some(sealed) = row.secret_ciphertext else { return Ok(None) };
    let opened = secrets.open(&sealed).map_err(|_| MemberError::Sealed)?;
    let secret = hex::decode(opened.expose_secret()).map_err(|_| MemberError::Sealed)?;
    Ok(Some((secret, row.enabled_at.is_some(), row.last_step)))
}

/// The step (of the one before now, now and the one after) whose code `code` is, never one at or
/// before `last_step` (a code is accepted once).
fn step_of(totp: &totp_rs::TOTP, code: &str, now_secs: u64, last_step: Option<i64>) -> Option<i64> {
    let current = now_secs / TOTP_STEP_SECS;
    [current.saturating_sub(1), current, current + 1]
        .into_iter()
        .filter(|step| last_step.is_none_or(|last| *step as i64 > last))
        .find(|step| same_secret(&totp.generate(step * TOTP_STEP_SECS), code))
        .map(|step| step as i64)
}

fn now_secs() -> u64 {
    (now_ms().max(0) / 1000) as u64
}

/// The step of `code` for `member`'s TOTP in force, or why not.
async fn matching_step(store: &Store, secrets: &SecretBox, member: &Member, code: &str) -> Result<i64, MemberError> {
    let code = clean_code(code)?;
    let mut conn = store.conn().await?;
    let Some((secret, true, last_step)) = stored_totp(&mut conn, secrets, member.id).await? else {
        return Err(MemberError::TotpNotEnabled);
    };
    let totp = totp_of(secret, "depositd", &member.email)?;
    step_of(&totp, &code, now_secs(), last_step).ok_or(MemberError::WrongCode)
}

/// Starts `member`'s TOTP enrolment: a new secret, stored sealed (replacing one not yet
/// confirmed), returned once to show; `issuer` names the service in the authenticator app.
#[tracing::instrument(skip_all, fields(user_id = %member.id))]
pub async fn totp_begin(
    store: &Store,
    secrets: &SecretBox,
    member: &Member,
    issuer: &str,
) -> Result<TotpEnrolment, MemberError> {
    let mut secret = vec![0u8; TOTP_SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let sealed = secrets.seal(&SecretString::from(hex::encode(&secret)));
    let totp = totp_of(secret, issuer, &member.email)?;
    let mut tx = store.begin().await?;
    if !members::set_pending_totp(&mut tx, member.id, &sealed).await? {
        return Err(MemberError::TotpEnabled);
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(TotpEnrolment {
        uri: SecretString::from(totp.get_url()),
        secret_base32: SecretString::from(totp.get_secret_base32()),
    })
}

/// The enrolment under way (begun, not confirmed), to show again with a code refused.
pub async fn totp_pending(
    store: &Store,
    secrets: &SecretBox,
    member: &Member,
    issuer: &str,
) -> Result<Option<TotpEnrolment>, MemberError> {
    let mut conn = store.conn().await?;
    match stored_totp(&mut conn, secrets, member.id).await? {
        Some((secret, false, _)) => {
            let totp = totp_of(secret, issuer, &member.email)?;
            Ok(Some(TotpEnrolment {
                uri: SecretString::from(totp.get_url()),
                secret_base32: SecretString::from(totp.get_secret_base32()),
            }))
        }
        _ => Ok(None),
    }
}

/// Confirms `member`'s enrolment with a current `code`, in `tx` (with the caller's audit record):
/// from then on sign-in asks for a code.
#[tracing::instrument(skip_all, fields(user_id = %member.id))]
pub async fn totp_confirm(tx: &mut Tx, secrets: &SecretBox, member: &Member, code: &str) -> Result<(), MemberError> {
    let code = clean_code(code)?;
    let (secret, last_step) = match stored_totp(tx, secrets, member.id).await? {
        Some((_, true, _)) => return Err(MemberError::TotpEnabled),
        Some((secret, false, last_step)) => (secret, last_step),
        None => return Err(MemberError::TotpNotStarted),
    };
    let totp = totp_of(secret, "depositd", &member.email)?;
    let step = step_of(&totp, &code, now_secs(), last_step).ok_or(MemberError::WrongCode)?;
    if !members::enable_totp(tx, member.id, now_ms(), step).await? {
        return Err(MemberError::TotpNotStarted);
    }
    tracing::info!(user_id = %member.id, "member enabled TOTP");
    Ok(())
}

/// Checks a current TOTP `code` of `member` from `client`, throttled like sign-in (a wrong code
/// is a failed sign-in); the code is used up.
#[tracing::instrument(skip_all, fields(user_id = %member.id))]
pub async fn check_code(
    store: &Store,
    secrets: &SecretBox,
    member: &Member,
    code: &str,
    client: &str,
) -> Result<(), MemberError> {
    clean_code(code)?;
    attempt(store, &member.email, client).await?;
    let step = matching_step(store, secrets, member, code).await?;
    let mut tx = store.begin().await?;
    if !members::use_totp_step(&mut tx, member.id, step).await? {
        return Err(MemberError::WrongCode);
    }
    members::clear_failures(&mut tx, &member.email).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

/// Turns `member`'s TOTP off in `tx` (after [`check_code`], with the caller's audit record).
#[tracing::instrument(skip_all, fields(user_id = %member.id))]
pub async fn totp_disable(tx: &mut Tx, member: &Member) -> Result<(), MemberError> {
    if members::get(tx, member.id).await?.and_then(|m| m.totp_enabled_at).is_none() {
        return Err(MemberError::TotpNotEnabled);
    }
    members::clear_totp(tx, member.id).await?;
    tracing::info!(user_id = %member.id, "member disabled TOTP");
    Ok(())
}

// === re-authentication ===

/// Re-authenticates `member` before a money move: `password_or_code` is the member's password,
/// or (when the member has TOTP on) a current code from the authenticator app. Throttled like
/// sign-in (per account and per `client`): a wrong answer counts as a failed sign-in, too many
/// are [`MemberError::Throttled`]. Wrong: [`MemberError::WrongPassword`].
#[tracing::instrument(skip_all, fields(user_id = %member.id))]
pub async fn reauthenticate(
    store: &Store,
    secrets: &SecretBox,
    member: &Member,
    password_or_code: &SecretString,
    client: &str,
) -> Result<(), MemberError> {
    // The member as stored now (a password changed or TOTP turned on since the session began).
    let member = {
        let mut conn = store.conn().await?;
        members::get(&mut conn, member.id).await?.ok_or(MemberError::NotFound)?
    };
    let totp = member.totp_enabled_at.is_some();
    if totp && let Ok(code) = clean_code(password_or_code.expose_secret()) {
        return match check_code(store, secrets, &member, &code, client).await {
            Err(MemberError::WrongCode) => Err(MemberError::WrongPassword { totp }),
            other => other,
        };
    }
    let turn = argon2_turn().await?;
    attempt(store, &member.email, client).await?;
    let good = verify_password(password_or_code, member.password_hash.clone()).await;
    drop(turn);
    if !good {
        return Err(MemberError::WrongPassword { totp });
    }
    let mut tx = store.begin().await?;
    members::clear_failures(&mut tx, &member.email).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

// === the team ===

/// Member `member_id` of `actor`'s merchant (another merchant's is not found).
async fn team_member(conn: &mut Conn, actor: &Member, member_id: Uuid) -> Result<Member, MemberError> {
    members::get(conn, member_id).await?.filter(|m| m.merchant_id == actor.merchant_id).ok_or(MemberError::NotFound)
}

/// Whether taking `target`'s owner role (demoting or removing) would leave the team without an
/// owner who signs in.
async fn is_last_owner(conn: &mut Conn, target: &Member) -> Result<bool, MemberError> {
    Ok(target.role == Role::Owner
        && target.password_hash.is_some()
        && members::active_owner_count(conn, target.merchant_id).await? <= 1)
}

/// Gives member `member_id` of `actor`'s team `role`, in `tx` (the caller records it); the last
/// owner who signs in cannot be given another role. Returns the member as it was.
#[tracing::instrument(skip(tx, actor), fields(actor = %actor.id))]
pub async fn change_role(tx: &mut Tx, actor: &Member, member_id: Uuid, role: Role) -> Result<Member, MemberError> {
    members::lock_team(tx, actor.merchant_id).await?;
    let target = team_member(tx, actor, member_id).await?;
    if role != Role::Owner && is_last_owner(tx, &target).await? {
        return Err(MemberError::LastOwner);
    }
    members::set_role(tx, target.id, role).await?;
    tracing::info!(user_id = %target.id, from = %target.role, to = %role, "member's role changed");
    Ok(target)
}

/// Removes member `member_id` from `actor`'s team, in `tx` (the caller records it): its invites
/// and sessions end with it. The last owner who signs in cannot be removed. Returns the member.
#[tracing::instrument(skip(tx, actor), fields(actor = %actor.id))]
pub async fn remove(tx: &mut Tx, actor: &Member, member_id: Uuid) -> Result<Member, MemberError> {
    members::lock_team(tx, actor.merchant_id).await?;
    let target = team_member(tx, actor, member_id).await?;
    if is_last_owner(tx, &target).await? {
        return Err(MemberError::LastOwner);
    }
    members::delete(tx, target.id).await?;
    tracing::info!(user_id = %target.id, "member removed");
    Ok(target)
}

/// Opens a session for member `user_id` in `tx`.
pub async fn open_session(tx: &mut Tx, user_id: Uuid) -> Result<OpenedSession, StoreError> {
    let now = now_ms();
    members::delete_expired_sessions(tx, now).await?;
    let token = random_token();
    let session = Session {
        id_hash: hash_token(&token),
        user_id,
        csrf_token: random_token(),
        created_at: now,
        expires_at: now + SESSION_LIFETIME.as_millis() as i64,
        last_seen_at: now,
    };
    members::insert_session(tx, &session).await?;
    Ok(OpenedSession { token: SecretString::from(token), session })
}

/// The session a cookie's token names and its member, if the session has not ended; notes its
/// use (at most once a minute).
pub async fn session(store: &Store, token: &str) -> Result<Option<(Session, Member)>, StoreError> {
    let now = now_ms();
    let id_hash = hash_token(token);
    let (session, member) = {
        let mut conn = store.conn().await?;
        let Some(session) = members::session(&mut conn, &id_hash).await? else { return Ok(None) };
        if session.expires_at <= now || session.last_seen_at + SESSION_IDLE.as_millis() as i64 <= now {
            return Ok(None);
        }
        let Some(member) = members::get(&mut conn, session.user_id).await? else { return Ok(None) };
        (session, member)
    };
    if now - session.last_seen_at >= SESSION_TOUCH.as_millis() as i64 {
        let mut tx = store.begin().await?;
        members::touch_session(&mut tx, &id_hash, now).await?;
        tx.commit().await?;
    }
    Ok(Some((session, member)))
}

/// Ends the session a cookie's token names (nothing if it has none).
pub async fn sign_out(store: &Store, token: &str) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    members::delete_session(&mut tx, &hash_token(token)).await?;
    tx.commit().await?;
    Ok(())
}

/// Ends every session of member `user_id`, the one asking included; returns how many ended.
pub async fn sign_out_everywhere(store: &Store, user_id: Uuid) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    let ended = members::delete_sessions_of(&mut tx, user_id, None).await?;
    tx.commit().await?;
    tracing::info!(%user_id, ended, "member signed out everywhere");
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_or_refused() {
        assert_eq!(normalize_email("  Ann@Shop.Example ").unwrap(), "ann@shop.example");
        for bad in ["", "ann", "ann@", "@shop.example", "ann@shop", "a b@shop.example", "a@b@shop.example", "a@.shop"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn passwords_hash_with_argon2id_and_verify() {
        let password = SecretString::from("correct horse battery".to_owned());
        let hash = hash_password(&password).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&password, Some(hash.clone())).await);
        assert!(!verify_password(&SecretString::from("wrong horse battery".to_owned()), Some(hash)).await);
        assert!(!verify_password(&password, None).await, "no stored hash never verifies");
        assert!(PasswordHash::new(DUMMY_HASH).is_ok(), "the dummy hash parses, so it costs a real verification");
    }

    #[tokio::test]
    async fn a_password_waits_for_a_turn_then_is_refused_as_busy() {
        // Its own turns, not the process's (other tests hash meanwhile).
        let turns = Semaphore::new(2);
        let all = turns.acquire_many(2).await.unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(turn_of(&turns).await, Err(MemberError::Busy)));
        assert!(started.elapsed() >= ARGON2_WAIT);
        drop(all);
        assert!(turn_of(&turns).await.is_ok());
        assert!(ARGON2_TURNS.available_permits() >= 1, "one turn per CPU");
    }

    #[test]
    fn totp_codes_follow_rfc_6238_and_are_accepted_once() {
        // RFC 6238 appendix B's SHA-1 secret: at T = 59 s the 8-digit code is 94287082, so the
        // 6-digit one is 287082; at T = 1111111109 s, 07081804 -> 081804.
        let totp = totp_of(b"12345678901234567890".to_vec(), "depositd", "a@shop.example").unwrap();
        assert_eq!(totp.generate(59), "287082");
        assert_eq!(totp.generate(1_111_111_109), "081804");
        let now = 1_111_111_109;
        let step = (now / TOTP_STEP_SECS) as i64;
        assert_eq!(step_of(&totp, "081804", now, None), Some(step));
        // The step before and after are accepted (clock skew), none further.
        assert_eq!(step_of(&totp, &totp.generate(now - 30), now, None), Some(step - 1));
        assert_eq!(step_of(&totp, &totp.generate(now + 30), now, None), Some(step + 1));
        assert_eq!(step_of(&totp, &totp.generate(now - 60), now, None), None);
        // A code of a step already used (or before it) is refused.
        assert_eq!(step_of(&totp, "081804", now, Some(step)), None);
        assert_eq!(step_of(&totp, &totp.generate(now + 30), now, Some(step)), Some(step + 1));
        assert!(totp.get_url().starts_with("otpauth://totp/depositd:a%40shop.example?secret="));
    }

    #[test]
    fn codes_are_six_digits_spaces_aside() {
        assert_eq!(clean_code(" 123 456 ").unwrap(), "123456");
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６"] {
            assert!(matches!(clean_code(bad), Err(MemberError::InvalidCode)), "{bad}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd") && !same_secret("abc", "ab"));
    }
}
