//! The audit log's copy in the shared database (`[cluster]`): every line the writer puts
//! in this replica's file is appended to the `audit` table as (replica, seq, line), in
//! order. The file stays the record of truth; the table lets `sigward audit verify
//! --database` check every replica's chain in one place.
//!
//! At start, whatever the file holds beyond the table's newest line for this replica is
//! sent first (a replica that ran while the database was away catches up). A batch the
//! database does not take is retried every half second; while more than [`QUEUE`]
//! records wait, [`Backlog::check`] fails and requests are refused unless the log's
//! `on_failure` is `"allow"` — memory stays bounded and nothing is skipped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::QUEUE;
use crate::state::Database;

const RETRY: Duration = Duration::from_millis(500);
/// Lines per INSERT.
const BATCH: usize = 500;
/// How long `audit verify --database` may take to read every record.
const READ_ALL_TIMEOUT: Duration = Duration::from_secs(600);

/// What the writer thread hands the mirror: whole lines, with their seq.
pub struct Sender {
    lines: mpsc::UnboundedSender<Vec<(u64, String)>>,
    backlog: Arc<Backlog>,
}

impl Sender {
    pub fn send(&self, lines: Vec<(u64, String)>) {
        self.backlog
            .waiting
            .fetch_add(lines.len(), Ordering::AcqRel);
        let _ = self.lines.send(lines);
    }
}

/// How far the database is behind the file.
pub struct Backlog {
    pub replica: String,
    waiting: AtomicUsize,
    failure: Mutex<Option<String>>,
}

impl Backlog {
    /// Refuse when too much waits (see the module's notes).
    pub fn check(&self) -> Result<(), String> {
        let waiting = self.waiting.load(Ordering::Acquire);
        if waiting < QUEUE {
            return Ok(());
        }
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        Err(format!(
            "the audit database is {waiting} records behind this replica's log: {failure}"
        ))
    }

    /// How many records wait for the database.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    fn set_failure(&self, failure: Option<String>) {
        *self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = failure;
    }
}

/// Start mirroring the log at `path` (a file this replica writes) into `database`.
pub fn start(database: Arc<Database>, path: PathBuf) -> (Arc<Backlog>, Sender) {
    let backlog = Arc::new(Backlog {
        replica: database.replica.clone(),
        waiting: AtomicUsize::new(0),
        failure: Mutex::new(None),
    });
    let (lines, received) = mpsc::unbounded_channel();
    tokio::spawn(run(database, path, Arc::clone(&backlog), received));
    (
        Arc::clone(&backlog),
        Sender {
            lines,
            backlog: Arc::clone(&backlog),
        },
    )
}

async fn run(
    database: Arc<Database>,
    path: PathBuf,
    backlog: Arc<Backlog>,
    mut received: mpsc::UnboundedReceiver<Vec<(u64, String)>>,
) {
    // Catch up from the file: what it holds past the table's newest line.
    let newest = loop {
        match newest_seq(&database).await {
            Ok(newest) => break newest,
            Err(error) => {
                backlog.set_failure(Some(error));
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    // The file is read as a stream, a batch at a time: a log of any size catches up in
    // bounded memory, and the reading does not hold up the runtime.
    let mut sent = newest;
    let (chunks_tx, mut chunks) = mpsc::channel::<Vec<(u64, String)>>(2);
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        let Ok(file) = std::fs::File::open(&path) else {
            return;
        };
        let mut chunk = Vec::new();
        for line in std::io::BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            let seq = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|record| record["seq"].as_u64());
            let Some(seq) = seq.filter(|seq| newest.is_none_or(|n| *seq > n)) else {
                continue;
            };
            chunk.push((seq, line));
            if chunk.len() == BATCH && chunks_tx.blocking_send(std::mem::take(&mut chunk)).is_err()
            {
                return;
            }
        }
        if !chunk.is_empty() {
            let _ = chunks_tx.blocking_send(chunk);
        }
    });
    let mut caught_up = 0;
    while let Some(chunk) = chunks.recv().await {
        insert_until_taken(&database, &backlog, &chunk, false).await;
        caught_up += chunk.len();
        sent = chunk.last().map(|(seq, _)| *seq);
    }
    let _ = reader.await;
    if caught_up > 0 {
        tracing::info!(target: "sigward::audit", records = caught_up, "sent the database what this replica's log held beyond it");
    }
    while let Some(first) = received.recv().await {
        // What queued during the last round trip goes in one statement.
        let mut batch = first;
        while batch.len() < BATCH {
            match received.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let count = batch.len();
        // Lines the catch-up already sent (written between the start and the read).
        batch.retain(|(seq, _)| sent.is_none_or(|s| *seq > s));
        let skipped = count - batch.len();
        backlog.waiting.fetch_sub(skipped, Ordering::AcqRel);
        if batch.is_empty() {
            continue;
        }
        insert_until_taken(&database, &backlog, &batch, true).await;
        sent = batch.last().map(|(seq, _)| *seq);
    }
}

async fn newest_seq(database: &Database) -> Result<Option<u64>, String> {
    let replica = database.replica.clone();
    database
        .run(async move |client| {
            let row = client
                .query_one("SELECT MAX(seq) FROM audit WHERE replica = $1", &[&replica])
                .await?;
            Ok(row.try_get::<_, Option<i64>>(0)?.map(|s| s.max(0) as u64))
        })
        .await
        .map_err(|e| e.to_string())
}

/// Insert `lines`, retrying until the database takes them; `counted` lines were counted
/// in the backlog when the writer sent them.
async fn insert_until_taken(
    database: &Database,
    backlog: &Backlog,
    lines: &[(u64, String)],
    counted: bool,
) {
    let seqs: Vec<i64> = lines.iter().map(|(seq, _)| *seq as i64).collect();
    let texts: Vec<&str> = lines.iter().map(|(_, line)| line.as_str()).collect();
    let (replica, seqs, texts) = (&database.replica, &seqs, &texts);
    let mut failing = false;
    loop {
        let result = database
            .run(async move |client| {
                // Prepared once per pooled connection, not per batch.
                let insert = client
                    .prepare_cached(
                        "INSERT INTO audit (replica, seq, line) \
                         SELECT $1, s, l FROM UNNEST($2::bigint[], $3::text[]) AS t(s, l) \
                         ON CONFLICT (replica, seq) DO NOTHING",
                    )
                    .await?;
                client.execute(&insert, &[replica, seqs, texts]).await
            })
            .await;
        match result {
            Ok(_) => {
                if counted {
                    backlog.waiting.fetch_sub(lines.len(), Ordering::AcqRel);
                }
                if failing {
                    tracing::info!(target: "sigward::audit", "the audit database takes records again");
                }
                backlog.set_failure(None);
                return;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(target: "sigward::audit", %error, "the audit database did not take records; retrying");
                    failing = true;
                }
                backlog.set_failure(Some(error.to_string()));
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Every replica's records in the database, each replica's in order: (replica, text of
/// its log).
pub async fn read_all(database: &Database) -> Result<Vec<(String, String)>, String> {
    // Not the usual 5 s bound: a long trail takes longer to read than one statement.
    let client = database.client().await.map_err(|e| e.to_string())?;
    let query = client.query("SELECT replica, line FROM audit ORDER BY replica, seq", &[]);
    let rows = tokio::time::timeout(READ_ALL_TIMEOUT, query)
        .await
        .map_err(|_| {
            format!(
                "reading the audit records took longer than {} s",
                READ_ALL_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| crate::upstream::error_chain(&e))?;
    let mut logs: Vec<(String, String)> = Vec::new();
    for row in rows {
        let (replica, line): (String, String) = (
            row.try_get(0).map_err(|e| e.to_string())?,
            row.try_get(1).map_err(|e| e.to_string())?,
        );
        match logs.last_mut() {
            Some((name, text)) if *name == replica => {
                text.push_str(&line);
                text.push('\n');
            }
            _ => logs.push((replica, format!("{line}\n"))),
        }
    }
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records waiting for the database refuse requests only past the queue's bound, and
    /// the refusal says why the database is behind.
    #[test]
    fn a_backlog_refuses_only_past_the_bound() {
        let backlog = Backlog {
            replica: "a".into(),
            waiting: AtomicUsize::new(QUEUE - 1),
            failure: Mutex::new(None),
        };
        assert_eq!(backlog.check(), Ok(()));
        backlog.set_failure(Some("connection refused".into()));
        backlog.waiting.fetch_add(1, Ordering::AcqRel);
        let refused = backlog.check().expect_err("past the bound");
        assert!(
            refused.contains(&format!("{QUEUE} records behind"))
                && refused.contains("connection refused"),
            "{refused}"
        );
        assert_eq!(backlog.waiting(), QUEUE);
    }
}
