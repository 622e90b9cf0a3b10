//! A fresh database per benchmark run: a SQLite file in a temporary directory, or a PostgreSQL
//! database `depositd_bench_<pid>_<label>` created on the configured server and dropped when the
//! [`BenchDb`] is dropped (also when the run fails half-way).

use anyhow::Context;
use depositd_core::secret::DatabaseUrl;
use depositd_core::store::Store;
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

pub struct BenchDb {
    url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    /// (admin URL, database name) to drop.
    postgres: Option<(String, String)>,
}

impl BenchDb {
    /// A new, empty database (not migrated).
    pub async fn create(backend: Backend, postgres_url: &str, label: &str) -> anyhow::Result<BenchDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new().prefix("depositd-bench-db-").tempdir()?;
                let url = format!("sqlite://{}/depositd.db", dir.path().display());
                Ok(BenchDb { url: DatabaseUrl::new(url), _dir: Some(dir), postgres: None })
            }
            Backend::Postgres => {
                sqlx::any::install_default_drivers();
                let name = format!("depositd_bench_{}_{label}", std::process::id());
                let mut admin = sqlx::AnyConnection::connect(postgres_url).await.with_context(|| {
                    format!(
                        "cannot reach PostgreSQL at {} (set --postgres-url or BENCH_POSTGRES_URL, or leave \
                         postgres out of --backends)",
                        DatabaseUrl::new(postgres_url.to_owned()).redacted()
                    )
                })?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut admin)
                    .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
                admin.close().await.ok();
                let (base, query) = match postgres_url.split_once('?') {
                    Some((b, q)) => (b.to_owned(), format!("?{q}")),
                    None => (postgres_url.to_owned(), String::new()),
                };
                let server = base.rsplit_once('/').map(|(s, _)| s.to_owned()).unwrap_or(base);
                Ok(BenchDb {
                    url: DatabaseUrl::new(format!("{server}/{name}{query}")),
                    _dir: None,
                    postgres: Some((postgres_url.to_owned(), name)),
                })
            }
        }
    }

    /// The URL (it may carry a password: never print it; see [`DatabaseUrl::redacted`]).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Connects with `connections` pooled connections and applies the migrations.
    pub async fn store(&self, connections: u32) -> anyhow::Result<Store> {
        let store = Store::connect(&self.url, connections).await?;
        store.migrate().await?;
        Ok(store)
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            // Drop cannot await on the caller's runtime: a thread with its own small runtime.
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
