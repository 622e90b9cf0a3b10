-- The deployment's wallet (issue 21: keys off the web tier). A process without the mnemonic
-- derives deposit addresses from an xpub; the first process to start records the xpub, the
-- treasury's address and a one-way check value of each web key here, and every later one
-- compares its own with them at start-up, so a settler whose mnemonic does not own the addresses
-- handed out (or an API with another xpub) refuses to start. One row: id is always 1.
CREATE TABLE wallet_identity (
    id                 BIGINT PRIMARY KEY CHECK (id = 1),
    xpub               TEXT NOT NULL,
    treasury_address   TEXT NOT NULL,
    sealing_key_check  TEXT NOT NULL,
    session_key_check  TEXT NOT NULL,
    recorded_at        BIGINT NOT NULL
);
