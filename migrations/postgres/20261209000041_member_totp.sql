-- Issue 20: a dashboard member's optional TOTP second factor, and the sign-in step that asks for
-- its code. Times are epoch milliseconds.

-- The member's TOTP secret, sealed (XChaCha20-Poly1305, the key derived from the mnemonic like
-- webhook secrets'); set at enrolment, in force once `totp_enabled_at` is set (a confirmed
-- enrolment). `totp_last_step` is the 30-second step of the last code accepted: a code is
-- accepted once.
ALTER TABLE merchant_users ADD COLUMN totp_secret_ciphertext TEXT;
ALTER TABLE merchant_users ADD COLUMN totp_enabled_at BIGINT;
ALTER TABLE merchant_users ADD COLUMN totp_last_step BIGINT;

-- A sign-in whose password was right and whose TOTP code is awaited. The browser holds the
-- token in a cookie; this is its SHA-256. Short-lived, used once.
CREATE TABLE merchant_sign_in_challenges (
    id_hash         TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES merchant_users(id),
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX merchant_sign_in_challenges_user ON merchant_sign_in_challenges (user_id);
