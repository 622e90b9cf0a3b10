//! The mailer: sends the outbox's e-mails (receipts and merchant notifications, queued by
//! `depositd_core::notify` in the transaction of their event) through the configured SMTP server
//! (`[smtp]`), like the webhook worker delivers webhooks:
//!
//! - it claims one due e-mail at a time under a lease (`store::emails::claim_due`), sends it, and
//!   records the outcome only while it still holds the lease, so two mailers (two daemons on
//!   PostgreSQL) never both record a send, and a crash before the record leaves the e-mail to be
//!   claimed again once the lease has run out;
//! - a temporary failure (connection, timeout, 4xx, the whole conversation not done within two
//!   `smtp.timeout_secs`, or an authentication refusal, which the operator's settings cause and
//!   every e-mail would meet) is retried after `smtp.retry_schedule_secs[n]` (jittered by
//!   +-10%); a permanent refusal of the message (another 5xx, an address that is not one) or a
//!   spent schedule marks the e-mail `failed`, logged and counted;
//! - **at most one copy reaches a recipient's mailbox, as far as SMTP allows.** The send is
//!   recorded right after the server's `250` for the message; a crash between that answer and
//!   the commit sends the e-mail again once the lease runs out. That window cannot be closed (a
//!   server cannot be asked what it accepted), so every e-mail carries a Message-ID fixed by its
//!   row (`<email id@sender's domain>`), the same in every attempt, by which receiving systems
//!   recognise a duplicate. A message the server never acknowledged (the daemon killed while the
//!   server still read it) was not delivered, and its resend is the only copy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use depositd_core::config::{SmtpSettings, SmtpTls};
use depositd_core::store::emails::{self, ClaimedEmail, EmailOutcome};
use depositd_core::store::{Store, StoreError};
use depositd_core::time::now_ms;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rand::Rng;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

/// Extra time a claim lasts beyond two SMTP timeouts (connect and conversation).
const LEASE_MARGIN_MS: i64 = 5_000;

/// Why the mailer cannot start: a setting lettre refuses.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("smtp.from: {0}")]
    From(String),
    #[error("smtp.host: {0}")]
    Transport(String),
}

/// Sends e-mails from the queue. Cheap to clone; one per daemon runs [`Mailer::run`].
#[derive(Clone)]
pub struct Mailer {
    store: Store,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The domain of Message-IDs: the sender's.
    domain: String,
    retry_schedule_secs: Vec<u64>,
    timeout: Duration,
    poll: Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

/// How one attempt went.
enum Attempt {
    Sent,
    Temporary(String),
    Permanent(String),
}

impl Mailer {
    /// A mailer for `settings` (the password never leaves the transport's credentials).
    pub fn new(store: Store, settings: &SmtpSettings) -> Result<Mailer, MailError> {
        let from: Mailbox = settings.from.parse().map_err(|e| MailError::From(format!("{e}")))?;
        let domain = from.email.domain().to_owned();
        let timeout = Duration::from_secs(settings.timeout_secs);
        let builder = match settings.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str()),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                .map_err(|e| MailError::Transport(e.to_string()))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                .map_err(|e| MailError::Transport(e.to_string()))?,
        };
        let mut builder = builder.port(settings.port).timeout(Some(timeout));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose_secret().to_owned()));
        }
        Ok(Mailer {
            store,
            transport: builder.build(),
            from,
            domain,
            retry_schedule_secs: settings.retry_schedule_secs.clone(),
            timeout,
            poll: Duration::from_millis(settings.poll_interval_ms),
        })
    }

    /// Sends until `shutdown`; an e-mail in flight is finished first.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StoreError> {
        loop {
            let handled = match self.tick().await {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(error = %error, "e-mail queue unavailable; retrying");
                    0
                }
            };
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if handled == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.poll) => {}
                    _ = self.store.emails_queued() => {}
                }
            }
        }
    }

    /// Claims one due e-mail and sends it; returns how many it handled (0 or 1).
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let lease_ms = 2 * self.timeout.as_millis() as i64 + LEASE_MARGIN_MS;
        let mut tx = self.store.begin().await?;
        let claimed = emails::claim_due(&mut tx, lease_ms, 1).await?;
        tx.commit().await?;
        for email in &claimed {
            self.send_one(email).await?;
        }
        Ok(claimed.len())
    }

    async fn send_one(&self, email: &ClaimedEmail) -> Result<(), StoreError> {
        let attempt = match self.message(email) {
            // lettre's own timeout bounds only the connection; the whole conversation is bounded
            // here, well inside the claim's lease (2 x timeout + margin), so a stalled server
            // neither stops the queue nor lets another mailer claim the e-mail mid-send.
            Ok(message) => match tokio::time::timeout(2 * self.timeout, self.transport.send(message)).await {
                Err(_) => Attempt::Temporary(format!(
                    "the SMTP server did not finish the conversation within {} s",
                    (2 * self.timeout).as_secs()
                )),
                Ok(Ok(_)) => Attempt::Sent,
                Ok(Err(e)) if rejects_this_message(&e) => Attempt::Permanent(e.to_string()),
                Ok(Err(e)) => Attempt::Temporary(e.to_string()),
            },
            Err(reason) => Attempt::Permanent(reason),
        };
        let (outcome, error) = match attempt {
            Attempt::Sent => (EmailOutcome::Sent, None),
            Attempt::Permanent(error) => (EmailOutcome::Failed, Some(error)),
            Attempt::Temporary(error) => match self.retry_schedule_secs.get(email.attempt_count as usize) {
                Some(delay) => {
                    let jitter = rand::rng().random_range(0.9..=1.1);
                    (EmailOutcome::RetryAt(now_ms() + (*delay as f64 * 1000.0 * jitter) as i64), Some(error))
                }
                None => (EmailOutcome::Failed, Some(error)),
            },
        };
        let mut tx = self.store.begin().await?;
        let recorded = emails::finish(&mut tx, email, outcome, error.as_deref()).await?;
        tx.commit().await?;
        match (recorded, outcome) {
            (false, _) => {
                tracing::warn!(email_id = %email.id, "lost the lease on an e-mail; its attempt is not recorded")
            }
            (true, EmailOutcome::Sent) => tracing::info!(email_id = %email.id, kind = %email.kind, "e-mail sent"),
            (true, EmailOutcome::RetryAt(_)) => tracing::warn!(
                email_id = %email.id, kind = %email.kind, error = error.as_deref().unwrap_or_default(),
                "e-mail not sent; will retry"
            ),
            (true, EmailOutcome::Failed) => tracing::error!(
                email_id = %email.id, kind = %email.kind, error = error.as_deref().unwrap_or_default(),
                "e-mail failed for good"
            ),
        }
        Ok(())
    }

    /// The message for `email`, the same bytes-to-be in every attempt: its Message-ID and Date
    /// come from the row, not the clock.
    fn message(&self, email: &ClaimedEmail) -> Result<Message, String> {
        let to: Mailbox = email.recipient.parse().map_err(|e| format!("recipient is not an address: {e}"))?;
        let date = UNIX_EPOCH + Duration::from_millis(email.created_at.max(0) as u64);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(format!("<{}@{}>", email.id, self.domain)))
            .date(date.min(SystemTime::now()))
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| format!("the message does not build: {e}"))
    }
}

/// A permanent (5xx) answer that is about this message, not about the mailer's own account: an
/// authentication answer (530 required, 534 mechanism too weak, 535 credentials refused, 538
/// encryption required) means every e-mail would fail the same way until the operator fixes the
/// settings, so it is retried on the schedule like a temporary failure rather than dropping
/// each queued receipt after one attempt.
fn rejects_this_message(error: &lettre::transport::smtp::Error) -> bool {
    error.is_permanent() && !matches!(error.status().map(u16::from), Some(530 | 534 | 535 | 538))
}
