-- Agents sigward issues keys to, shared by every replica (`sigward agent add|revoke`).
CREATE TABLE agents (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    -- JSON array of 12-digit account ids.
    accounts     text NOT NULL,
    ttl_seconds  bigint NOT NULL,
    created_at   bigint NOT NULL,
    revoked_at   bigint
);
CREATE UNIQUE INDEX agents_active_name ON agents (name) WHERE revoked_at IS NULL;

-- What every replica must agree on without holding it here: the fingerprint of the
-- keyring issued keys derive from (agents.key), so a replica with another keyring is
-- refused at start rather than refusing every key the others issued.
CREATE TABLE settings (
    name   text PRIMARY KEY,
    value  text NOT NULL
);
