-- The settler goes live (issue 7): what each outgoing transaction needs beyond the initial tables.

-- The asset it moves (symbol), the merchant it is for, and the transaction that must be confirmed
-- before it may be signed (a token sweep waits for its gas top-up).
ALTER TABLE chain_transactions ADD COLUMN asset TEXT NOT NULL DEFAULT '';
ALTER TABLE chain_transactions ADD COLUMN merchant_id TEXT;
ALTER TABLE chain_transactions ADD COLUMN depends_on TEXT REFERENCES chain_transactions(id);
-- The most gas (in the native coin's base units) this transaction may ever cost: fee bumps stop
-- there, and it is what the signer's balance must cover before it is signed.
ALTER TABLE chain_transactions ADD COLUMN max_gas_cost_base_units TEXT NOT NULL DEFAULT '0';
-- What the chain said: the attempt that was mined, where, and what its gas cost.
ALTER TABLE chain_transactions ADD COLUMN mined_tx_hash TEXT;
ALTER TABLE chain_transactions ADD COLUMN mined_block BIGINT;
ALTER TABLE chain_transactions ADD COLUMN gas_cost_base_units TEXT;
ALTER TABLE chain_transactions ADD COLUMN failure_reason TEXT;
CREATE INDEX chain_transactions_open ON chain_transactions (chain_id, state, created_at);
CREATE INDEX chain_transactions_signer ON chain_transactions (chain_id, signer_address);
CREATE INDEX chain_transactions_payout ON chain_transactions (payout_id);
CREATE INDEX chain_transaction_attempts_tx ON chain_transaction_attempts (transaction_id);

-- The network fee a payout was charged (native payouts; the rest of its reserve is released).
ALTER TABLE payouts ADD COLUMN network_fee_base_units TEXT;
CREATE INDEX payouts_merchant ON payouts (merchant_id, id);
CREATE INDEX payouts_invoice ON payouts (invoice_id);

-- Recent EIP-1559 fees per chain, written by the settler, read by the API to reserve a payout's
-- network fee without an RPC call of its own.
CREATE TABLE chain_fee_estimates (
    chain_id                    BIGINT PRIMARY KEY,
    base_fee_per_gas            TEXT NOT NULL,
    max_priority_fee_per_gas    TEXT NOT NULL,
    updated_at                  BIGINT NOT NULL
);

-- The block height at which an attempt was broadcast: a fee bump is due after a configured number
-- of blocks without it being mined.
ALTER TABLE chain_transaction_attempts ADD COLUMN broadcast_block BIGINT;
-- A signer whose nonce the chain shows used by a transaction depositd did not send is paused
-- (nothing more is signed with it) until an operator has looked: never papered over.
ALTER TABLE signer_nonces ADD COLUMN paused_reason TEXT;
