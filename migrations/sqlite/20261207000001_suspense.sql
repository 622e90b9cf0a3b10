-- An operator's resolution of a transfer in suspense (recorded as `rejected`, its money posted to
-- the platform's `suspense` account): credit it to an invoice or a merchant's balance, refund it,
-- or take it as the operator's revenue. One live resolution per life (generation) of a deposit;
-- a refund whose transaction failed is `failed` and no longer counts, so the deposit can be
-- resolved again.
CREATE TABLE deposit_resolutions (
    id              TEXT PRIMARY KEY,
    deposit_id      TEXT NOT NULL REFERENCES deposits(id),
    generation      BIGINT NOT NULL,
    action          TEXT NOT NULL CHECK (action IN ('credit_invoice', 'credit_merchant', 'refund', 'revenue')),
    invoice_id      TEXT REFERENCES invoices(id),
    merchant_id     TEXT REFERENCES merchants(id),
    -- A refund's recipient (EIP-55) and the treasury transaction that sends it.
    destination     TEXT,
    transaction_id  TEXT REFERENCES chain_transactions(id),
    state           TEXT NOT NULL CHECK (state IN ('pending', 'completed', 'failed')),
    reason          TEXT NOT NULL,
    -- Who resolved it: `cli:<os user>` or `api_key:<key id>`.
    actor           TEXT NOT NULL,
    failure_reason  TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX deposit_resolutions_live ON deposit_resolutions (deposit_id, generation) WHERE state <> 'failed';
CREATE INDEX deposit_resolutions_transaction ON deposit_resolutions (transaction_id);
