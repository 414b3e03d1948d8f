-- Every replica's audit records, each replica its own hash chain (seq from 1).
CREATE TABLE audit (
    replica  text NOT NULL,
    seq      bigint NOT NULL,
    -- The record exactly as written to the replica's file (one JSON line).
    line     text NOT NULL,
    PRIMARY KEY (replica, seq)
);
