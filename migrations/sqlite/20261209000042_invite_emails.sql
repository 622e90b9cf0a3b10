-- Issue 20: invites are e-mailed (through the e-mail outbox, like receipts) when SMTP is configured.
-- SQLite cannot change a CHECK constraint: the table is rebuilt with the new kind allowed
-- (nothing references it).
CREATE TABLE emails_new (
    id                  TEXT PRIMARY KEY,
    event_id            TEXT NOT NULL REFERENCES events(id),
    merchant_id         TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('receipt', 'invoice_paid', 'payout_failed', 'webhook_endpoint_disabled', 'member_invite')),
    dedupe_key          TEXT NOT NULL UNIQUE,
    recipient           TEXT NOT NULL,
    subject             TEXT NOT NULL,
    body                TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempt_count       BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    locked_until        BIGINT,
    last_error          TEXT,
    sent_at             BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
INSERT INTO emails_new (id, event_id, merchant_id, kind, dedupe_key, recipient, subject, body, state, attempt_count,
    next_attempt_at, locked_until, last_error, sent_at, created_at, updated_at)
SELECT id, event_id, merchant_id, kind, dedupe_key, recipient, subject, body, state, attempt_count,
    next_attempt_at, locked_until, last_error, sent_at, created_at, updated_at FROM emails;
DROP TABLE emails;
ALTER TABLE emails_new RENAME TO emails;
CREATE INDEX emails_due ON emails (state, next_attempt_at);
CREATE INDEX emails_event ON emails (event_id);
