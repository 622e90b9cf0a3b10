//! A fresh, empty database on either backend, removed when dropped (also when the test or run
//! fails half-way): a SQLite file in a temporary directory, or a database of its own on a
//! PostgreSQL server; and a merchant with an API key in it.

use anyhow::Context;
use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::merchant::Merchant;
use depositd_core::secret::DatabaseUrl;
use depositd_core::store::Store;
use depositd_core::store::api_keys;
use depositd_core::store::merchants::{self, NewMerchant};
use rust_decimal::Decimal;
use secrecy::SecretString;
use sqlx::Connection;

/// The PostgreSQL server the tests use when `TEST_POSTGRES_URL` is not set: the local server every
/// development and CI machine runs.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh, empty database on one backend; removed when dropped.
pub struct TestDb {
    /// The database's URL (it may carry a password: print [`DatabaseUrl::redacted`], never this).
    pub url: DatabaseUrl,
    /// `"sqlite"` or `"postgres"`, for messages and test names.
    pub backend: &'static str,
    /// The SQLite file's directory, removed with it.
    _dir: Option<tempfile::TempDir>,
    /// (admin URL, database name): the PostgreSQL database to drop.
    pg_drop: Option<(String, String)>,
}

impl TestDb {
    /// A SQLite file in a new temporary directory.
    pub fn sqlite() -> TestDb {
        Self::try_sqlite().expect("a temporary directory for the SQLite file")
    }

    pub fn try_sqlite() -> anyhow::Result<TestDb> {
        let dir = tempfile::Builder::new().prefix("depositd-db-").tempdir()?;
        let url = format!("sqlite://{}/depositd.db", dir.path().display());
        Ok(TestDb { url: DatabaseUrl::new(url), backend: "sqlite", _dir: Some(dir), pg_drop: None })
    }

    /// A fresh PostgreSQL database on the server at `TEST_POSTGRES_URL` (default
    /// [`DEFAULT_POSTGRES_URL`]). An unreachable server fails the test: a PostgreSQL half is never
    /// reported as passed without having run.
    pub async fn postgres() -> TestDb {
        let admin_url = std::env::var("TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned());
        let name = format!("depositd_test_{}", uuid::Uuid::new_v4().simple());
        Self::postgres_on(&admin_url, &name).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at TEST_POSTGRES_URL (default {DEFAULT_POSTGRES_URL}): {e:#}; start it, or \
                 point TEST_POSTGRES_URL at a server"
            )
        })
    }

    /// The database `name` on the server at `admin_url`, created empty (one left over by an
    /// earlier run under the same name is dropped first).
    pub async fn postgres_on(admin_url: &str, name: &str) -> anyhow::Result<TestDb> {
        sqlx::any::install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(admin_url)
            .await
            .with_context(|| format!("cannot connect to {}", DatabaseUrl::new(admin_url.to_owned()).redacted()))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut admin)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot create the database {name}"))?;
        admin.close().await.ok();
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b.to_owned(), format!("?{q}")),
            None => (admin_url.to_owned(), String::new()),
        };
        let server = base.rsplit_once('/').map(|(s, _)| s.to_owned()).unwrap_or(base);
        Ok(TestDb {
            url: DatabaseUrl::new(format!("{server}/{name}{query}")),
            backend: "postgres",
            _dir: None,
            pg_drop: Some((admin_url.to_owned(), name.to_owned())),
        })
    }

    /// Connects (8 pooled connections) and migrates.
    pub async fn store(&self) -> Store {
        self.connect(8).await.expect("connect to and migrate the test database")
    }

    /// Connects with `connections` pooled connections and applies the migrations.
    pub async fn connect(&self, connections: u32) -> anyhow::Result<Store> {
        let store = Store::connect(&self.url, connections).await?;
        store.migrate().await?;
        Ok(store)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.pg_drop.take() {
            // Best effort, on a thread of its own: Drop cannot await on the caller's runtime.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                runtime.block_on(async {
                    let mut admin = sqlx::AnyConnection::connect(&admin_url).await.ok()?;
                    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut admin)
                        .await
                        .ok()
                })
            })
            .join();
        }
    }
}

/// A merchant named `name` charging `fee_percent`, and a test-mode API key of it with `scopes`,
/// written straight to `store` (as an operator would, before any API call).
pub async fn merchant_with_key(
    store: &Store,
    name: &str,
    fee_percent: Decimal,
    scopes: &[Scope],
) -> anyhow::Result<(Merchant, SecretString)> {
    let mut conn = store.conn().await?;
    let merchant = merchants::insert(
        &mut conn,
        &NewMerchant {
            name: name.into(),
            company_name: None,
            fee_percent,
            min_invoice_amount: None,
            max_invoice_amount: None,
        },
    )
    .await?;
    let (_, key) = api_keys::create(&mut conn, merchant.id, KeyMode::Test, scopes, None).await?;
    Ok((merchant, key))
}
