-- Payment options (issue 23): an invoice payable in several chain/asset pairs. The invoice row
-- keeps its primary option in its own columns, as before; an invoice created with more than one
-- option has one row here per option, the primary first (option_index 0), each with its amount at the
-- rate locked at creation, its fee schedule and what has been paid in it. `option_count` is 0 for
-- an invoice payable one way (every invoice made before this migration): such an invoice has no
-- rows here and is read without looking here.
ALTER TABLE invoices ADD COLUMN option_count BIGINT NOT NULL DEFAULT 0;

CREATE TABLE invoice_payment_options (
    invoice_id              TEXT NOT NULL REFERENCES invoices(id),
    option_index            BIGINT NOT NULL,
    chain                   TEXT NOT NULL,
    chain_id                BIGINT NOT NULL,
    asset                   TEXT NOT NULL,
    -- NULL for the chain's native coin.
    token_address           TEXT,
    decimals                BIGINT NOT NULL,
    -- The invoice's deposit address (one address serves every option: see ARCHITECTURE.md).
    address                 TEXT NOT NULL,
    amount_base_units       TEXT NOT NULL,
    fee_base_units          TEXT NOT NULL,
    fee_percent             TEXT NOT NULL,
    fee_fixed_base_units    TEXT NOT NULL,
    -- Invoice-currency units per token (informational, rounded; the amount is the locked price).
    conversion_rate         TEXT NOT NULL,
    amount_paid_base_units  TEXT NOT NULL,
    PRIMARY KEY (invoice_id, option_index),
    UNIQUE (invoice_id, chain_id, asset)
);
