-- A merchant's manual resolution of an invoice (issue 21, BTCPay's "mark as settled / invalid"):
-- a new status word, 'invalid', and the mark: the status the merchant marked it ('paid' or
-- 'invalid'), why, when (epoch ms) and with which API key (its id and its display prefix, kept
-- even if the key is later revoked). NULL: never marked. The mark moves no money.
-- (SQLite rebuilds the table for the new CHECK; PostgreSQL changes the constraint in place.)
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check
    CHECK (status IN ('pending', 'processing', 'paid', 'expired', 'cancelled', 'refunded', 'partially_refunded', 'invalid'));
ALTER TABLE invoices ADD COLUMN marked_status TEXT CHECK (marked_status IN ('paid', 'invalid'));
ALTER TABLE invoices ADD COLUMN marked_reason TEXT;
ALTER TABLE invoices ADD COLUMN marked_at BIGINT;
ALTER TABLE invoices ADD COLUMN marked_by_key_id TEXT;
ALTER TABLE invoices ADD COLUMN marked_by TEXT;
