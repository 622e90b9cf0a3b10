-- no-transaction
-- A merchant's manual resolution of an invoice (issue 21, BTCPay's "mark as settled / invalid"):
-- a new status word, 'invalid', and the mark: the status the merchant marked it ('paid' or
-- 'invalid'), why, when (epoch ms) and with which API key (its id and its display prefix, kept
-- even if the key is later revoked). NULL: never marked. The mark moves no money.
--
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt the way SQLite's
-- documentation prescribes (https://www.sqlite.org/lang_altertable.html, section 7): foreign
-- keys off (only possible outside a transaction, hence `no-transaction` above), then in one
-- transaction create the new table, copy every row, drop the old one, rename the new one (the
-- other tables' references by name then point at it), recreate the indexes; foreign keys back on.
-- PostgreSQL changes the constraint in place (its own file).
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE invoices_new (
    id                          TEXT PRIMARY KEY,
    merchant_id                 TEXT NOT NULL REFERENCES merchants(id),
    external_id                 TEXT,
    status                      TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'paid', 'expired', 'cancelled', 'refunded', 'partially_refunded', 'invalid')),
    -- Comma-separated subset of underpaid, overpaid, paid_late.
    payment_flags               TEXT NOT NULL DEFAULT '',
    amount                      TEXT NOT NULL,
    currency                    TEXT NOT NULL,
    conversion_rate             TEXT NOT NULL,
    chain                       TEXT NOT NULL,
    chain_id                    BIGINT NOT NULL,
    asset                       TEXT NOT NULL,
    token_address               TEXT,
    decimals                    BIGINT NOT NULL,
    -- Unique per invoice-created address; shared by the invoices auto-created for a static address.
    deposit_address_id          TEXT NOT NULL REFERENCES deposit_addresses(id),
    address                     TEXT NOT NULL,
    amount_base_units           TEXT NOT NULL,
    fee_base_units              TEXT NOT NULL,
    merchant_amount_base_units  TEXT NOT NULL,
    amount_paid_base_units      TEXT NOT NULL DEFAULT '0',
    description                 TEXT,
    customer_id                 TEXT,
    customer_email              TEXT,
    metadata                    TEXT,
    title                       TEXT,
    footer                      TEXT,
    return_url                  TEXT,
    use_return_url              TEXT,
    success_url                 TEXT,
    fail_url                    TEXT,
    callback_url                TEXT,
    questions                   TEXT,
    answers                     TEXT,
    -- Payer-side session (seed 001): the token goes to the browser; its HMAC signature is derived.
    session_token               TEXT NOT NULL,
    -- Pass-through settlement target (seed 001's receiver_override); NULL = credit the merchant balance.
    receiver_override_address   TEXT,
    -- Set when the invoice was auto-created for a deposit to a static address.
    static_address_id           TEXT REFERENCES static_addresses(id),
    created_at                  BIGINT NOT NULL,
    expires_at                  BIGINT NOT NULL,
    finished_at                 BIGINT,
    updated_at                  BIGINT NOT NULL,
    fee_percent                 TEXT NOT NULL DEFAULT '0',
    fee_fixed_base_units        TEXT NOT NULL DEFAULT '0',
    api_view                    TEXT NOT NULL DEFAULT 'invoice',
    customer_name               TEXT,
    marked_status               TEXT CHECK (marked_status IN ('paid', 'invalid')),
    marked_reason               TEXT,
    marked_at                   BIGINT,
    marked_by_key_id            TEXT,
    marked_by                   TEXT
);
INSERT INTO invoices_new (
    id, merchant_id, external_id, status, payment_flags, amount, currency, conversion_rate, chain, chain_id,
    asset, token_address, decimals, deposit_address_id, address, amount_base_units, fee_base_units,
    merchant_amount_base_units, amount_paid_base_units, description, customer_id, customer_email, metadata,
    title, footer, return_url, use_return_url, success_url, fail_url, callback_url, questions, answers,
    session_token, receiver_override_address, static_address_id, created_at, expires_at, finished_at,
    updated_at, fee_percent, fee_fixed_base_units, api_view, customer_name
)
SELECT
    id, merchant_id, external_id, status, payment_flags, amount, currency, conversion_rate, chain, chain_id,
    asset, token_address, decimals, deposit_address_id, address, amount_base_units, fee_base_units,
    merchant_amount_base_units, amount_paid_base_units, description, customer_id, customer_email, metadata,
    title, footer, return_url, use_return_url, success_url, fail_url, callback_url, questions, answers,
    session_token, receiver_override_address, static_address_id, created_at, expires_at, finished_at,
    updated_at, fee_percent, fee_fixed_base_units, api_view, customer_name
FROM invoices;
DROP TABLE invoices;
ALTER TABLE invoices_new RENAME TO invoices;
CREATE UNIQUE INDEX invoices_merchant_external_id ON invoices (merchant_id, external_id);
CREATE INDEX invoices_merchant_id ON invoices (merchant_id, id);
CREATE INDEX invoices_merchant_customer ON invoices (merchant_id, customer_id, id);
CREATE INDEX invoices_expiry ON invoices (status, expires_at);
CREATE INDEX invoices_deposit_address ON invoices (deposit_address_id);
COMMIT;
PRAGMA foreign_keys = ON;
