//! A fresh database per benchmark run, `depositd_testkit`'s [`TestDb`]: a SQLite file in a
//! temporary directory, or a PostgreSQL database `depositd_bench_<pid>_<label>` created on the
//! configured server; either is removed when the [`TestDb`] is dropped (also when the run fails
//! half-way).

use anyhow::Context;
use depositd_core::secret::DatabaseUrl;
pub use depositd_testkit::db::TestDb;

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

/// A new, empty database (not migrated: [`TestDb::connect`] migrates).
pub async fn create(backend: Backend, postgres_url: &str, label: &str) -> anyhow::Result<TestDb> {
    match backend {
        Backend::Sqlite => TestDb::try_sqlite(),
        Backend::Postgres => {
            let name = format!("depositd_bench_{}_{label}", std::process::id());
            TestDb::postgres_on(postgres_url, &name).await.with_context(|| {
                format!(
                    "cannot reach PostgreSQL at {} (set --postgres-url or BENCH_POSTGRES_URL, or leave postgres out \
                     of --backends)",
                    DatabaseUrl::new(postgres_url.to_owned()).redacted()
                )
            })
        }
    }
}
