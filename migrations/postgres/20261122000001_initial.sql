-- depositd initial schema.
--
-- Portable conventions (the same SQL serves SQLite and PostgreSQL through sqlx's Any driver):
-- * ids are UUIDv7 strings (time-ordered, so "ORDER BY id" is creation order);
-- * timestamps are BIGINT milliseconds since the Unix epoch (UTC);
-- * token amounts are base units as decimal strings (U256 exceeds every native integer type);
-- * prices and rates are exact decimal strings (rust_decimal), never floats;
-- * flags are TEXT states or nullable timestamps, never booleans.

CREATE TABLE merchants (
    id                          TEXT PRIMARY KEY,
    name                        TEXT NOT NULL,
    -- Shown on the checkout page when an invoice has no title/footer (seed 001).
    company_name                TEXT,
    status                      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    -- Operator-configured fee: percent of the paid amount plus a fixed part in the invoice asset.
    fee_percent                 TEXT NOT NULL DEFAULT '0',
    -- Shortfall still counted as paid (BTCPay's payment tolerance).
    payment_tolerance_percent   TEXT NOT NULL DEFAULT '0',
    -- Per-merchant bounds for invoice amounts in the invoice currency; NULL = the product default.
    min_invoice_amount          TEXT,
    max_invoice_amount          TEXT,
    created_at                  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL REFERENCES merchants(id),
    -- The first characters of the key (dk_test_xxxx), for humans to tell keys apart; never enough to use it.
    display_prefix  TEXT NOT NULL,
    -- SHA-256 of the full key, hex. The key itself is shown once and never stored.
    key_hash        TEXT NOT NULL UNIQUE,
    mode            TEXT NOT NULL CHECK (mode IN ('test', 'live')),
    -- Space-separated scopes, e.g. "invoices:read invoices:write".
    scopes          TEXT NOT NULL,
    name            TEXT,
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT,
    revoked_at      BIGINT
);
CREATE INDEX api_keys_merchant ON api_keys (merchant_id);

-- Monotonic counters (HD derivation index). Incremented with UPDATE ... RETURNING inside the
-- transaction that uses the value, so two invoices can never share an index.
CREATE TABLE counters (
    name    TEXT PRIMARY KEY,
    value   BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('deposit_address_index', -1);

-- Addresses derived from the hot wallet's HD seed (m/44'/60'/0'/0/i). One address, one owner, forever.
CREATE TABLE deposit_addresses (
    id                  TEXT PRIMARY KEY,
    address             TEXT NOT NULL UNIQUE,
    derivation_index    BIGINT NOT NULL UNIQUE,
    purpose             TEXT NOT NULL CHECK (purpose IN ('invoice', 'static')),
    created_at          BIGINT NOT NULL
);

CREATE TABLE static_addresses (
    id                  TEXT PRIMARY KEY,
    merchant_id         TEXT NOT NULL REFERENCES merchants(id),
    customer_id         TEXT NOT NULL,
    chain               TEXT NOT NULL,
    chain_id            BIGINT NOT NULL,
    asset               TEXT NOT NULL,
    deposit_address_id  TEXT NOT NULL UNIQUE REFERENCES deposit_addresses(id),
    address             TEXT NOT NULL,
    metadata            TEXT,
    callback_url        TEXT,
    status              TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at          BIGINT NOT NULL,
    disabled_at         BIGINT
);
CREATE INDEX static_addresses_merchant ON static_addresses (merchant_id, id);
CREATE INDEX static_addresses_customer ON static_addresses (merchant_id, customer_id);

CREATE TABLE invoices (
    id                          TEXT PRIMARY KEY,
    merchant_id                 TEXT NOT NULL REFERENCES merchants(id),
    external_id                 TEXT,
    status                      TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'paid', 'expired', 'cancelled', 'refunded', 'partially_refunded')),
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
    updated_at                  BIGINT NOT NULL
);
CREATE UNIQUE INDEX invoices_merchant_external_id ON invoices (merchant_id, external_id);
CREATE INDEX invoices_merchant_id ON invoices (merchant_id, id);
CREATE INDEX invoices_merchant_customer ON invoices (merchant_id, customer_id, id);
CREATE INDEX invoices_expiry ON invoices (status, expires_at);
CREATE INDEX invoices_deposit_address ON invoices (deposit_address_id);

-- Every transfer seen to a watched address. The unique key makes crediting exactly-once:
-- native transfers use log_index = -1 - (transaction index), which no real log index can take.
CREATE TABLE deposits (
    id                  TEXT PRIMARY KEY,
    chain_id            BIGINT NOT NULL,
    tx_hash             TEXT NOT NULL,
    log_index           BIGINT NOT NULL,
    block_number        BIGINT NOT NULL,
    block_hash          TEXT NOT NULL,
    from_address        TEXT NOT NULL,
    to_address          TEXT NOT NULL,
    token_address       TEXT,
    asset               TEXT NOT NULL,
    amount_base_units   TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('detected', 'confirmed', 'reorged', 'reversed', 'rejected')),
    reject_reason       TEXT,
    merchant_id         TEXT REFERENCES merchants(id),
    invoice_id          TEXT REFERENCES invoices(id),
    static_address_id   TEXT REFERENCES static_addresses(id),
    detected_at         BIGINT NOT NULL,
    confirmed_at        BIGINT,
    updated_at          BIGINT NOT NULL,
    UNIQUE (chain_id, tx_hash, log_index)
);
CREATE INDEX deposits_invoice ON deposits (invoice_id);
CREATE INDEX deposits_state ON deposits (chain_id, state, block_number);

-- The watcher's position per chain, written in the same transaction as the deposits of the range.
CREATE TABLE chain_cursors (
    chain_id        BIGINT PRIMARY KEY,
    block_number    BIGINT NOT NULL,
    block_hash      TEXT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Recent canonical block hashes (a window deeper than the confirmation depth) for reorg detection.
CREATE TABLE block_hashes (
    chain_id        BIGINT NOT NULL,
    block_number    BIGINT NOT NULL,
    block_hash      TEXT NOT NULL,
    parent_hash     TEXT NOT NULL,
    PRIMARY KEY (chain_id, block_number)
);

-- Double-entry ledger. owner is a merchant id or 'platform'.
CREATE TABLE ledger_accounts (
    id                  TEXT PRIMARY KEY,
    owner               TEXT NOT NULL,
    kind                TEXT NOT NULL,
    chain_id            BIGINT NOT NULL,
    asset               TEXT NOT NULL,
    balance_base_units  TEXT NOT NULL DEFAULT '0',
    updated_at          BIGINT NOT NULL,
    UNIQUE (owner, kind, chain_id, asset)
);

-- Append-only: rows are never updated or deleted; corrections are reversing entries.
CREATE TABLE ledger_entries (
    id                  TEXT PRIMARY KEY,
    entry_type          TEXT NOT NULL,
    -- The cause can post only once: e.g. "deposit_credit:<deposit id>".
    idempotency_key     TEXT NOT NULL UNIQUE,
    reverses_entry_id   TEXT REFERENCES ledger_entries(id),
    merchant_id         TEXT,
    invoice_id          TEXT,
    deposit_id          TEXT,
    payout_id           TEXT,
    transaction_id      TEXT,
    memo                TEXT,
    created_at          BIGINT NOT NULL
);
CREATE INDEX ledger_entries_merchant ON ledger_entries (merchant_id, id);

CREATE TABLE ledger_postings (
    entry_id            TEXT NOT NULL REFERENCES ledger_entries(id),
    account_id          TEXT NOT NULL REFERENCES ledger_accounts(id),
    direction           TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount_base_units   TEXT NOT NULL,
    -- The account's balance right after this posting, for statements.
    balance_after       TEXT NOT NULL,
    PRIMARY KEY (entry_id, account_id, direction)
);
CREATE INDEX ledger_postings_account ON ledger_postings (account_id);

CREATE TABLE webhook_endpoints (
    id                          TEXT PRIMARY KEY,
    merchant_id                 TEXT NOT NULL REFERENCES merchants(id),
    url                         TEXT NOT NULL,
    description                 TEXT,
    -- JSON array of event types; empty array = all.
    enabled_events              TEXT NOT NULL,
    -- Signing secrets, encrypted with the operator's webhook master key.
    secret_ciphertext           TEXT NOT NULL,
    previous_secret_ciphertext  TEXT,
    previous_secret_expires_at  BIGINT,
    status                      TEXT NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    disabled_reason             TEXT,
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id);

-- The outbox: written in the same transaction as the state change it reports.
CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    resource_type   TEXT NOT NULL,
    resource_id     TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX events_merchant ON events (merchant_id, id);
CREATE INDEX events_resource ON events (resource_id);

CREATE TABLE webhook_deliveries (
    id                  TEXT PRIMARY KEY,
    event_id            TEXT NOT NULL REFERENCES events(id),
    -- Either a registered endpoint or the resource's callback_url.
    endpoint_id         TEXT REFERENCES webhook_endpoints(id),
    url                 TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempt_count       BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    -- A worker's claim; another worker may take the delivery once it has passed.
    locked_until        BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (event_id, url)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);

CREATE TABLE webhook_attempts (
    id              TEXT PRIMARY KEY,
    delivery_id     TEXT NOT NULL REFERENCES webhook_deliveries(id),
    attempted_at    BIGINT NOT NULL,
    status_code     BIGINT,
    latency_ms      BIGINT NOT NULL,
    response_body   TEXT,
    error           TEXT
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id);

CREATE TABLE payouts (
    id                      TEXT PRIMARY KEY,
    merchant_id             TEXT NOT NULL REFERENCES merchants(id),
    kind                    TEXT NOT NULL CHECK (kind IN ('payout', 'refund')),
    external_id             TEXT,
    invoice_id              TEXT REFERENCES invoices(id),
    chain_id                BIGINT NOT NULL,
    asset                   TEXT NOT NULL,
    amount_base_units       TEXT NOT NULL,
    fee_reserve_base_units  TEXT NOT NULL,
    destination             TEXT NOT NULL,
    status                  TEXT NOT NULL CHECK (status IN ('pending', 'submitted', 'confirmed', 'failed', 'cancelled')),
    metadata                TEXT,
    transaction_id          TEXT,
    failure_reason          TEXT,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
CREATE UNIQUE INDEX payouts_merchant_external_id ON payouts (merchant_id, external_id);

-- Every outgoing transaction is a row before it is anything else (intent -> signed -> broadcast -> ...).
CREATE TABLE chain_transactions (
    id                          TEXT PRIMARY KEY,
    chain_id                    BIGINT NOT NULL,
    signer_address              TEXT NOT NULL,
    purpose                     TEXT NOT NULL CHECK (purpose IN ('payout', 'refund', 'sweep', 'gas_topup', 'passthrough', 'cold_transfer')),
    payout_id                   TEXT REFERENCES payouts(id),
    invoice_id                  TEXT REFERENCES invoices(id),
    to_address                  TEXT NOT NULL,
    value_base_units            TEXT NOT NULL,
    token_address               TEXT,
    state                       TEXT NOT NULL CHECK (state IN ('intent', 'signed', 'broadcast', 'mined', 'confirmed', 'failed')),
    nonce                       BIGINT,
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL,
    UNIQUE (chain_id, signer_address, nonce)
);

-- Each signed version of a transaction (fee bumps replace the same nonce); whichever is mined wins.
CREATE TABLE chain_transaction_attempts (
    id                          TEXT PRIMARY KEY,
    transaction_id              TEXT NOT NULL REFERENCES chain_transactions(id),
    tx_hash                     TEXT NOT NULL UNIQUE,
    raw_tx                      TEXT NOT NULL,
    max_fee_per_gas             TEXT NOT NULL,
    max_priority_fee_per_gas    TEXT NOT NULL,
    gas_limit                   TEXT NOT NULL,
    broadcast_at                BIGINT,
    created_at                  BIGINT NOT NULL
);

-- Next nonce per signer, advanced in the transaction that signs (serialises a signer across daemons).
CREATE TABLE signer_nonces (
    chain_id        BIGINT NOT NULL,
    signer_address  TEXT NOT NULL,
    next_nonce      BIGINT NOT NULL,
    PRIMARY KEY (chain_id, signer_address)
);

CREATE TABLE idempotency_keys (
    merchant_id     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    -- "POST /api/v1/invoices": the same key on another endpoint is a conflict.
    endpoint        TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
    response_status BIGINT,
    response_body   TEXT,
    -- While in_progress: the owner's lease; a crashed owner's claim can be taken over after it.
    locked_until    BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
