-- The merchant dashboard's members: people of one merchant who sign in with an email and a
-- password (`core::members` holds the rules). Times are epoch milliseconds.

-- A member: invited first (no password), then active once the invite is accepted.
CREATE TABLE merchant_users (
    id              TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL REFERENCES merchants(id),
    -- Lower-cased; one account per address across all merchants (sign-in is by email alone).
    email           TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('owner', 'developer', 'viewer')),
    -- argon2id, PHC string format; NULL until the invite is accepted.
    password_hash   TEXT,
    created_at      BIGINT NOT NULL,
    -- Who invited them: `cli` or `user:<id>`.
    invited_by      TEXT NOT NULL
);
CREATE INDEX merchant_users_merchant ON merchant_users (merchant_id);

-- One-time links to set a password. The token itself is only in the link; this is its SHA-256.
CREATE TABLE merchant_invites (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES merchant_users(id),
    token_hash      TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);
CREATE INDEX merchant_invites_user ON merchant_invites (user_id);

-- Signed-in browsers. The cookie holds the session token; this is its SHA-256.
CREATE TABLE merchant_sessions (
    id_hash         TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES merchant_users(id),
    -- The session's CSRF token, sent back in every form it posts.
    csrf_token      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    -- Absolute end; the session also ends after a while without use (`core::members`).
    expires_at      BIGINT NOT NULL,
    last_seen_at    BIGINT NOT NULL
);
CREATE INDEX merchant_sessions_user ON merchant_sessions (user_id);

-- Failed sign-ins, for throttling per account and per client address (kept for a day).
CREATE TABLE login_failures (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL,
    client          TEXT NOT NULL,
    at              BIGINT NOT NULL
);
CREATE INDEX login_failures_email ON login_failures (email, at);
CREATE INDEX login_failures_client ON login_failures (client, at);
