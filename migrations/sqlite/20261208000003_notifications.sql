-- Issue 23: e-mail receipts and notifications, an outbox channel beside webhook deliveries.

-- Where a merchant's notifications go (paid invoices, disabled webhook endpoints, failed
-- payouts); NULL: none are sent. Set by `depositd merchant set-notification-email`.
ALTER TABLE merchants ADD COLUMN notification_email TEXT;

-- One row per e-mail to send, written in the transaction of the event it reports (only when the
-- writing process has [smtp] configured) and sent by the mailer under a lease, like a webhook
-- delivery. `dedupe_key` names what the e-mail is about (`receipt:<invoice id>`, ...): one
-- e-mail per cause, however often the cause's event is recorded. Subject and body are rendered
-- when the row is written, so a retry sends the same bytes with the same Message-ID.
CREATE TABLE emails (
    id                  TEXT PRIMARY KEY,
    event_id            TEXT NOT NULL REFERENCES events(id),
    merchant_id         TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('receipt', 'invoice_paid', 'payout_failed', 'webhook_endpoint_disabled')),
    dedupe_key          TEXT NOT NULL UNIQUE,
    recipient           TEXT NOT NULL,
    subject             TEXT NOT NULL,
    body                TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempt_count       BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    -- A mailer's claim; another may take the e-mail once it has passed.
    locked_until        BIGINT,
    last_error          TEXT,
    sent_at             BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX emails_due ON emails (state, next_attempt_at);
CREATE INDEX emails_event ON emails (event_id);
