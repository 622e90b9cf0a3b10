//! Group commit for invoice creation (`POST /api/v1/invoices`) on SQLite: creations that arrive
//! while one is being written are made together, in one write transaction, a statement per many
//! rows ([`invoicing::create_many`], `idempotency::claim_many` and `complete_many`).
//!
//! Why SQLite: one write transaction commits at a time, and every statement of it is a round trip
//! to the connection's thread, so creations made one by one pass at the pace of those round trips;
//! a batch costs about what one creation did (side by side on one machine, 3.3 to 3.5 times as
//! many creations a second at concurrency 16). On PostgreSQL, where concurrent creations already
//! commit side by side, batching showed no gain that stood out of the machine's noise when the two
//! were run alternately (made alone 539 to 765 creations/s, batched 425 to 1,222/s), so there each
//! creation is made on its own ([`GroupCommit::submit`]).
//!
//! The rules, each as the request made on its own would have it:
//! - a request's own error (its price, its fee) is its own answer; the others are made;
//! - the `Idempotency-Key`s are claimed first thing in the transaction, together, in one order
//!   (`idempotency::claim_many`), and completed with the responses last thing
//!   (`idempotency::complete_many`): the work, the records and the answers commit together or not
//!   at all. A key another request holds is left out, and its request is made on its own after the
//!   commit (it replays the other's response, or gets its conflict). Two requests of one batch
//!   never share a key or an `external_id`: the later one too is made on its own after the commit;
//! - an `external_id` the merchant already has is that request's 409;
//! - anything that fails the whole batch (an `external_id` taken meanwhile, a store error before
//!   the commit) rolls it back, and every request of it is then made on its own, by the
//!   handler's own path ([`Submitted::Alone`]), which answers each precisely;
//! - a request whose client hung up before its batch began is not made.
//!
//! One batch is written at a time, a lone request too (a batch of one): while it is written, the
//! requests that arrive meanwhile queue up and make the next batch. The queue is bounded, so a
//! flood waits in the handlers.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use axum::http::StatusCode;
use axum::response::Response;
use depositd_core::config::Config;
use depositd_core::invoice::{Invoice, SessionSigner};
use depositd_core::invoicing::{self, InvoiceRequest};
use depositd_core::merchant::Merchant;
use depositd_core::pricing::Pricer;
use depositd_core::store::idempotency;
use depositd_core::store::{Backend, Store};
use depositd_core::wallet::HdWallet;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::idempotency_key::IdempotencyGuard;

/// Requests written together at most (a power of two).
const MAX_BATCH: usize = 64;

/// A creation waiting for its batch.
pub struct Request {
    pub merchant: Merchant,
    pub request: InvoiceRequest,
    pub guard: Option<IdempotencyGuard>,
}

/// What became of a submitted creation.
pub enum Submitted {
    /// Made in a batch (or refused there for a reason of its own): the invoice and the 201
    /// response, or the error to answer.
    Done(Result<Box<(Invoice, Response)>, ApiError>),
    /// Not made: the handler makes it on its own.
    Alone(Box<Request>),
}

struct Job {
    creation: Request,
    reply: oneshot::Sender<Submitted>,
}

/// The queue of creations, with its writer task started on first use (inside the runtime).
#[derive(Default)]
pub struct GroupCommit {
    queue: OnceLock<mpsc::Sender<Job>>,
}

/// What the writer makes invoices with (the parts of the API's state invoicing needs).
pub struct Writer {
    pub store: Store,
    pub config: Arc<Config>,
    pub pricer: Arc<Pricer>,
    pub wallet: Arc<HdWallet>,
    pub sessions: SessionSigner,
}

impl GroupCommit {
    /// Queues `creation` and waits for its batch, on SQLite; on PostgreSQL it is made on its own
    /// at once (see the module doc). `writer` starts the writer task the first time; it ends when
    /// the queue's last sender (this value) is dropped.
    pub async fn submit(&self, backend: Backend, writer: impl FnOnce() -> Writer, creation: Request) -> Submitted {
        if backend != Backend::Sqlite {
            return Submitted::Alone(Box::new(creation));
        }
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
            tokio::spawn(write(writer(), receiver));
            sender
        });
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = queue.send(Job { creation, reply }).await {
            return Submitted::Alone(Box::new(job.creation));
        }
        match answer.await {
            Ok(submitted) => submitted,
            // The writer stopped (the runtime is shutting down): the creation was not made.
            Err(_) => Submitted::Done(Err(ApiError::Unavailable {
                code: "shutting_down",
                message: "the server is shutting down; retry the request".into(),
            })),
        }
    }
}

/// The writer task: takes what has queued and writes it, batch after batch. A batch is a power of
/// two requests (at most [`MAX_BATCH`]; the rest wait for the next), so its multi-row statements
/// are of a few shapes that sqlx has prepared already (see `store::statement_chunks`).
async fn write(writer: Writer, mut queue: mpsc::Receiver<Job>) {
    let writer = Arc::new(writer);
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match queue.recv().await {
                Some(job) => waiting.push_back(job),
                None => return,
            }
        }
        while waiting.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => break,
            }
        }
        let size = MAX_BATCH.min(1 << waiting.len().ilog2());
        let batch: Vec<Job> = waiting.drain(..size).collect();
        // A batch that panics (a bug) drops its requests' replies (they answer 503) and leaves
        // the writer running for the next.
        let writing = writer.clone();
        if let Err(error) = tokio::spawn(async move { writing.batch(batch).await }).await {
            tracing::error!(%error, "a batch of invoice creations stopped; its requests were answered 503");
        }
    }
}

impl Writer {
    async fn batch(&self, jobs: Vec<Job>) {
        // A request whose client hung up is not made (as a dropped request's transaction would
        // roll back).
        let jobs: Vec<Job> = jobs.into_iter().filter(|job| !job.reply.is_closed()).collect();
        // Requests that share a key or an external_id with an earlier one of the batch wait for
        // its commit and are then made on their own.
        let mut together: Vec<Job> = Vec::with_capacity(jobs.len());
        let mut later: Vec<Job> = Vec::new();
        for job in jobs {
            let clashes = together.iter().any(|other| clash(&other.creation, &job.creation));
            if clashes { later.push(job) } else { together.push(job) }
        }
        if together.is_empty() {
            return;
        }
        match self.made_together(together).await {
            Ok(taken) => alone(taken),
            Err(jobs) => alone(jobs),
        }
        alone(later);
    }

    /// Writes `jobs` in one transaction and answers each, but those whose key another request
    /// holds (returned, unanswered, to be made on their own after the commit). Gives them all
    /// back unanswered if the batch as a whole failed before its commit (nothing of it written).
    async fn made_together(&self, jobs: Vec<Job>) -> Result<Vec<Job>, Vec<Job>> {
        let mut tx = match self.store.begin().await {
            Ok(tx) => tx,
            Err(_) => return Err(jobs),
        };
        // Keys first, as a request made on its own claims its key first.
        let presented: Vec<idempotency::Presented<'_>> =
            jobs.iter().filter_map(|job| job.creation.guard.as_ref().map(IdempotencyGuard::presented)).collect();
        let claimed = match idempotency::claim_many(&mut tx, &presented).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::debug!(%error, count = jobs.len(), "a batch of invoices could not claim its keys; making them one by one");
                drop(presented);
                tx.rollback().await.ok();
                return Err(jobs);
            }
        };
        drop(presented);
        let (jobs, taken): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|job| match &job.creation.guard {
            Some(guard) => {
                let (merchant_id, key) = guard.key();
                claimed.iter().any(|(m, k)| *m == merchant_id && k == key)
            }
            None => true,
        });
        let back = |jobs: Vec<Job>, taken: Vec<Job>| jobs.into_iter().chain(taken).collect::<Vec<Job>>();
        let ctx = invoicing::Context {
            config: &self.config,
            pricer: &self.pricer,
            wallet: &self.wallet,
            sessions: &self.sessions,
        };
        let requests = jobs.iter().map(|job| (&job.creation.merchant, job.creation.request.clone())).collect();
        let made = match invoicing::create_many(&mut tx, ctx, requests).await {
            Ok(made) => made,
            Err(error) => {
                tracing::debug!(%error, count = jobs.len(), "a batch of invoices failed as a whole; making them one by one");
                tx.rollback().await.ok();
                return Err(back(jobs, taken));
            }
        };
        let mut answers: Vec<Result<(Invoice, String), ApiError>> = Vec::with_capacity(made.len());
        for made in made {
            answers.push(match made {
                Ok((invoice, resource)) => match serde_json::to_string(&resource) {
                    Ok(body) => Ok((invoice, body)),
                    Err(_) => {
                        // Never committed without the answer its key would replay.
                        tx.rollback().await.ok();
                        return Err(back(jobs, taken));
                    }
                },
                Err(error) => Err(ApiError::from(error)),
            });
        }
        let records: Vec<idempotency::Completed<'_>> = jobs
            .iter()
            .zip(&answers)
            .filter_map(|(job, answer)| match (&job.creation.guard, answer) {
                (Some(guard), Ok((_, body))) => Some(guard.completed(StatusCode::CREATED, body)),
                _ => None,
            })
            .collect();
        // A request refused on its own leaves no record: its claim goes with the transaction
        // unless completed, so it is released here (it was claimed in this transaction alone).
        let refused: Vec<(uuid::Uuid, &str)> = jobs
            .iter()
            .zip(&answers)
            .filter_map(|(job, answer)| match (&job.creation.guard, answer) {
                (Some(guard), Err(_)) => Some(guard.key()),
                _ => None,
            })
            .collect();
        let finished = async {
            idempotency::release_many(&mut tx, &refused).await?;
            idempotency::complete_many(&mut tx, &records).await
        }
        .await;
        drop(records);
        drop(refused);
        if let Err(error) = finished {
            tracing::debug!(%error, "a batch of invoices could not complete its keys; making them one by one");
            tx.rollback().await.ok();
            return Err(back(jobs, taken));
        }
        // Past this point the batch may have committed even when the commit reports an error
        // (a connection lost after it): each request gets the error, as on its own, and is not
        // made again here.
        let committed = tx.commit().await.map_err(|e| e.to_string());
        if let Err(error) = &committed {
            tracing::error!(%error, count = jobs.len(), "the commit of a batch of invoices failed");
        }
        for (job, answer) in jobs.into_iter().zip(answers) {
            let answer = match (&committed, answer) {
                (Ok(()), answer) => answer.map(|(invoice, body)| {
                    Box::new((invoice, crate::idempotency_key::created(StatusCode::CREATED, body)))
                }),
                (Err(error), Ok(_)) => Err(ApiError::internal(std::io::Error::other(format!(
                    "the commit of a batch of invoices failed: {error}"
                )))),
                // A request refused on its own keeps its own answer.
                (Err(_), Err(refused)) => Err(refused),
            };
            job.reply.send(Submitted::Done(answer)).ok();
        }
        Ok(taken)
    }
}

/// Whether two creations may not be written in one batch: one merchant's same key or same
/// `external_id`.
fn clash(a: &Request, b: &Request) -> bool {
    let same_key = matches!((&a.guard, &b.guard), (Some(x), Some(y)) if x.key() == y.key());
    let same_external_id = a.merchant.id == b.merchant.id
        && a.request.external_id.is_some()
        && a.request.external_id == b.request.external_id;
    same_key || same_external_id
}

/// Hands `jobs` back to their handlers, to be made on their own.
fn alone(jobs: Vec<Job>) {
    for job in jobs {
        // A handler that is gone (its client hung up) made nothing: nothing to do.
        job.reply.send(Submitted::Alone(Box::new(job.creation))).ok();
    }
}
