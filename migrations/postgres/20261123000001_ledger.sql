-- The ledger goes live (issue 5).

-- A deposit's generation: bumped each time a reorg takes it away and it reappears, so every life
-- of a deposit posts under its own ledger idempotency keys ("deposit_credit:<id>:<generation>")
-- while a second posting within one life is refused by the unique key.
ALTER TABLE deposits ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;

-- The fee schedule an invoice was created under (percent of the paid amount plus a fixed part in
-- base units of the pay asset), so that a later change to the merchant's fees never changes what
-- an existing invoice posts. Earlier invoices had only the merchant's percent.
ALTER TABLE invoices ADD COLUMN fee_percent TEXT NOT NULL DEFAULT '0';
ALTER TABLE invoices ADD COLUMN fee_fixed_base_units TEXT NOT NULL DEFAULT '0';
UPDATE invoices SET fee_percent = (SELECT fee_percent FROM merchants WHERE merchants.id = invoices.merchant_id);

-- Operator-set fees per merchant and asset symbol; without a row the merchant's fee_percent applies
-- with no fixed part. fee_fixed is in whole tokens (exact decimal), converted with the invoice's decimals.
CREATE TABLE merchant_fees (
    merchant_id     TEXT NOT NULL REFERENCES merchants(id),
    asset           TEXT NOT NULL,
    fee_percent     TEXT NOT NULL,
    fee_fixed       TEXT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, asset)
);

-- An entry is reversed at most once (NULLs, the entries that reverse nothing, do not collide).
CREATE UNIQUE INDEX ledger_entries_reverses ON ledger_entries (reverses_entry_id);
CREATE INDEX ledger_entries_deposit ON ledger_entries (deposit_id);
CREATE INDEX ledger_entries_invoice ON ledger_entries (invoice_id);
CREATE INDEX ledger_accounts_owner ON ledger_accounts (owner, chain_id, asset);
CREATE INDEX deposits_merchant ON deposits (merchant_id, id);
