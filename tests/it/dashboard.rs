//! The merchant dashboard over real HTTP on both backends: invites (once, within 24 h), sign-in
//! (wrong password, throttling), sessions (cookies, log out everywhere, never for `/api/v1`),
//! CSRF, roles, one merchant's session on another's key, API keys created and revoked from the
//! dashboard, and pages that reference no other origin.
//!
//! [`Browser`] (cookies, forms, CSRF) and [`member`] are shared with the other dashboard page
//! tests (`dashboard_*.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::api_keys::{self as key_lifecycle, Grantor, NewKey};
use depositd_core::member::Role;
use depositd_core::members;
use depositd_core::store::{api_keys, events};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, both_backends, depositd};

both_backends!(
    invite_sign_in_and_manage_keys,
    an_expired_invite_is_refused,
    sign_in_is_throttled,
    merchants_and_roles_are_kept_apart,
    log_out_everywhere_ends_every_session,
    the_operator_invites_from_the_command_line,
    a_member_grants_and_revokes_only_what_its_role_allows,
    parallel_sign_ins_are_counted_one_by_one,
);

pub(crate) const PASSWORD: &str = "a long enough password";

/// A browser: its cookies, no automatic redirects.
pub(crate) struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    pub(crate) cookies: HashMap<String, String>,
    /// Every `Set-Cookie` seen, as sent.
    pub(crate) set_cookies: Vec<String>,
}

pub(crate) struct Page {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    pub(crate) body: String,
}

impl<'a> Browser<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Browser<'a> {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { app, client, cookies: HashMap::new(), set_cookies: Vec::new() }
    }

    pub(crate) fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn finish(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap().to_owned();
            let (pair, _) = text.split_once(';').unwrap_or((&text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
            self.set_cookies.push(text);
        }
        if let Some(csp) = response.headers().get("content-security-policy") {
            assert!(!csp.to_str().unwrap().contains("http"), "the CSP names no other origin");
        }
        let status = response.status().as_u16();
        let location = response.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        assert_no_other_origin(&body);
        Page { status, location, body }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Page {
        let response = self.client.get(self.app.url(path)).header("cookie", self.cookie_header()).send().await.unwrap();
        self.finish(response).await
    }

    pub(crate) async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let response = self
            .client
            .post(self.app.url(path))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish())
            .send()
            .await
            .unwrap();
        self.finish(response).await
    }

    /// Signs in; returns the page the sign-in answered.
    pub(crate) async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/dashboard/login").await;
        let csrf = csrf_of(&form.body);
        self.post("/dashboard/login", &[("csrf", &csrf), ("email", email), ("password", password)]).await
    }
}

/// The value of the page's first hidden `csrf` field.
pub(crate) fn csrf_of(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("the page has a csrf field") + 19;
    html[start..start + 64].to_owned()
}

/// No `src`, `href` or `action` of a page points to another origin.
pub(crate) fn assert_no_other_origin(html: &str) {
    for attribute in ["src=", "href=", "action=", "url("] {
        for (i, _) in html.match_indices(attribute) {
            let value = html[i + attribute.len()..].trim_start_matches(['"', '\'']);
            assert!(
                !(value.starts_with("http:") || value.starts_with("https:") || value.starts_with("//")),
                "a page references another origin: {}",
                &html[i..(i + 80).min(html.len())]
            );
        }
    }
}

/// Merchant `name` with a key, and an invited member with `role` (token returned).
pub(crate) async fn invited(app: &TestApp, merchant_id: Uuid, email: &str, role: Role) -> SecretString {
    let mut tx = app.store.begin().await.unwrap();
    let invitation = members::invite(&mut tx, merchant_id, email, role, "cli").await.unwrap();
    tx.commit().await.unwrap();
    invitation.token
}

/// A member who has set their password.
pub(crate) async fn member(app: &TestApp, merchant_id: Uuid, email: &str, role: Role) {
    let token = invited(app, merchant_id, email, role).await;
    members::accept_invite(&app.store, token.expose_secret(), &SecretString::from(PASSWORD.to_owned())).await.unwrap();
}

async fn invite_sign_in_and_manage_keys(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Dash Shop", &Scope::MERCHANT).await;
    let token = invited(&app, merchant.id, "Owner@Dash.Example", Role::Owner).await;
    let link = format!("/dashboard/invite/{}", token.expose_secret());
    let mut browser = Browser::new(&app);

    // The invite page, then its form without and with a wrong CSRF token: refused.
    let page = browser.get(&link).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("owner@dash.example") && page.body.contains("Dash Shop"));
    let csrf = csrf_of(&page.body);
    assert_eq!(browser.post(&link, &[("password", PASSWORD)]).await.status, 403);
    let wrong = "0".repeat(64);
    assert_eq!(browser.post(&link, &[("csrf", &wrong), ("password", PASSWORD)]).await.status, 403);
    // A short password is refused next to its field.
    let short = browser.post(&link, &[("csrf", &csrf), ("password", "short")]).await;
    assert_eq!(short.status, 400);
    assert!(short.body.contains("id=\"password-error\"") && short.body.contains("12 to 128 characters"));
    let accepted = browser.post(&link, &[("csrf", &csrf), ("password", PASSWORD)]).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert!(accepted.body.contains("Your password is set"));
    // Used twice: refused.
    let again = browser.post(&link, &[("csrf", &csrf), ("password", PASSWORD)]).await;
    assert_eq!(again.status, 410);
    assert!(again.body.contains("already used"), "{}", again.body);
    assert_eq!(browser.get(&link).await.status, 410);

    // Not signed in: the pages send to the sign-in page.
    let page = browser.get("/dashboard").await;
    assert_eq!((page.status, page.location.as_deref()), (303, Some("/dashboard/login")));

    // A wrong password, then the right one.
    let wrong = browser.sign_in("owner@dash.example", "not the password").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("the email or the password is not correct"));
    let signed_in = browser.sign_in("OWNER@dash.example", PASSWORD).await;
    assert_eq!((signed_in.status, signed_in.location.as_deref()), (303, Some("/dashboard")));
    let session_cookie = browser.set_cookies.iter().rev().find(|c| c.starts_with("depositd_session=")).unwrap().clone();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(session_cookie.contains(attribute), "{session_cookie}");
    }
    assert!(!session_cookie.contains("Secure"), "the test server's public URL is http");

    // The overview: balances per chain and asset.
    let overview = browser.get("/dashboard").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("Balances") && overview.body.contains("USDC") && overview.body.contains("anvil"));

    // A session never authenticates the merchant API.
    let api =
        app.client.get(app.url("/api/v1/invoices")).header("cookie", browser.cookie_header()).send().await.unwrap();
    assert_eq!(api.status(), 401);

    // Create a test key: CSRF first, then the secret shown once.
    let keys_page = browser.get("/dashboard/developers/api-keys").await;
    assert_eq!(keys_page.status, 200);
    let csrf = csrf_of(&keys_page.body);
    let path = "/dashboard/developers/api-keys";
    let mut fields =
        vec![("name", "server"), ("mode", "test"), ("scope", "invoices:read"), ("scope", "invoices:write")];
    assert_eq!(browser.post(path, &fields).await.status, 403, "no CSRF token");
    fields.push(("csrf", "nope"));
    assert_eq!(browser.post(path, &fields).await.status, 403, "a wrong CSRF token");
    fields.pop();
    fields.push(("csrf", &csrf));
    let created = browser.post(path, &fields).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let marker = "id=\"new-secret\" class=\"mono\" readonly value=\"";
    let start = created.body.find(marker).expect("the new key is on the page") + marker.len();
    let secret = created.body[start..start + 56].to_owned();
    assert!(secret.starts_with("dk_test_") && secret[8..].bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
    assert!(created.body.contains("only time the key is shown"));
    let listed = browser.get("/dashboard/developers/api-keys").await;
    assert!(!listed.body.contains(&secret), "the secret is shown once");
    assert!(listed.body.contains(&secret[..16]), "the key is listed by its prefix");

    // The key works for the merchant API.
    let (status, _) = app.get_json(&secret, "/api/v1/invoices").await;
    assert_eq!(status, 200);
    let key = api_keys::list(&mut app.store.conn().await.unwrap(), merchant.id)
        .await
        .unwrap()
        .into_iter()
        .find(|k| secret.starts_with(&k.display_prefix))
        .unwrap();
    assert!(key.created_by.as_deref().is_some_and(|by| by.starts_with("user:")), "{:?}", key.created_by);
    assert_eq!(key.scopes, [Scope::InvoicesRead, Scope::InvoicesWrite]);

    // A form error is shown next to its field (a scope a member cannot grant: 403).
    let refused = browser
        .post("/dashboard/developers/api-keys", &[("csrf", &csrf), ("mode", "test"), ("scope", "operator")])
        .await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("id=\"scopes-error\"") && refused.body.contains("the operator"), "{}", refused.body);

    // Revoke it: refused by the API within a second; both changes are events.
    let revoke = format!("/dashboard/developers/api-keys/{}/revoke", key.id);
    assert_eq!(browser.post(&revoke, &[("csrf", "wrong")]).await.status, 403);
    let revoked = browser.post(&revoke, &[("csrf", &csrf)]).await;
    assert_eq!((revoked.status, revoked.location.as_deref()), (303, Some("/dashboard/developers/api-keys")));
    let started = Instant::now();
    while app.get_json(&secret, "/api/v1/invoices").await.0 != 401 {
        assert!(started.elapsed() < Duration::from_secs(1), "a revoked key still works after a second");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(events::types_for(&mut conn, key.id).await.unwrap(), ["api_key.created", "api_key.revoked"]);

    // Logging out needs the form's token too, then ends the session.
    assert_eq!(browser.post("/dashboard/logout", &[]).await.status, 403);
    let out = browser.post("/dashboard/logout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/dashboard/login")));
    assert_eq!(browser.get("/dashboard").await.status, 303);

    // The stylesheet is served from here.
    let css = browser.get("/dashboard/assets/dashboard.css").await;
    assert_eq!(css.status, 200);
}

async fn an_expired_invite_is_refused(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Late Shop", &Scope::MERCHANT).await;
    let token = invited(&app, merchant.id, "late@shop.example", Role::Developer).await;
    // As if the invite were made more than 24 hours ago.
    let mut conn = app.store.conn().await.unwrap();
    sqlx::query("UPDATE merchant_invites SET expires_at = $1")
        .bind(depositd_core::time::now_ms() - 1)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let mut browser = Browser::new(&app);
    let page = browser.get(&format!("/dashboard/invite/{}", token.expose_secret())).await;
    assert_eq!(page.status, 410);
    assert!(page.body.contains("expired"), "{}", page.body);
    let error =
        members::accept_invite(&app.store, token.expose_secret(), &SecretString::from(PASSWORD.to_owned())).await;
    assert!(matches!(error, Err(members::MemberError::InviteExpired)));
    // An unknown or malformed token is not valid either.
    assert_eq!(browser.get(&format!("/dashboard/invite/{}", "a".repeat(64))).await.status, 410);
    assert_eq!(browser.get("/dashboard/invite/x").await.status, 410);
    // A new invite replaces it and works.
    let token = invited(&app, merchant.id, "late@shop.example", Role::Developer).await;
    assert_eq!(browser.get(&format!("/dashboard/invite/{}", token.expose_secret())).await.status, 200);
}

async fn sign_in_is_throttled(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Locked Shop", &Scope::MERCHANT).await;
    member(&app, merchant.id, "locked@shop.example", Role::Owner).await;
    let mut browser = Browser::new(&app);
    for _ in 0..members::MAX_FAILURES_PER_ACCOUNT {
        assert_eq!(browser.sign_in("locked@shop.example", "wrong password!").await.status, 401);
    }
    // Now even the right password is refused, with a clear message.
    let throttled = browser.sign_in("locked@shop.example", PASSWORD).await;
    assert_eq!(throttled.status, 429);
    assert!(
        throttled.body.contains("too many failed sign-ins for this account; try again in 15 minute(s)"),
        "{}",
        throttled.body
    );
    // Another account from the same address is not locked by this one's failures.
    member(&app, merchant.id, "other@shop.example", Role::Viewer).await;
    assert_eq!(browser.sign_in("other@shop.example", PASSWORD).await.status, 303);
}

async fn merchants_and_roles_are_kept_apart(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (shop_a, _) = app.merchant("Shop A", &Scope::MERCHANT).await;
    let (shop_b, _) = app.merchant("Shop B", &Scope::MERCHANT).await;
    member(&app, shop_a.id, "owner@a.example", Role::Owner).await;
    member(&app, shop_a.id, "viewer@a.example", Role::Viewer).await;
    let b_key = api_keys::list(&mut app.store.conn().await.unwrap(), shop_b.id).await.unwrap()[0].id;
    let a_key = api_keys::list(&mut app.store.conn().await.unwrap(), shop_a.id).await.unwrap()[0].id;

    // A's owner cannot see or revoke B's key: not found.
    let mut owner = Browser::new(&app);
    assert_eq!(owner.sign_in("owner@a.example", PASSWORD).await.status, 303);
    let page = owner.get("/dashboard/developers/api-keys").await;
    assert!(!page.body.contains(&b_key.to_string()) && page.body.contains(&a_key.to_string()));
    let csrf = csrf_of(&page.body);
    let refused = owner.post(&format!("/dashboard/developers/api-keys/{b_key}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(refused.status, 404);
    assert!(api_keys::list(&mut app.store.conn().await.unwrap(), shop_b.id).await.unwrap()[0].revoked_at.is_none());

    // A viewer reads, and every write is refused by the server.
    let mut viewer = Browser::new(&app);
    assert_eq!(viewer.sign_in("viewer@a.example", PASSWORD).await.status, 303);
    let page = viewer.get("/dashboard/developers/api-keys").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("Create a key") && !page.body.contains("Revoke"), "no write controls for a viewer");
    let csrf = csrf_of(&page.body);
    let create = viewer
        .post("/dashboard/developers/api-keys", &[("csrf", &csrf), ("mode", "test"), ("scope", "invoices:read")])
        .await;
    assert_eq!(create.status, 403);
    assert!(create.body.contains("Your role (viewer) cannot do this"));
    let revoke = viewer.post(&format!("/dashboard/developers/api-keys/{a_key}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(revoke.status, 403);
    let keys = api_keys::list(&mut app.store.conn().await.unwrap(), shop_a.id).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].revoked_at.is_none());
}

async fn log_out_everywhere_ends_every_session(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Many Tabs", &Scope::MERCHANT).await;
    member(&app, merchant.id, "dev@tabs.example", Role::Developer).await;
    let (mut laptop, mut phone) = (Browser::new(&app), Browser::new(&app));
    assert_eq!(laptop.sign_in("dev@tabs.example", PASSWORD).await.status, 303);
    assert_eq!(phone.sign_in("dev@tabs.example", PASSWORD).await.status, 303);
    assert_eq!(phone.get("/dashboard").await.status, 200);
    let page = laptop.get("/dashboard").await;
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.body);
    // The laptop's token does not pass for the phone's session.
    assert_eq!(phone.post("/dashboard/logout-everywhere", &[("csrf", &csrf)]).await.status, 403);
    let out = laptop.post("/dashboard/logout-everywhere", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    for browser in [&mut laptop, &mut phone] {
        let page = browser.get("/dashboard").await;
        assert_eq!((page.status, page.location.as_deref()), (303, Some("/dashboard/login")));
    }
}

/// `depositd merchant invite` prints a link that works once.
async fn the_operator_invites_from_the_command_line(db: TestDb) {
    let url = db.url.expose().to_owned();
    let run = |args: &[&str]| depositd().arg("--database-url").arg(&url).args(args).output().unwrap();
    assert!(run(&["migrate"]).status.success());
    assert!(run(&["merchant", "create", "--name", "Cli Dash"]).status.success());
    let output =
        run(&["merchant", "invite", "--merchant", "Cli Dash", "--email", "first@cli.example", "--role", "owner"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let link = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let (base, token) = link.rsplit_once("/dashboard/invite/").unwrap();
    assert!(base.starts_with("http") && token.len() == 64, "{link}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("within 24 hours"));

    let app = TestApp::spawn(&db).await;
    let mut browser = Browser::new(&app);
    let page = browser.get(&format!("/dashboard/invite/{token}")).await;
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.body);
    let accepted =
        browser.post(&format!("/dashboard/invite/{token}"), &[("csrf", &csrf), ("password", PASSWORD)]).await;
    assert_eq!(accepted.status, 200);
    assert_eq!(browser.sign_in("first@cli.example", PASSWORD).await.status, 303);

    // A member who set a password is not invited again; a role must be one of the three.
    let again = run(&["merchant", "invite", "--merchant", "Cli Dash", "--email", "first@cli.example"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already a member"));
    let bad = run(&["merchant", "invite", "--merchant", "Cli Dash", "--email", "x@cli.example", "--role", "admin"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown role"));
}

/// A developer cannot mint (or revoke) a key that moves money, whatever the page offers: the server
/// refuses a hand-made POST with a valid CSRF token; an owner can. Nobody revokes an `operator`
/// key from the dashboard (a 403 page, not a 500).
async fn a_member_grants_and_revokes_only_what_its_role_allows(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Role Shop", &Scope::MERCHANT).await;
    let keys_now = || async { api_keys::list(&mut app.store.conn().await.unwrap(), merchant.id).await.unwrap() };
    let money_key = keys_now().await[0].id;
    let mut tx = app.store.begin().await.unwrap();
    let new = NewKey { mode: KeyMode::Live, scopes: &[Scope::Operator], name: Some("ops") };
    let (operator_key, _) = key_lifecycle::create(&mut tx, merchant.id, Grantor::Operator, new).await.unwrap();
    tx.commit().await.unwrap();
    member(&app, merchant.id, "dev@role.example", Role::Developer).await;
    member(&app, merchant.id, "owner@role.example", Role::Owner).await;

    let mut developer = Browser::new(&app);
    assert_eq!(developer.sign_in("dev@role.example", PASSWORD).await.status, 303);
    let page = developer.get("/dashboard/developers/api-keys").await;
    assert!(!page.body.contains("value=\"payouts:write\""), "the page offers only what the role may grant");
    assert!(page.body.contains("value=\"invoices:write\""));
    assert!(
        !page.body.contains(&format!("{money_key}/revoke"))
            && !page.body.contains(&format!("{}/revoke", operator_key.id))
    );
    let csrf = csrf_of(&page.body);
    let create = |scopes: &'static [&'static str]| {
        let mut fields = vec![("csrf", csrf.clone()), ("name", "k".to_owned()), ("mode", "live".to_owned())];
        fields.extend(scopes.iter().map(|s| ("scope", (*s).to_owned())));
        fields
    };
    let post = |fields: &Vec<(&'static str, String)>| fields.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let fields = post(&create(&["invoices:read", "payouts:write"]));
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = developer.post("/dashboard/developers/api-keys", &fields).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("your role (developer) cannot create or revoke a key with the `payouts:write` scope")
    );
    assert_eq!(keys_now().await.len(), 2, "nothing was created");
    let revoke =
        developer.post(&format!("/dashboard/developers/api-keys/{money_key}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(revoke.status, 403, "{}", revoke.body);
    assert!(revoke.body.contains("The key was not revoked"));
    assert!(keys_now().await.iter().all(|k| k.revoked_at.is_none()));
    // What a developer's role allows, it grants.
    let fields = post(&create(&["invoices:write", "webhooks:write", "api_keys:write"]));
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(developer.post("/dashboard/developers/api-keys", &fields).await.status, 201);

    let mut owner = Browser::new(&app);
    assert_eq!(owner.sign_in("owner@role.example", PASSWORD).await.status, 303);
    let page = owner.get("/dashboard/developers/api-keys").await;
    assert!(page.body.contains("value=\"payouts:write\"") && page.body.contains(&format!("{money_key}/revoke")));
    assert!(!page.body.contains(&format!("{}/revoke", operator_key.id)), "no Revoke for an operator key");
    let csrf = csrf_of(&page.body);
    let fields = [("csrf", csrf.as_str()), ("mode", "live"), ("scope", "payouts:write")];
    assert_eq!(owner.post("/dashboard/developers/api-keys", &fields).await.status, 201);
    let keys = keys_now().await;
    assert!(keys.iter().any(|k| k.mode == KeyMode::Live && k.scopes == [Scope::PayoutsWrite]));
    let refused =
        owner.post(&format!("/dashboard/developers/api-keys/{}/revoke", operator_key.id), &[("csrf", &csrf)]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("operator"), "{}", refused.body);
    assert_eq!(
        owner.post(&format!("/dashboard/developers/api-keys/{money_key}/revoke"), &[("csrf", &csrf)]).await.status,
        303
    );
    let keys = keys_now().await;
    assert!(keys.iter().find(|k| k.id == operator_key.id).unwrap().revoked_at.is_none());
    assert!(keys.iter().find(|k| k.id == money_key).unwrap().revoked_at.is_some());
}

/// Wrong passwords posted all at once for one account: each attempt is counted before its
/// password is checked, so at most the limit are evaluated, the rest are throttled, and then the
/// right password is throttled too.
async fn parallel_sign_ins_are_counted_one_by_one(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Race Shop", &Scope::MERCHANT).await;
    member(&app, merchant.id, "race@shop.example", Role::Owner).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let mut browser = Browser::new(&app);
        let form = browser.get("/dashboard/login").await;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("csrf", csrf_of(&form.body).as_str()),
                ("email", "race@shop.example"),
                ("password", "wrong password!"),
            ])
            .finish();
        let request = browser
            .client
            .post(app.url("/dashboard/login"))
            .header("cookie", browser.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        tasks.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    let statuses = tasks.join_all().await;
    let evaluated = statuses.iter().filter(|s| **s == 401).count() as i64;
    let throttled = statuses.iter().filter(|s| **s == 429).count() as i64;
    assert_eq!(
        (evaluated, throttled),
        (members::MAX_FAILURES_PER_ACCOUNT, 12 - members::MAX_FAILURES_PER_ACCOUNT),
        "{statuses:?}"
    );
    let mut browser = Browser::new(&app);
    let late = browser.sign_in("race@shop.example", PASSWORD).await;
    assert_eq!(late.status, 429, "{}", late.body);
}
