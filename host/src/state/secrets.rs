//! The files every replica must hold alike — the CA (`ca.pem`, `ca.key`) and the keyring
//! issued keys derive from (`agents.key`) — kept in the shared database sealed with a key
//! from a file (`[cluster] secrets_key_file`), so that an operator hands each replica one
//! key file instead of copying three secrets around.
//!
//! At start, under an advisory lock: a file the database holds is unsealed into the state
//! directory (a different file already there is refused: two CAs cannot both be the
//! cluster's); a file it does not hold yet is created if missing and sealed into it. A key
//! that opens nothing is refused at start, naming the file.

use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

use super::Database;

/// What is shared, and whether it is secret (written 0600).
const FILES: [(&str, bool); 3] = [("ca.pem", false), ("ca.key", true), ("agents.key", true)];

/// The sealing key: 32 bytes, written as 64 hex digits in the file.
pub struct SealingKey(LessSafeKey);

impl SealingKey {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cluster.secrets_key_file {}: {e}", path.display()))?;
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                format!(
                    "cluster.secrets_key_file {}: not 64 hex digits (make one with `openssl rand -hex 32`)",
                    path.display()
                )
            })?;
        let key =
            UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "AES-256-GCM key".to_string())?;
        Ok(Self(LessSafeKey::new(key)))
    }

    fn seal(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no random bytes for a nonce".to_string())?;
        let mut sealed = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| format!("sealing {name}"))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn open(&self, name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buffer)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// Make `dir` hold the cluster's CA and keyring (see the module's notes). `create` makes
/// whatever is missing locally before it is shared (the CA and the keyring).
pub async fn share(
    database: &Database,
    key: &SealingKey,
    key_path: &Path,
    dir: &Path,
    create: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let client = database.client().await.map_err(|e| e.to_string())?;
    let lock = tokio::time::timeout(
        super::database::QUERY_TIMEOUT * 6,
        client.execute("SELECT pg_advisory_lock(7365776173)", &[]),
    )
    .await;
    if !matches!(lock, Ok(Ok(_))) {
        return Err(format!(
            "the database {}: could not take the secrets lock",
            database.url
        ));
    }
    let result = share_locked(&client, key, key_path, dir, create).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock(7365776173)", &[])
        .await;
    result
}

async fn share_locked(
    client: &deadpool_postgres::Client,
    key: &SealingKey,
    key_path: &Path,
    dir: &Path,
    create: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let db = |e: tokio_postgres::Error| format!("sharing the CA and keyring: {e}");
    let rows = client
        .query("SELECT name, sealed FROM secrets", &[])
        .await
        .map_err(db)?;
    let stored: std::collections::HashMap<String, Vec<u8>> = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(db)?;
    if std::fs::create_dir_all(dir).is_err() {
        return Err(format!("state.dir {}: cannot be created", dir.display()));
    }
    // What the database holds comes first: it is the cluster's.
    for (name, secret) in FILES {
        let Some(sealed) = stored.get(name) else {
            continue;
        };
        let plain = key.open(name, sealed).ok_or_else(|| {
            format!(
                "cluster.secrets_key_file {} does not open the cluster's {name}: it is not the key the other replicas use",
                key_path.display()
            )
        })?;
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(local) if local == plain => {}
            Ok(_) => {
                return Err(format!(
                    "{} is not the cluster's {name}: move it aside, and the cluster's is written there",
                    path.display()
                ));
            }
            Err(_) => write(&path, &plain, secret)?,
        }
    }
    if FILES.iter().all(|(name, _)| stored.contains_key(*name)) {
        return Ok(());
    }
    // The first replica: what is missing locally is made, and all of it is shared, in
    // one statement (never half of it).
    create()?;
    let (mut names, mut sealed) = (Vec::new(), Vec::new());
    for (name, _) in FILES {
        if stored.contains_key(name) {
            continue;
        }
        let path = dir.join(name);
        let plain = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        sealed.push(key.seal(name, &plain)?);
        names.push(name);
    }
    client
        .execute(
            "INSERT INTO secrets (name, sealed) SELECT * FROM UNNEST($1::text[], $2::bytea[])",
            &[&names, &sealed],
        )
        .await
        .map_err(db)?;
    tracing::info!(target: "sigward::cluster", files = %names.join(", "), "shared with the other replicas (sealed)");
    Ok(())
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tracing::info!(target: "sigward::cluster", path = %path.display(), "the cluster's copy written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        std::fs::write(&one, "11".repeat(32)).expect("key");
        std::fs::write(&two, "22".repeat(32)).expect("key");
        let (one, two) = (
            SealingKey::load(&one).expect("one"),
            SealingKey::load(&two).expect("two"),
        );
        let sealed = one.seal("ca.key", b"PRIVATE").expect("seal");
        assert!(!sealed.windows(7).any(|w| w == b"PRIVATE"));
        assert_eq!(
            one.open("ca.key", &sealed).as_deref(),
            Some(&b"PRIVATE"[..])
        );
        assert_eq!(two.open("ca.key", &sealed), None, "another key opened it");
        assert_eq!(
            one.open("agents.key", &sealed),
            None,
            "another name opened it"
        );
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").expect("key");
        assert!(SealingKey::load(&short).is_err_and(|e| e.contains("64 hex digits")));
    }
}
