-- Leases (issue 9): one holder at a time for work that must not run twice at once, such as each
-- chain's watcher and settler when several daemons share a PostgreSQL database. A holder renews
-- its lease well before `expires_at`; when it dies, another process takes over after expiry.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
