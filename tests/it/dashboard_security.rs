//! The dashboard's team, TOTP second factor, re-authentication and overview (issue 20) over
//! real HTTP on both backends: TOTP enrolment (the secret sealed, shown once), sign-in with a
//! code (wrong codes throttled like passwords, a code accepted once), turning it off;
//! re-authentication with the password and with a code; the team (invites from the dashboard,
//! e-mailed through the outbox, as the operator's from the CLI are, used once and within 24 h;
//! role changes; the last owner kept;
//! a removed member's session ended; a viewer refused each write); CSRF on every new form; the
//! overview's charts, payments (paid on anvil) and webhook health.
//!
//! What tests/it/dashboard.rs covers already (password throttling, CLI invites, log out
//! everywhere, API keys) is not repeated here. Codes are computed here, independently of the
//! product's TOTP crate, from RFC 6238 (HMAC-SHA-1, 30-second steps, 6 digits).

use alloy::primitives::Address;
use depositd_core::api_key::Scope;
use depositd_core::member::Role;
use depositd_core::members::{self, MemberError};
use depositd_core::store::emails::{self, EmailKind};
use depositd_core::store::members as member_rows;
use depositd_testkit::chain::TestChain;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::dashboard::{Browser, PASSWORD, Page, csrf_of, member};
use crate::dashboard_money::{DEST, USDC, fund, hidden, text_of};
use crate::helpers::{TestApp, TestDb, both_backends, use_test_chain};

both_backends!(
    totp_enrol_sign_in_throttle_and_disable,
    reauthentication_takes_the_password_or_a_code,
    team_invites_roles_last_owner_and_removal,
    a_viewer_is_refused_every_team_write,
    every_new_form_needs_its_csrf_token,
    the_overview_charts_payments_and_webhook_health,
    the_operators_invite_is_emailed_once_with_smtp,
);

// === RFC 6238, independently ===

/// RFC 4648 base32 (no padding) to bytes.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u64, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let index = ALPHABET.iter().position(|a| *a == c).expect("a base32 character") as u64;
        value = (value << 5) | index;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
            value &= (1 << bits) - 1;
        }
    }
    out
}

/// The code of `step` (RFC 6238 with SHA-1, 6 digits).
fn code_at(secret: &[u8], step: u64) -> String {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).unwrap();
    mac.update(&step.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[19] & 0x0f) as usize;
    let number = u32::from_be_bytes([hash[offset] & 0x7f, hash[offset + 1], hash[offset + 2], hash[offset + 3]]);
    format!("{:06}", number % 1_000_000)
}

fn current_step() -> u64 {
    (depositd_core::time::now_ms() / 1000 / 30) as u64
}

fn code_now(secret: &[u8]) -> String {
    code_at(secret, current_step())
}

/// A six-digit code that is none of the ones accepted now (the step before, now, the next).
fn wrong_code(secret: &[u8]) -> String {
    let step = current_step();
    let valid = [code_at(secret, step - 1), code_at(secret, step), code_at(secret, step + 1)];
    (0..).map(|n: u32| format!("{:06}", 123_456 + n)).find(|c| !valid.contains(c)).unwrap()
}

/// The value of the input `id` of a page.
fn input_value(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\" class=\"mono\" readonly value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {id} on the page: {html}")) + marker.len();
    html[start..].split('"').next().unwrap().replace("&amp;", "&").replace("&#x3d;", "=").replace("&#61;", "=")
}

/// As if the failed sign-ins had happened more than the throttle's window ago.
async fn forget_failures(app: &TestApp) {
    let mut conn = app.store.conn().await.unwrap();
    sqlx::query("DELETE FROM login_failures").execute(&mut *conn).await.unwrap();
}

/// As if the last code accepted were from long ago (each test step below needs a code of its
/// own, and a code is accepted once: this lets the next use the current one).
async fn forget_last_code(app: &TestApp, email: &str) {
    let mut conn = app.store.conn().await.unwrap();
    sqlx::query("UPDATE merchant_users SET totp_last_step = NULL WHERE email = $1")
        .bind(email)
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// Signs `email` in and enrols TOTP through the pages; returns the browser and the secret.
async fn enrolled<'a>(app: &'a TestApp, email: &str) -> (Browser<'a>, Vec<u8>) {
    let mut browser = Browser::new(app);
    assert_eq!(browser.sign_in(email, PASSWORD).await.status, 303);
    let page = browser.get("/dashboard/settings/security").await;
    let csrf = csrf_of(&page.body);
    let enrolment = browser.post("/dashboard/settings/security/totp/enrol", &[("csrf", &csrf)]).await;
    assert_eq!(enrolment.status, 200, "{}", enrolment.body);
    let secret = base32_decode(&input_value(&enrolment.body, "totp-secret"));
    let code = code_now(&secret);
    let confirmed =
        browser.post("/dashboard/settings/security/totp/confirm", &[("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    (browser, secret)
}

/// Member `email`'s `member.action` events' actions, oldest first.
async fn actions_about(app: &TestApp, resource: Uuid) -> Vec<String> {
    let mut conn = app.store.conn().await.unwrap();
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT payload FROM events WHERE resource_id = $1 AND event_type = 'member.action' ORDER BY id",
    )
    .bind(resource.to_string())
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    rows.iter()
        .map(|(payload,)| {
            let event: Value = serde_json::from_str(payload).unwrap();
            event["data"]["action"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn member_id(app: &TestApp, email: &str) -> Uuid {
    member_rows::by_email(&mut app.store.conn().await.unwrap(), email).await.unwrap().unwrap().id
}

fn assert_field_error(page: &Page, field: &str, message: &str) {
    assert!(page.body.contains(&format!("id=\"{field}-error\"")), "no {field}-error: {}", page.body);
    assert!(page.body.contains(&format!("aria-describedby=\"{field}-error\"")), "{}", page.body);
    assert!(page.body.contains(message), "no {message:?}: {}", page.body);
}

// === TOTP ===

async fn totp_enrol_sign_in_throttle_and_disable(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Totp Shop", &Scope::MERCHANT).await;
    let email = "owner@totp.example";
    member(&app, merchant.id, email, Role::Owner).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in(email, PASSWORD).await.status, 303);
    let page = browser.get("/dashboard/settings/security").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Off: signing in asks for your password only"), "{}", page.body);
    let csrf = csrf_of(&page.body);

    // Enrolment: the secret as an otpauth URI, an inline SVG QR code and base32.
    let enrolment = browser.post("/dashboard/settings/security/totp/enrol", &[("csrf", &csrf)]).await;
    assert_eq!(enrolment.status, 200, "{}", enrolment.body);
    let uri = input_value(&enrolment.body, "totp-uri");
    let base32 = input_value(&enrolment.body, "totp-secret");
    assert!(uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={base32}")), "{uri}");
    assert!(enrolment.body.contains("<svg") && !enrolment.body.contains("<?xml"), "an inline SVG QR code");
    let secret = base32_decode(&base32);
    assert_eq!(secret.len(), 20, "160 bits");
    // Stored sealed: the database does not hold the secret.
    let mut conn = app.store.conn().await.unwrap();
    let (stored,): (String,) = sqlx::query_as("SELECT totp_secret_ciphertext FROM merchant_users WHERE email = $1")
        .bind(email)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    assert!(stored.starts_with("v1:") && !stored.contains(&base32));

    // A wrong code does not turn it on; the error is next to the field, the enrolment shown again.
    let wrong = browser
        .post("/dashboard/settings/security/totp/confirm", &[("csrf", &csrf), ("code", &wrong_code(&secret))])
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_field_error(&wrong, "code", "the code is not correct");
    assert_eq!(input_value(&wrong.body, "totp-secret"), base32);
    let malformed =
        browser.post("/dashboard/settings/security/totp/confirm", &[("csrf", &csrf), ("code", "12ab")]).await;
    assert_eq!(malformed.status, 400);
    assert_field_error(&malformed, "code", "enter the 6-digit code");
    let confirmed = browser
        .post("/dashboard/settings/security/totp/confirm", &[("csrf", &csrf), ("code", &code_now(&secret))])
        .await;
    assert_eq!((confirmed.status, confirmed.location.as_deref()), (303, Some("/dashboard/settings/security")));
    let page = browser.get("/dashboard/settings/security").await;
    assert!(page.body.contains("On since"), "{}", page.body);
    assert!(!page.body.contains(&base32) && !page.body.contains("otpauth://"), "the secret is never shown again");
    let id = member_id(&app, email).await;
    let shown = format!("{:?}", member_rows::get(&mut app.store.conn().await.unwrap(), id).await.unwrap().unwrap());
    assert!(!shown.contains(&base32) && !shown.contains("v1:"), "{shown}");
    assert_eq!(actions_about(&app, id).await, ["member.totp_enable"]);

    // Sign-in now asks for a code after the password; no session before it.
    let out = browser.post("/dashboard/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    let asked = browser.sign_in(email, PASSWORD).await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    assert!(asked.body.contains("action=\"/dashboard/login/code\"") && asked.body.contains("Authenticator code"));
    assert!(!browser.cookies.contains_key("depositd_session"), "no session before the code");
    assert_eq!(browser.get("/dashboard").await.status, 303);
    let code_csrf = csrf_of(&asked.body);
    let wrong = browser.post("/dashboard/login/code", &[("csrf", &code_csrf), ("code", &wrong_code(&secret))]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_field_error(&wrong, "code", "the code is not correct");
    // The code of the step the enrolment used is spent: the next step's (accepted already).
    let code = code_at(&secret, current_step() + 1);
    let signed_in = browser.post("/dashboard/login/code", &[("csrf", &code_csrf), ("code", &code)]).await;
    assert_eq!((signed_in.status, signed_in.location.as_deref()), (303, Some("/dashboard")), "{}", signed_in.body);
    assert_eq!(browser.get("/dashboard").await.status, 200);

    // The same code is accepted once: a second browser cannot replay it.
    let mut other = Browser::new(&app);
    let asked = other.sign_in(email, PASSWORD).await;
    assert_eq!(asked.status, 200);
    let other_csrf = csrf_of(&asked.body);
    let replayed = other.post("/dashboard/login/code", &[("csrf", &other_csrf), ("code", &code)]).await;
    assert_eq!(replayed.status, 401, "a code is accepted once: {}", replayed.body);
    assert!(!other.cookies.contains_key("depositd_session"));

    // Wrong codes count like wrong passwords: the password attempt and the wrong code above,
    // then three more, and the next is throttled, the right code too.
    forget_failures(&app).await;
    forget_last_code(&app, email).await;
    let mut third = Browser::new(&app);
    let asked = third.sign_in(email, PASSWORD).await;
    assert_eq!(asked.status, 200);
    let third_csrf = csrf_of(&asked.body);
    for _ in 0..members::MAX_FAILURES_PER_ACCOUNT - 1 {
        let wrong = third.post("/dashboard/login/code", &[("csrf", &third_csrf), ("code", &wrong_code(&secret))]).await;
        assert_eq!(wrong.status, 401, "{}", wrong.body);
    }
    let throttled = third.post("/dashboard/login/code", &[("csrf", &third_csrf), ("code", &code_now(&secret))]).await;
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert_field_error(&throttled, "code", "too many failed sign-ins for this account");
    assert!(!third.cookies.contains_key("depositd_session"));

    // Turning it off asks for a current code (throttled the same way), then sign-in is password only.
    forget_failures(&app).await;
    forget_last_code(&app, email).await;
    let page = browser.get("/dashboard/settings/security").await;
    let csrf = csrf_of(&page.body);
    let wrong = browser
        .post("/dashboard/settings/security/totp/disable", &[("csrf", &csrf), ("code", &wrong_code(&secret))])
        .await;
    assert_eq!(wrong.status, 401);
    assert_field_error(&wrong, "code", "the code is not correct");
    let off = browser
        .post("/dashboard/settings/security/totp/disable", &[("csrf", &csrf), ("code", &code_now(&secret))])
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert!(off.body.contains("Two-factor authentication is off"));
    assert_eq!(actions_about(&app, id).await, ["member.totp_enable", "member.totp_disable"]);
    let mut fourth = Browser::new(&app);
    assert_eq!(fourth.sign_in(email, PASSWORD).await.status, 303);
}

// === re-authentication ===

async fn reauthentication_takes_the_password_or_a_code(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Reauth Shop", &Scope::MERCHANT).await;
    let email = "owner@reauth.example";
    member(&app, merchant.id, email, Role::Owner).await;
    let secrets = &app.state.webhook_secrets;
    let me = member_rows::by_email(&mut app.store.conn().await.unwrap(), email).await.unwrap().unwrap();
    let secret = |s: &str| SecretString::from(s.to_owned());
    let client = "session:test";

    members::reauthenticate(&app.store, secrets, &me, &secret(PASSWORD), client).await.unwrap();
    let wrong = members::reauthenticate(&app.store, secrets, &me, &secret("not the password"), client).await;
    assert!(matches!(wrong, Err(MemberError::WrongPassword { totp: false })), "{wrong:?}");
    assert_eq!(wrong.unwrap_err().to_string(), "the password is not correct");
    // Without TOTP a six-digit answer is a (wrong) password.
    let digits = members::reauthenticate(&app.store, secrets, &me, &secret("123456"), client).await;
    assert!(matches!(digits, Err(MemberError::WrongPassword { totp: false })));

    // Throttled like sign-in: after the limit, even the right password is refused.
    forget_failures(&app).await;
    for _ in 0..members::MAX_FAILURES_PER_ACCOUNT {
        let wrong = members::reauthenticate(&app.store, secrets, &me, &secret("not the password"), client).await;
        assert!(matches!(wrong, Err(MemberError::WrongPassword { .. })));
    }
    let throttled = members::reauthenticate(&app.store, secrets, &me, &secret(PASSWORD), client).await;
    assert!(matches!(throttled, Err(MemberError::Throttled { account: true, .. })), "{throttled:?}");
    forget_failures(&app).await;

    // With TOTP on (enrolled through the pages): a current code, once; the password still works.
    let (mut browser, totp) = enrolled(&app, email).await;
    forget_last_code(&app, email).await;
    let me = member_rows::by_email(&mut app.store.conn().await.unwrap(), email).await.unwrap().unwrap();
    let code = code_now(&totp);
    members::reauthenticate(&app.store, secrets, &me, &secret(&code), client).await.unwrap();
    let replayed = members::reauthenticate(&app.store, secrets, &me, &secret(&code), client).await;
    assert!(matches!(replayed, Err(MemberError::WrongPassword { totp: true })), "{replayed:?}");
    assert_eq!(replayed.unwrap_err().to_string(), "the password or the code is not correct");
    let wrong = members::reauthenticate(&app.store, secrets, &me, &secret(&wrong_code(&totp)), client).await;
    assert!(matches!(wrong, Err(MemberError::WrongPassword { totp: true })));
    members::reauthenticate(&app.store, secrets, &me, &secret(PASSWORD), client).await.unwrap();

    // A payout confirmed with a wrong code: the shared message (not "the password is not
    // correct", which would mislead a member who typed a code), and nothing created.
    fund(&app, merchant.id, "USDC", 10 * USDC, "funding").await;
    let csrf = csrf_of(&browser.get("/dashboard/payouts/new").await.body);
    let fields = [
        ("csrf", csrf.as_str()),
        ("chain", "anvil"),
        ("asset", "USDC"),
        ("destination", DEST),
        ("amount", "4"),
        ("reference", ""),
    ];
    let review = browser.post("/dashboard/payouts/new", &fields).await;
    assert_eq!(review.status, 200, "{}", review.body);
    let key = hidden(&review.body, "idempotency_key");
    let code = wrong_code(&totp);
    let mut confirm = fields.to_vec();
    confirm.extend([("idempotency_key", key.as_str()), ("password", code.as_str())]);
    let refused = browser.post("/dashboard/payouts", &confirm).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(
        text_of(&refused.body, "password-error"),
        "the password or the code is not correct; nothing was created"
    );
    let mut conn = app.store.conn().await.unwrap();
    let payouts = depositd_core::store::payouts::list(&mut conn, merchant.id, None, None, None, 10).await.unwrap();
    assert!(payouts.is_empty(), "a wrong code creates nothing");
}

// === the team ===

async fn team_invites_roles_last_owner_and_removal(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    app.store.set_mail_enabled(true);
    let (merchant, _) = app.merchant("Team Shop", &Scope::MERCHANT).await;
    let (other_shop, _) = app.merchant("Other Shop", &Scope::MERCHANT).await;
    member(&app, merchant.id, "owner@team.example", Role::Owner).await;
    member(&app, other_shop.id, "owner@other.example", Role::Owner).await;
    let owner_id = member_id(&app, "owner@team.example").await;
    let mut owner = Browser::new(&app);
    assert_eq!(owner.sign_in("owner@team.example", PASSWORD).await.status, 303);
    let page = owner.get("/dashboard/settings/team").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("owner@team.example (you)") && !page.body.contains("owner@other.example"));
    let csrf = csrf_of(&page.body);

    // Form errors next to their fields.
    let bad = owner.post("/dashboard/settings/team", &[("csrf", &csrf), ("email", "nope"), ("role", "viewer")]).await;
    assert_eq!(bad.status, 400);
    assert_field_error(&bad, "email", "enter a valid email address");
    let bad = owner
        .post("/dashboard/settings/team", &[("csrf", &csrf), ("email", "x@team.example"), ("role", "admin")])
        .await;
    assert_eq!(bad.status, 400);
    assert_field_error(&bad, "role", "choose viewer, developer or owner");
    let taken = owner
        .post("/dashboard/settings/team", &[("csrf", &csrf), ("email", "owner@other.example"), ("role", "viewer")])
        .await;
    assert_eq!(taken.status, 400);
    assert_field_error(&taken, "email", "already a member of another merchant");

    // An invite: the link shown once, e-mailed once through the outbox, recorded.
    let invited = owner
        .post("/dashboard/settings/team", &[("csrf", &csrf), ("email", "Dev@Team.Example"), ("role", "developer")])
        .await;
    assert_eq!(invited.status, 201, "{}", invited.body);
    let link = input_value(&invited.body, "invite-link");
    let path = link.split_once("://").unwrap().1;
    let path = &path[path.find('/').unwrap()..];
    assert!(path.starts_with("/dashboard/invite/") && path.len() == 18 + 64, "{link}");
    assert!(invited.body.contains("only time it is shown"));
    assert!(!owner.get("/dashboard/settings/team").await.body.contains(&link), "the link is shown once");
    let dev_id = member_id(&app, "dev@team.example").await;
    let mails = emails::all(&mut app.store.conn().await.unwrap()).await.unwrap();
    let invites: Vec<_> = mails.iter().filter(|m| m.kind == EmailKind::MemberInvite).collect();
    assert_eq!(invites.len(), 1, "{mails:?}");
    assert_eq!(invites[0].recipient, "dev@team.example");
    assert!(invites[0].body.contains(&link) && invites[0].subject.contains("Team Shop"));
    assert_eq!(actions_about(&app, dev_id).await, ["member.invite"]);
    let mut conn = app.store.conn().await.unwrap();
    let (payload,): (String,) = sqlx::query_as("SELECT payload FROM events WHERE resource_id = $1")
        .bind(dev_id.to_string())
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    assert!(!payload.contains(&link[link.len() - 64..]), "the token is in no event");

    // The invited member sets a password; the link is refused the second time.
    let mut dev = Browser::new(&app);
    let form = dev.get(path).await;
    assert_eq!(form.status, 200);
    let dev_csrf = csrf_of(&form.body);
    assert_eq!(dev.post(path, &[("csrf", &dev_csrf), ("password", PASSWORD)]).await.status, 200);
    let again = dev.post(path, &[("csrf", &dev_csrf), ("password", PASSWORD)]).await;
    assert_eq!(again.status, 410);
    assert!(again.body.contains("already used"));
    // Inviting an active member again is refused next to the field.
    let twice = owner
        .post("/dashboard/settings/team", &[("csrf", &csrf), ("email", "dev@team.example"), ("role", "viewer")])
        .await;
    assert_eq!(twice.status, 400);
    assert_field_error(&twice, "email", "already a member and signs in with a password");

    // A dashboard invite more than 24 hours old is refused.
    let late = owner
        .post("/dashboard/settings/team", &[("csrf", &csrf), ("email", "late@team.example"), ("role", "viewer")])
        .await;
    assert_eq!(late.status, 201);
    let late_link = input_value(&late.body, "invite-link");
    let late_path = &late_link[late_link.find("/dashboard/invite/").unwrap()..];
    let mut conn = app.store.conn().await.unwrap();
    sqlx::query("UPDATE merchant_invites SET expires_at = $1 WHERE user_id = $2")
        .bind(depositd_core::time::now_ms() - 1)
        .bind(member_id(&app, "late@team.example").await.to_string())
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let expired = Browser::new(&app).get(late_path).await;
    assert_eq!(expired.status, 410);
    assert!(expired.body.contains("expired"));

    // Role changes.
    let role = format!("/dashboard/settings/team/{dev_id}/role");
    let changed = owner.post(&role, &[("csrf", &csrf), ("role", "viewer")]).await;
    assert_eq!((changed.status, changed.location.as_deref()), (303, Some("/dashboard/settings/team")));
    let dev_row = member_rows::get(&mut app.store.conn().await.unwrap(), dev_id).await.unwrap().unwrap();
    assert_eq!(dev_row.role, Role::Viewer);
    let bad = owner.post(&role, &[("csrf", &csrf), ("role", "root")]).await;
    assert_eq!(bad.status, 400);
    assert_field_error(&bad, &format!("member-{dev_id}"), "choose viewer, developer or owner");

    // The last owner can be neither demoted nor removed.
    let own_role = format!("/dashboard/settings/team/{owner_id}/role");
    let demote = owner.post(&own_role, &[("csrf", &csrf), ("role", "developer")]).await;
    assert_eq!(demote.status, 409, "{}", demote.body);
    assert_field_error(&demote, &format!("member-{owner_id}"), "the team needs an owner who can sign in");
    let remove_self = owner.post(&format!("/dashboard/settings/team/{owner_id}/remove"), &[("csrf", &csrf)]).await;
    assert_eq!(remove_self.status, 409);
    let me = member_rows::get(&mut app.store.conn().await.unwrap(), owner_id).await.unwrap().unwrap();
    assert_eq!(me.role, Role::Owner);

    // Another merchant's member is not found.
    let stranger = member_id(&app, "owner@other.example").await;
    let refused =
        owner.post(&format!("/dashboard/settings/team/{stranger}/role"), &[("csrf", &csrf), ("role", "viewer")]).await;
    assert_eq!(refused.status, 404);
    assert_eq!(
        owner.post(&format!("/dashboard/settings/team/{stranger}/remove"), &[("csrf", &csrf)]).await.status,
        404
    );
    let kept = member_rows::get(&mut app.store.conn().await.unwrap(), stranger).await.unwrap().unwrap();
    assert_eq!(kept.role, Role::Owner);

    // With a second owner, the first may step down; a removed member's session ends at once.
    assert_eq!(dev.sign_in("dev@team.example", PASSWORD).await.status, 303);
    assert_eq!(dev.get("/dashboard").await.status, 200);
    assert_eq!(owner.post(&role, &[("csrf", &csrf), ("role", "owner")]).await.status, 303);
    let removed = owner.post(&format!("/dashboard/settings/team/{dev_id}/remove"), &[("csrf", &csrf)]).await;
    assert_eq!(removed.status, 303);
    let after = dev.get("/dashboard").await;
    assert_eq!((after.status, after.location.as_deref()), (303, Some("/dashboard/login")));
    assert_eq!(dev.sign_in("dev@team.example", PASSWORD).await.status, 401);
    assert!(member_rows::get(&mut app.store.conn().await.unwrap(), dev_id).await.unwrap().is_none());
    assert_eq!(
        actions_about(&app, dev_id).await,
        ["member.invite", "member.role_change", "member.role_change", "member.remove"]
    );
}

async fn a_viewer_is_refused_every_team_write(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("View Shop", &Scope::MERCHANT).await;
    member(&app, merchant.id, "owner@view.example", Role::Owner).await;
    member(&app, merchant.id, "viewer@view.example", Role::Viewer).await;
    member(&app, merchant.id, "dev@view.example", Role::Developer).await;
    let owner_id = member_id(&app, "owner@view.example").await;
    for (email, role) in [("viewer@view.example", "viewer"), ("dev@view.example", "developer")] {
        let mut browser = Browser::new(&app);
        assert_eq!(browser.sign_in(email, PASSWORD).await.status, 303);
        let page = browser.get("/dashboard/settings/team").await;
        assert_eq!(page.status, 200, "every member reads the team");
        assert!(page.body.contains("owner@view.example"));
        assert!(!page.body.contains("Invite a member") && !page.body.contains("/remove\""), "no write controls");
        let csrf = csrf_of(&page.body);
        let writes = [
            ("/dashboard/settings/team".to_owned(), vec![("email", "new@view.example"), ("role", "owner")]),
            (format!("/dashboard/settings/team/{owner_id}/role"), vec![("role", "viewer")]),
            (format!("/dashboard/settings/team/{owner_id}/remove"), vec![]),
        ];
        for (path, mut fields) in writes {
            fields.push(("csrf", &csrf));
            let refused = browser.post(&path, &fields).await;
            assert_eq!(refused.status, 403, "{path}: {}", refused.body);
            assert!(refused.body.contains(&format!("Your role ({role}) cannot do this")));
        }
    }
    let team = member_rows::list(&mut app.store.conn().await.unwrap(), merchant.id).await.unwrap();
    assert_eq!(team.len(), 3, "nobody was invited");
    assert!(team.iter().any(|m| m.id == owner_id && m.role == Role::Owner), "the owner is unchanged");
}

async fn every_new_form_needs_its_csrf_token(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Csrf Shop", &Scope::MERCHANT).await;
    member(&app, merchant.id, "owner@csrf.example", Role::Owner).await;
    member(&app, merchant.id, "dev@csrf.example", Role::Developer).await;
    let dev_id = member_id(&app, "dev@csrf.example").await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in("owner@csrf.example", PASSWORD).await.status, 303);
    let forms: [(String, Vec<(&str, &str)>); 6] = [
        ("/dashboard/settings/team".into(), vec![("email", "x@csrf.example"), ("role", "viewer")]),
        (format!("/dashboard/settings/team/{dev_id}/role"), vec![("role", "owner")]),
        (format!("/dashboard/settings/team/{dev_id}/remove"), vec![]),
        ("/dashboard/settings/security/totp/enrol".into(), vec![]),
        ("/dashboard/settings/security/totp/confirm".into(), vec![("code", "123456")]),
        ("/dashboard/settings/security/totp/disable".into(), vec![("code", "123456")]),
    ];
    let wrong = "0".repeat(64);
    for (path, fields) in &forms {
        assert_eq!(browser.post(path, fields).await.status, 403, "{path} without a token");
        let mut with_wrong = fields.clone();
        with_wrong.push(("csrf", &wrong));
        let refused = browser.post(path, &with_wrong).await;
        assert_eq!(refused.status, 403, "{path} with a wrong token");
        assert!(refused.body.contains("CSRF check failed"));
    }
    // Nothing was done.
    let team = member_rows::list(&mut app.store.conn().await.unwrap(), merchant.id).await.unwrap();
    assert_eq!(team.len(), 2);
    assert!(team.iter().any(|m| m.id == dev_id && m.role == Role::Developer));
    let mut conn = app.store.conn().await.unwrap();
    let (sealed,): (Option<String>,) =
        sqlx::query_as("SELECT totp_secret_ciphertext FROM merchant_users WHERE id = $1")
            .bind(member_id(&app, "owner@csrf.example").await.to_string())
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    drop(conn);
    assert!(sealed.is_none(), "no enrolment began");

    // The sign-in's code step: its pre-session token, not missing, not wrong.
    let (mut totp_owner, _secret) = enrolled(&app, "dev@csrf.example").await;
    drop(totp_owner.post("/dashboard/logout", &[]).await);
    let mut fresh = Browser::new(&app);
    let asked = fresh.sign_in("dev@csrf.example", PASSWORD).await;
    assert_eq!(asked.status, 200);
    assert_eq!(fresh.post("/dashboard/login/code", &[("code", "123456")]).await.status, 403);
    assert_eq!(fresh.post("/dashboard/login/code", &[("csrf", &wrong), ("code", "123456")]).await.status, 403);
    // Without a sign-in under way, the code page sends back to the password.
    let page = Browser::new(&app).get("/dashboard/login/code").await;
    assert_eq!((page.status, page.location.as_deref()), (303, Some("/dashboard/login")));
}

// === the overview ===

async fn the_overview_charts_payments_and_webhook_health(db: TestDb) {
    let chain = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let usdc: Address = chain.tokens[0];
    let mut config = None;
    let app = TestApp::spawn_with(&db, |c| {
        use_test_chain(&mut c.chains[0], &chain, 1, &[("USDC", usdc)]);
        c.settings.webhooks.allow_http = true;
        c.settings.webhooks.allow_private_targets = true;
        config = Some(c.chains[0].clone());
    })
    .await;
    let config = config.unwrap();
    let (merchant, key) = app.merchant("Chart Shop", &Scope::ALL).await;
    member(&app, merchant.id, "viewer@chart.example", Role::Viewer).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in("viewer@chart.example", PASSWORD).await.status, 303);
    let empty = browser.get("/dashboard").await;
    assert_eq!(empty.status, 200);
    assert!(empty.body.contains("Nothing was paid in the last 30 days") && empty.body.contains("No payments yet"));
    assert!(empty.body.contains("In transit") && empty.body.contains("Receivable"));

    // Two invoices: one paid on anvil, one left pending.
    let paid = app.created_invoice(&key, json!({"amount": "12.50", "currency": "USD", "asset": "USDC"})).await;
    let pending = app.created_invoice(&key, json!({"amount": "3", "currency": "USD", "asset": "USDC"})).await;
    let units = paid["pay"]["amount_base_units"].as_str().unwrap().parse::<u64>().unwrap();
    let tx_hash = chain.pay_token(usdc, paid["pay"]["address"].as_str().unwrap(), units).await.to_string();
    chain.mine(1).await;
    let mut watcher = app.watcher(&config);
    while watcher.tick().await.unwrap() {}
    let (_, shown) = app.get_json(&key, &format!("/api/v1/invoices/{}", paid["id"].as_str().unwrap())).await;
    assert_eq!(shown["status"], "paid", "{shown}");

    // A webhook endpoint, disabled: highlighted.
    let endpoint: Value = app
        .client
        .post(app.url("/api/v1/webhook-endpoints"))
        .header("x-api-key", &key)
        .json(&json!({"url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let disabled = app
        .client
        .patch(app.url(&format!("/api/v1/webhook-endpoints/{}", endpoint["id"].as_str().unwrap())))
        .header("x-api-key", &key)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);

    let page = browser.get("/dashboard").await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    // The volume chart: an inline SVG with a title, a bar whose title says the day's amount.
    assert!(body.contains("<svg id=\"chart-volume-0\""), "{body}");
    assert!(body.contains("Paid volume per day, USDC on anvil, last 30 days</title>"), "{body}");
    let bar = body.find(": 12.5 USDC</title>").expect("a bar for the day it was paid");
    let day = &body[bar - 10..bar];
    let today = &depositd_core::time::iso8601(depositd_core::time::now_ms())[..10];
    assert!(day <= today && day.starts_with("20"), "{day}");
    assert!(body.contains("12.5 USDC paid on anvil in the last 30 days"));
    // Invoices by status: one paid, one pending, as bars and as text.
    assert!(body.contains("<svg id=\"chart-statuses\""));
    assert!(
        body.contains("<title>paid: 1 invoice(s)</title>") && body.contains("<title>pending: 1 invoice(s)</title>")
    );
    assert!(body.contains("2 invoice(s) created in the last 30 days"));
    assert!(!body.contains("<script"), "no script");
    // The latest payment links to its invoice.
    let paid_id = paid["id"].as_str().unwrap();
    assert!(body.contains(&format!("href=\"/dashboard/invoices/{paid_id}\"")), "{body}");
    assert!(body.contains(&tx_hash) && body.contains("12.5 USDC"));
    assert!(!body.contains(&format!("/dashboard/invoices/{}\"", pending["id"].as_str().unwrap())));
    // The disabled endpoint, highlighted.
    assert!(
        body.contains(
            "<tr class=\"alert\"><td class=\"mono hash\">http://127.0.0.1:9/hook</td><td><strong>disabled</strong>"
        ),
        "{body}"
    );
    // Balances: the paid amount less the fee is available or pending.
    assert!(body.contains("USDC"));

    // Another merchant sees none of it.
    let (other, _) = app.merchant("Quiet Shop", &Scope::MERCHANT).await;
    member(&app, other.id, "owner@quiet.example", Role::Owner).await;
    let mut quiet = Browser::new(&app);
    assert_eq!(quiet.sign_in("owner@quiet.example", PASSWORD).await.status, 303);
    let page = quiet.get("/dashboard").await;
    assert!(!page.body.contains(paid_id) && !page.body.contains(&tx_hash) && page.body.contains("No payments yet"));
}

/// `depositd merchant invite` with `[smtp]` configured queues the invite's e-mail (the printed
/// link, to the invited address) with its `member.action` event, in the invite's transaction;
/// inviting again (a new link) is a new e-mail, never the first one twice.
async fn the_operators_invite_is_emailed_once_with_smtp(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Mailed Shop", &Scope::MERCHANT).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("depositd.toml");
    let mnemonic = app.state.config.settings.wallet.mnemonic().unwrap();
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n\n[wallet]\nmnemonic = \"{}\"\n\n[smtp]\nhost = \"127.0.0.1\"\nport = 2525\n\
             tls = \"none\"\nfrom = \"Shop <team@shop.example>\"\n",
            app.state.config.settings.database.url.expose(),
            secrecy::ExposeSecret::expose_secret(&mnemonic)
        ),
    )
    .unwrap();
    let invite = || {
        crate::helpers::depositd()
            .arg("--config")
            .arg(&config)
            .args([
                "merchant",
                "invite",
                "--merchant",
                "Mailed Shop",
                "--email",
                "first@mailed.example",
                "--role",
                "owner",
            ])
            .output()
            .unwrap()
    };
    let mut links = Vec::new();
    for _ in 0..2 {
        let output = invite();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        links.push(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    assert_ne!(links[0], links[1]);
    let mails = emails::all(&mut app.store.conn().await.unwrap()).await.unwrap();
    let invites: Vec<_> = mails.iter().filter(|m| m.kind == EmailKind::MemberInvite).collect();
    assert_eq!(invites.len(), 2, "one e-mail per invite: {mails:?}");
    for (mail, link) in invites.iter().zip(&links) {
        assert_eq!((mail.recipient.as_str(), mail.merchant_id), ("first@mailed.example", merchant.id));
        assert!(mail.body.contains(link.as_str()) && mail.subject.contains("Mailed Shop"), "{}", mail.body);
    }
    let id = member_id(&app, "first@mailed.example").await;
    assert_eq!(actions_about(&app, id).await, ["member.invite", "member.invite"]);
    // The first link was replaced by the second: only the e-mailed second one works.
    let mut browser = Browser::new(&app);
    let path = |link: &str| link[link.find("/dashboard/invite/").unwrap()..].to_owned();
    assert_eq!(browser.get(&path(&links[0])).await.status, 410);
    assert_eq!(browser.get(&path(&links[1])).await.status, 200);
}
