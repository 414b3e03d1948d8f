-- With [cluster] secrets_key_file: the files every replica must hold alike (ca.pem,
-- ca.key, agents.key), sealed with AES-256-GCM under that key (nonce || ciphertext, the
-- file's name as associated data). The database never sees them in the clear.
CREATE TABLE secrets (
    name    text PRIMARY KEY,
    sealed  bytea NOT NULL
);
