//! The store: one data layer over SQLite (embedded default) and PostgreSQL (production).
//!
//! Both backends run through sqlx's `Any` driver, so each query is written once and business
//! logic is never duplicated. The schema sticks to types both sides decode identically (TEXT,
//! BIGINT); see the header of `migrations/*/..._initial.sql`. Where SQL really differs, the
//! difference lives in [`Backend`] and nowhere else:
//! - transactions on SQLite start with `BEGIN IMMEDIATE` (take the write lock up front, so two
//!   writers never fail on a lock upgrade), and the writers of one process queue for it on an
//!   in-process lock first: SQLite's own busy handler waits by sleeping and polling, which leaves
//!   the write lock idle while the writers that want it are asleep;
//! - row claiming uses `FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer anyway.
//!
//! # Layout
//! - this module: connecting, migrating, transactions, [`StoreError`].
//! - [`merchants`], [`members`] (dashboard members, invites, sessions, failed sign-ins), [`api_keys`], [`deposit_addresses`] (and their [`address_pool`]), [`invoices`], [`events`] (the outbox's
//!   event rows), [`emails`] (its e-mail rows), [`idempotency`], [`static_addresses`], [`deposits`], [`blocks`], [`cursors`], [`webhooks`] (endpoints and
//!   the delivery queue's rows), [`payouts`], [`chain_txs`] (outgoing transactions, attempts, nonces), [`leases`] (one holder at a time), [`wallet_identity`] (the wallet every process checks at start-up): queries, one module per table family, each a small async
//!   function taking a connection or transaction. They hold rows and SQL only: the rules that
//!   decide what to write live in the lifecycle modules (`crate::outbox` for events and their
//!   deliveries), which call them.

pub mod address_pool;
pub mod api_keys;
pub mod blocks;
pub mod chain_txs;
pub mod codec;
pub mod cursors;
pub mod deposit_addresses;
pub mod deposits;
pub mod emails;
pub mod events;
pub mod idempotency;
pub mod invoices;
pub mod key_changes;
pub mod leases;
pub mod members;
pub mod merchants;
pub mod overview;
pub mod payouts;
pub mod resolutions;
pub mod static_addresses;
pub mod wallet_identity;
pub mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};

use crate::secret::DatabaseUrl;

/// How long start-up waits for the database, and requests wait for a pooled connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SQLite writer waits for its turn (in-process) or the file's write lock (another
/// process, SQLite's `busy_timeout`) before giving up.
const SQLITE_WRITE_WAIT: Duration = Duration::from_secs(10);

/// A pooled connection idle at least this long is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// A transaction on either backend: derefs to the connection (pass `&mut tx` where a query
/// function takes `&mut Conn`). On SQLite a read-write transaction holds the process's write
/// turn until it ends; committing one that queued webhook deliveries wakes the delivery worker.
pub struct Tx {
    inner: sqlx::Transaction<'static, sqlx::Any>,
    signals: Arc<Signals>,
    /// Whether this transaction queued webhook deliveries (set by `crate::outbox`, the only code
    /// that queues them): its commit wakes the delivery worker.
    queued_deliveries: bool,
    /// The same for e-mails (`crate::notify`): its commit wakes the mailer.
    queued_emails: bool,
    /// Whether this transaction changed an API key (set by `crate::api_keys`): its commit counts
    /// a key change (`key_changes`) once the change is visible, so the API's key cache cannot
    /// keep a row read between the write and the commit.
    keys_changed: bool,
    _write_turn: Option<OwnedMutexGuard<()>>,
}

impl Tx {
    /// Commits. When this transaction queued webhook deliveries, the delivery worker is woken
    /// once the commit has succeeded: a delivery goes out as soon as it exists for other
    /// connections rather than at the worker's next poll. A transaction that queued none, or
    /// that rolls back (or is dropped), wakes nobody.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Tx { inner, signals, queued_deliveries, queued_emails, keys_changed, _write_turn } = self;
        inner.commit().await?;
        drop(_write_turn);
        if keys_changed {
            key_changes::changed();
        }
        if queued_deliveries {
            signals.deliveries_queued.notify_one();
        }
        if queued_emails {
            signals.emails_queued.notify_one();
        }
        Ok(())
    }

    /// Notes that this transaction queued webhook deliveries (see [`Tx::commit`]).
    pub(crate) fn deliveries_were_queued(&mut self) {
        self.queued_deliveries = true;
    }

    /// Notes that this transaction queued e-mails (see [`Tx::commit`]).
    pub(crate) fn emails_were_queued(&mut self) {
        self.queued_emails = true;
    }

    /// Whether this process sends e-mail (see [`Store::set_mail_enabled`]): without it the
    /// outbox queues none.
    pub(crate) fn mail_enabled(&self) -> bool {
        self.signals.mail_enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes that this transaction changed an API key (see the field).
    pub(crate) fn keys_were_changed(&mut self) {
        self.keys_changed = true;
    }

    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl std::ops::Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.inner
    }
}

/// What the store's users signal to each other within one process.
#[derive(Debug, Default)]
struct Signals {
    deliveries_queued: Notify,
    emails_queued: Notify,
    /// Whether the process's configuration has `[smtp]`: only then does the outbox queue e-mails.
    mail_enabled: std::sync::atomic::AtomicBool,
}
/// A connection on either backend (what query functions take: `&mut *tx` or `&mut *conn`).
pub type Conn = sqlx::AnyConnection;
/// A connection borrowed from the pool (see [`Store::conn`]); derefs to [`Conn`], returns to the
/// pool when dropped.
pub type PooledConn = sqlx::pool::PoolConnection<sqlx::Any>;

#[cfg(feature = "sqlite")]
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
#[cfg(feature = "postgres")]
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "database URL {url} names the `{scheme}` backend, which is not supported (use sqlite://PATH or postgres://...)"
    )]
    UnsupportedBackend { scheme: String, url: String },
    #[error(
        "database URL {url} names the `{backend}` backend, which this build does not include (rebuild with --features {backend})"
    )]
    BackendNotCompiled { backend: &'static str, url: String },
    // Messages never repeat their source: `{:#}` (anyhow) and the logs print the chain.
    #[error("cannot connect to the database at {url}")]
    Connect { url: String, source: sqlx::Error },
    #[error(
        "cannot connect to the database at {url}: no connection within {seconds} s (is the server running and reachable?)"
    )]
    ConnectTimeout { url: String, seconds: u64 },
    #[error("cannot create the database directory {path}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the SQLite database {url} is in use by another depositd daemon; SQLite serves one daemon \
         process (use PostgreSQL to run several)"
    )]
    InUse { url: String },
    #[error("a row already exists with this {0}")]
    Conflict(&'static str),
    #[error("not found")]
    NotFound,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("no turn to write to the SQLite database within {} s", SQLITE_WRITE_WAIT.as_secs())]
    WriteTurnTimeout,
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    /// A column that does not decode (a stored enum word, id or amount that is not one) is
    /// corrupt data, not a database failure.
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::ColumnDecode { index, source } => StoreError::Corrupt(format!("column {index}: {source}")),
            error => StoreError::Database(error),
        }
    }
}

impl StoreError {
    /// Maps a unique-constraint violation to [`StoreError::Conflict`], anything else unchanged.
    pub fn on_conflict(error: sqlx::Error, what: &'static str) -> StoreError {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::Database(error),
        }
    }
}

/// Which database is behind the pool: the one place backend differences are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn from_url(url: &DatabaseUrl) -> Result<Backend, StoreError> {
        match url.scheme().as_str() {
            "sqlite" => {
                if cfg!(feature = "sqlite") {
                    Ok(Backend::Sqlite)
                } else {
                    Err(StoreError::BackendNotCompiled { backend: "sqlite", url: url.redacted() })
                }
            }
            "postgres" | "postgresql" => {
                if cfg!(feature = "postgres") {
                    Ok(Backend::Postgres)
                } else {
                    Err(StoreError::BackendNotCompiled { backend: "postgres", url: url.redacted() })
                }
            }
            scheme => Err(StoreError::UnsupportedBackend { scheme: scheme.to_owned(), url: url.redacted() }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The statement that opens a read-write transaction.
    fn begin_statement(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// The backend a connection talks to (for code that is handed a connection, not the store).
    pub fn of(conn: &Conn) -> Backend {
        if conn.backend_name() == "PostgreSQL" { Backend::Postgres } else { Backend::Sqlite }
    }

    /// The statement that opens a read-only transaction seeing one consistent snapshot (for
    /// checks that read many tables while writers carry on). SQLite in WAL mode keeps the
    /// snapshot of a deferred transaction's first read until it ends.
    fn snapshot_statement(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN",
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }

    /// Suffix for a `SELECT` that locks the rows it reads until the transaction ends. SQLite needs
    /// none: a write transaction (`BEGIN IMMEDIATE`) already excludes every other writer.
    pub fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Suffix for a `SELECT` that claims rows for work several daemons share.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            #[cfg(feature = "postgres")]
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            #[allow(unreachable_patterns)]
            _ => unreachable!("Backend::from_url refuses backends that are not compiled in"),
        }
    }
}

/// The database: a connection pool and which backend it is. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: one read-write transaction of this process at a time.
    write_turn: Option<Arc<Mutex<()>>>,
    signals: Arc<Signals>,
}

impl Store {
    /// Connects to `url` (creating a SQLite file and its directory on first run). Does not migrate.
    #[tracing::instrument(skip(url))]
    pub async fn connect(url: &DatabaseUrl, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut connect_url = url.expose().to_owned();
        if backend == Backend::Sqlite {
            connect_url = prepare_sqlite_url(&connect_url)?;
        }
        let options = AnyConnectOptions::from_str(&connect_url)
            .map_err(|source| StoreError::Connect { url: url.redacted(), source })?
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1))
            .log_statements(tracing::log::LevelFilter::Trace);
        // One direct attempt first: a pool reports every failure as "timed out", while a plain
        // connection says why (refused, unknown host, bad password, no such database). sqlx itself
        // retries a refused connection until its timeout and then also says only "timed out".
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, sqlx::AnyConnection::connect_with(&options))
            .await
            .map_err(|_| StoreError::ConnectTimeout { url: url.redacted(), seconds: CONNECT_TIMEOUT.as_secs() })?
            .map_err(|source| match source {
                sqlx::Error::PoolTimedOut => {
                    StoreError::ConnectTimeout { url: url.redacted(), seconds: CONNECT_TIMEOUT.as_secs() }
                }
                source => StoreError::Connect { url: url.redacted(), source },
            })?;
        probe.close().await.ok();
        // A connection that was idle a while is pinged before use (a database restart or a
        // firewall may have closed it meanwhile); one that was back in the pool only moments ago
        // is not. sqlx's default pings every time, a round trip per transaction: on SQLite one more
        // hop to the connection's thread inside the single writer's turn, which every write waits
        // behind.
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(CONNECT_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_WHEN_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            });
        if backend == Backend::Sqlite {
            // WAL lets readers proceed while one writer commits; NORMAL sync is durable across
            // process crashes in WAL mode (only an OS crash can lose the last commits).
            pool_options = pool_options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { url: url.redacted(), source })?;
        let write_turn = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Ok(Store { pool, backend, write_turn, signals: Arc::default() })
    }

    /// Applies the embedded migrations for this backend (idempotent).
    #[tracing::instrument(skip(self), fields(backend = self.backend.name()))]
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.backend.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Whether every embedded migration has been applied (for readiness checks).
    #[tracing::instrument(skip(self))]
    pub async fn migrations_current(&self) -> Result<bool, StoreError> {
        let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_all(&self.pool)
            .await
            .or_else(|e| match &e {
                // No migrations table yet: nothing applied. Any other error (a connection the
                // server closed, say) is an error, not a reason to tell the operator to migrate.
                sqlx::Error::Database(db) if is_missing_table(db.as_ref()) => Ok(Vec::new()),
                _ => Err(e),
            })?;
        Ok(self.backend.migrator().iter().all(|m| applied.iter().any(|(v,)| *v == m.version)))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection from the pool, for reads and single statements outside a transaction; waits
    /// at most [`CONNECT_TIMEOUT`] for one.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn conn(&self) -> Result<PooledConn, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// Opens a read-write transaction (see [`Backend::begin_statement`]). On SQLite it first
    /// waits for this process's write turn; a task must not open a second one while it holds one.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let write_turn = match &self.write_turn {
            Some(turn) => Some(
                tokio::time::timeout(SQLITE_WRITE_WAIT, turn.clone().lock_owned())
                    .await
                    .map_err(|_| StoreError::WriteTurnTimeout)?,
            ),
            None => None,
        };
        let inner = self.pool.begin_with(self.backend.begin_statement()).await?;
        Ok(Tx {
            inner,
            signals: self.signals.clone(),
            queued_deliveries: false,
            queued_emails: false,
            keys_changed: false,
            _write_turn: write_turn,
        })
    }

    /// Opens a read-only transaction over one consistent snapshot (see
    /// [`Backend::snapshot_statement`]); end it with `rollback`.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn begin_snapshot(&self) -> Result<Tx, StoreError> {
        let inner = self.pool.begin_with(self.backend.snapshot_statement()).await?;
        Ok(Tx {
            inner,
            signals: self.signals.clone(),
            queued_deliveries: false,
            queued_emails: false,
            keys_changed: false,
            _write_turn: None,
        })
    }

    /// Resolves when a transaction of this store (this process) that queued webhook deliveries
    /// has committed since the last call returned (at once when one has); the delivery worker
    /// waits on it between polls.
    pub async fn deliveries_queued(&self) {
        self.signals.deliveries_queued.notified().await
    }

    /// The same for e-mails: the mailer waits on it between polls.
    pub async fn emails_queued(&self) {
        self.signals.emails_queued.notified().await
    }

    /// Says whether this process sends e-mail (its configuration has `[smtp]`); set where the
    /// store is opened, before any transaction. Without it the outbox queues no e-mail at all, so
    /// a daemon without SMTP writes no e-mail rows and nothing about e-mail can fail.
    pub fn set_mail_enabled(&self, enabled: bool) {
        self.signals.mail_enabled.store(enabled, std::sync::atomic::Ordering::Relaxed);
    }

    /// Checks the database answers (for `/readyz`).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// On SQLite, takes an exclusive lock that lives as long as the returned guard: SQLite serves
    /// one daemon process (two would watch and expire twice). Administrative commands do not take
    /// it, so they can run next to a daemon. PostgreSQL needs no such lock and returns `None`.
    pub fn lock_for_daemon(&self, url: &DatabaseUrl) -> Result<Option<DaemonLock>, StoreError> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let rest = url.expose().split_once(':').map(|(_, r)| r).unwrap_or_default();
        let path = rest.strip_prefix("//").unwrap_or(rest).split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Ok(None);
        }
        let lock_path = format!("{path}.daemon.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StoreError::CreateDir { path: lock_path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DaemonLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse { url: url.redacted() }),
            Err(std::fs::TryLockError::Error(source)) => Err(StoreError::CreateDir { path: lock_path, source }),
        }
    }

    #[tracing::instrument(skip(self))]
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether a database error says a table does not exist: PostgreSQL's `undefined_table`
/// (42P01), SQLite's "no such table".
fn is_missing_table(error: &dyn sqlx::error::DatabaseError) -> bool {
    error.code().as_deref() == Some("42P01") || error.message().starts_with("no such table")
}

/// Held by a daemon running on SQLite; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DaemonLock {
    _file: std::fs::File,
}

/// Makes sure the SQLite file can be created: its directory exists and `mode=rwc` is set.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url.split_once(':').map(|(_, r)| r).unwrap_or_default();
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Ok(url.to_owned());
    }
    if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.display().to_string(), source })?;
    }
    if query.split('&').any(|kv| kv.starts_with("mode=")) {
        Ok(url.to_owned())
    } else if query.is_empty() {
        Ok(format!("{url}?mode=rwc"))
    } else {
        Ok(format!("{url}&mode=rwc"))
    }
}

/// Parses a stored string column into a domain type, reporting corruption rather than panicking.
pub(crate) fn parse_column<T: FromStr>(column: &'static str, value: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| StoreError::Corrupt(format!("{column} = {value:?}: {e}")))
}

/// The `VALUES` list of a multi-row statement: `rows` groups of `columns` placeholders numbered
/// on from `$first` (`($1, $2), ($3, $4)` for 2 rows of 2 from 1), bound row after row.
pub(crate) fn value_rows(rows: usize, columns: usize, first: usize) -> String {
    (0..rows)
        .map(|row| {
            let start = first + row * columns;
            let params: Vec<String> = (start..start + columns).map(|n| format!("${n}")).collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows per multi-row statement at most: far under SQLite's and PostgreSQL's bound-parameter
/// limits for the widest row written this way (an invoice, 49 columns).
pub(crate) const ROWS_PER_STATEMENT: usize = 64;

/// `rows` cut for multi-row statements: chunks of a power of two rows (the largest that fits
/// first, at most [`ROWS_PER_STATEMENT`]), so a statement's text is one of a few per table.
/// Each text is prepared once per connection and then comes from sqlx's statement cache; a text
/// for every row count would be prepared afresh, a round trip more, nearly every time.
pub(crate) fn statement_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = ROWS_PER_STATEMENT.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod value_rows_tests {
    #[test]
    fn chunks_are_powers_of_two_largest_first() {
        let rows: Vec<u32> = (0..75).collect();
        let sizes: Vec<usize> = super::statement_chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, vec![64, 8, 2, 1]);
        let joined: Vec<u32> = super::statement_chunks(&rows).flatten().copied().collect();
        assert_eq!(joined, rows);
        assert_eq!(super::statement_chunks::<u32>(&[]).count(), 0);
    }

    #[test]
    fn numbers_the_placeholders_row_after_row() {
        assert_eq!(super::value_rows(2, 2, 1), "($1, $2), ($3, $4)");
        assert_eq!(super::value_rows(1, 3, 4), "($4, $5, $6)");
    }
}
