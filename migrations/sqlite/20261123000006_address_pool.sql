-- Pre-derived invoice addresses (issue 10, API load). Handing out an address used to bump the
-- counter row inside the invoice's transaction, so every creation waited for the one before it to
-- commit. A pool of addresses derived ahead of time (`pooled` = 1) lets creations claim one each
-- without waiting on each other; the counter still moves only in commit order, so the watcher,
-- which loads addresses by increasing index, has every pooled address before it is handed out.
-- Rows written without the column (every existing one) are handed out already.
ALTER TABLE deposit_addresses ADD COLUMN pooled BIGINT NOT NULL DEFAULT 0;
CREATE INDEX deposit_addresses_pool ON deposit_addresses (purpose, derivation_index) WHERE pooled = 1;
