-- The replicas that share this database, and the approvals they hold.
CREATE TABLE replicas (
    id          text PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    -- Written every second by a running replica; a replica silent for longer than the
    -- abandon interval has died, and the approvals it held are abandoned.
    seen_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE approvals (
    id          text PRIMARY KEY,
    -- The replica holding the agent's request (it alone can answer the agent).
    replica     text NOT NULL,
    -- pending, approved, denied, timed_out, abandoned
    status      text NOT NULL DEFAULT 'pending',
    -- What GET /approvals shows (JSON: id, prompt, approvers, facet, agent, endpoint, …).
    pending     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    decided_by  text,
    reason      text,
    decided_at  timestamptz
);
CREATE INDEX approvals_pending ON approvals (created_at, id) WHERE status = 'pending';
