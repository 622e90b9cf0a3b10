-- At most one open cold transfer (from its intent to its confirmation or failure) per chain and
-- asset: the settler plans one under the treasury's nonce lock; this makes a second a database
-- error rather than a second send, whatever a future code path does.
CREATE UNIQUE INDEX chain_transactions_one_open_cold_transfer ON chain_transactions (chain_id, asset)
    WHERE purpose = 'cold_transfer' AND state NOT IN ('confirmed', 'failed');
