//! The audit log (`[audit] path`): one JSON line per request, each carrying the SHA-256 of
//! the line before it (`prev`), from a genesis line with a random nonce. Editing, removing
//! or reordering a line breaks the chain, and `sigward audit verify` names where.
//!
//! Requests never wait on the disk: records go through a bounded queue to a writer
//! thread. When the queue is full or a write failed, [`AuditLog::check`] says so and the
//! pipeline refuses new requests (fail closed), unless `on_failure = "allow"`. A failed
//! write is undone (the file cut back to its last whole line) and retried every half
//! second; once it succeeds, requests are served again — no restart. A line left torn by
//! a crash is sealed at the next start: cut off, and a `seal` record chained after the
//! last whole line says what was found (`audit verify` lists seals).
//!
//! Every record lists the policies evaluated with their digests and settings; the engine
//! keeps each module it loads in the module store ([`crate::modules`]), so `sigward audit
//! replay` can evaluate every recorded facet again and compare.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ring::rand::{SecureRandom as _, SystemRandom};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::agents::timestamp;
use crate::facet::Facet;
use crate::policy::evaluate::Limits;
use crate::policy::module::ModuleRef;

pub mod mirror;
use crate::policy::set::{Entry, evaluate_one};
use crate::policy::{Engine, Verdict};

/// How many records may wait for the writer before requests are refused.
pub const QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("audit log {}: {message}", path.display())]
    Damaged { path: PathBuf, message: String },
}

/// The running audit log.
pub struct AuditLog {
    path: PathBuf,
    queue: SyncSender<Map<String, Value>>,
    queued: Arc<AtomicUsize>,
    failure: Arc<Mutex<Option<String>>>,
    broken: Arc<AtomicBool>,
    pub fail_open: bool,
    /// With `[cluster]`: the records written to the file but not yet to the database.
    mirror: Option<Arc<mirror::Backlog>>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What the end of an existing log holds.
struct Tail {
    /// The last complete line and how many complete lines there are.
    last: Option<(String, u64)>,
    /// Where the complete lines end, and the bytes of an incomplete line after them.
    intact_len: u64,
    torn: Vec<u8>,
}

/// Read an existing log's end.
fn tail(file: &mut File, path: &Path) -> Result<Tail, AuditError> {
    let io = |error| AuditError::Io {
        path: path.to_path_buf(),
        error,
    };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut last = None;
    let mut count = 0u64;
    let mut intact_len = 0u64;
    let mut reader = BufReader::new(&mut *file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(io)?;
        if read == 0 {
            break;
        }
        if !line.ends_with(b"\n") {
            return Ok(Tail {
                last: last.map(|l| (l, count)),
                intact_len,
                torn: line,
            });
        }
        count += 1;
        intact_len += read as u64;
        last = Some(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
    }
    Ok(Tail {
        last: last.map(|l| (l, count)),
        intact_len,
        torn: Vec::new(),
    })
}

impl AuditLog {
    /// Open (or create, with a genesis line) the log at `path` and start its writer.
    pub fn open(path: &Path, fail_open: bool) -> Result<Arc<Self>, AuditError> {
        Self::open_with(path, fail_open, None)
    }

    /// [`AuditLog::open`], and with `database` every record (each carrying this replica's
    /// name) is appended there too, after the file ([`mirror`]).
    pub fn open_with(
        path: &Path,
        fail_open: bool,
        database: Option<Arc<crate::state::Database>>,
    ) -> Result<Arc<Self>, AuditError> {
        let replica = database.as_ref().map(|d| d.replica.clone());
        let io = |error| AuditError::Io {
            path: path.to_path_buf(),
            error,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let tail = tail(&mut file, path)?;
        let mut seal = None;
        if !tail.torn.is_empty() {
            if tail.last.is_none() {
                return Err(AuditError::Damaged {
                    path: path.to_path_buf(),
                    message: "the log holds no whole line (not even its genesis line): move it aside to start a new log".into(),
                });
            }
            // A line torn by a crash or a full disk: cut it off, and say so in the chain.
            file.set_len(tail.intact_len).map_err(io)?;
            let count = tail.last.as_ref().map_or(0, |(_, n)| *n);
            tracing::warn!(
                target: "sigward::audit",
                path = %path.display(),
                bytes = tail.torn.len(),
                "the audit log ended in an incomplete line; it is sealed and the log continues"
            );
            seal = Some(serde_json::json!({
                "found": format!(
                    "an incomplete line of {} bytes after line {count}, cut off at the next start",
                    tail.torn.len()
                ),
                "bytes": tail.torn.len(),
                "sha256": sha256_hex(&tail.torn),
                "start": String::from_utf8_lossy(&tail.torn[..tail.torn.len().min(256)]),
            }));
        }
        let (mut prev, mut seq) = match tail.last {
            Some((last, _)) => {
                let record: Value =
                    serde_json::from_str(&last).map_err(|e| AuditError::Damaged {
                        path: path.to_path_buf(),
                        message: format!("the last line is not JSON: {e}"),
                    })?;
                let seq = record["seq"].as_u64().ok_or_else(|| AuditError::Damaged {
                    path: path.to_path_buf(),
                    message: "the last line has no seq".into(),
                })?;
                (sha256_hex(last.as_bytes()), seq + 1)
            }
            None => {
                let mut nonce = [0u8; 16];
                SystemRandom::new()
                    .fill(&mut nonce)
                    .map_err(|_| AuditError::Damaged {
                        path: path.to_path_buf(),
                        message: "no random bytes for the genesis line".into(),
                    })?;
                let mut genesis = serde_json::json!({
                    "seq": 0,
                    "genesis": hex::encode(nonce),
                    "time": timestamp(SystemTime::now()),
                    "sigward": env!("CARGO_PKG_VERSION"),
                });
                if let Some(replica) = &replica {
                    genesis["replica"] = replica.clone().into();
                }
                let genesis = genesis.to_string();
                file.write_all(format!("{genesis}\n").as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                (sha256_hex(genesis.as_bytes()), 1)
            }
        };

        if let Some(seal) = seal {
            let mut line = serde_json::json!({
                "seq": seq,
                "time": timestamp(SystemTime::now()),
                "seal": seal,
            });
            if let Some(replica) = &replica {
                line["replica"] = replica.clone().into();
            }
            line["prev"] = prev.clone().into();
            let line = line.to_string();
            file.write_all(format!("{line}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            prev = sha256_hex(line.as_bytes());
            seq += 1;
        }
        let length = file.metadata().map_err(io)?.len();
        let mirror = database.map(|database| mirror::start(database, path.to_path_buf()));
        Self::start(path, file, prev, seq, length, fail_open, mirror)
    }

    /// Start the writer on an open log whose newest line hashes to `prev`.
    fn start(
        path: &Path,
        file: File,
        prev: String,
        seq: u64,
        length: u64,
        fail_open: bool,
        mirror: Option<(Arc<mirror::Backlog>, mirror::Sender)>,
    ) -> Result<Arc<Self>, AuditError> {
        let io = |error| AuditError::Io {
            path: path.to_path_buf(),
            error,
        };
        let (queue, records) = sync_channel(QUEUE);
        let log = Arc::new(AuditLog {
            path: path.to_path_buf(),
            queue,
            queued: Arc::new(AtomicUsize::new(0)),
            failure: Arc::new(Mutex::new(None)),
            broken: Arc::new(AtomicBool::new(false)),
            fail_open,
            mirror: mirror.as_ref().map(|(backlog, _)| Arc::clone(backlog)),
        });
        let writer = Writer {
            replica: mirror.as_ref().map(|(backlog, _)| backlog.replica.clone()),
            mirror: mirror.map(|(_, sender)| sender),
            file,
            length,
            path: path.to_path_buf(),
            prev,
            seq,
            queued: Arc::clone(&log.queued),
            failure: Arc::clone(&log.failure),
            broken: Arc::clone(&log.broken),
        };
        std::thread::Builder::new()
            .name("sigward-audit".into())
            .spawn(move || writer.run(records))
            .map_err(io)?;
        Ok(log)
    }

    /// Why the log cannot take more records right now, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.broken.load(Ordering::Acquire) {
            let failure = self
                .failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
                .unwrap_or_default();
            return Err(format!(
                "the audit log {} cannot be written: {failure}",
                self.path.display()
            ));
        }
        if self.queued.load(Ordering::Acquire) >= QUEUE {
            return Err(format!(
                "the audit log {} is {QUEUE} records behind (a slow disk?)",
                self.path.display()
            ));
        }
        if let Some(mirror) = &self.mirror {
            mirror.check()?;
        }
        Ok(())
    }

    /// Queue one record (the writer adds `seq` and `prev`). Never blocks.
    /// Wait (at most `within`) until every record appended so far is written; `false` if
    /// some are not.
    pub fn wait_written(&self, within: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while self.queued.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= deadline || self.broken.load(Ordering::Acquire) {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        true
    }

    pub fn append(&self, record: Map<String, Value>) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(error) = self.queue.try_send(record) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let why = match error {
                TrySendError::Full(_) => "the queue is full",
                TrySendError::Disconnected(_) => "the writer stopped",
            };
            tracing::error!(target: "sigward::audit", path = %self.path.display(), "a record was lost: {why}");
        }
    }
}

struct Writer {
    /// With `[cluster]`: this replica's name, in every record, and where the written
    /// lines go next.
    replica: Option<String>,
    mirror: Option<mirror::Sender>,
    file: File,
    /// The length of the file's whole lines: a failed write is cut back to it.
    length: u64,
    path: PathBuf,
    prev: String,
    seq: u64,
    queued: Arc<AtomicUsize>,
    failure: Arc<Mutex<Option<String>>>,
    broken: Arc<AtomicBool>,
}

/// How long the writer waits before trying a failed write again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(500);

impl Writer {
    fn run(mut self, records: Receiver<Map<String, Value>>) {
        let mut pending: Vec<Map<String, Value>> = Vec::new();
        loop {
            if pending.is_empty() {
                match records.recv() {
                    Ok(first) => pending.push(first),
                    Err(_) => return,
                }
            }
            // While broken, the batch waiting to be written stays as it is: what queues
            // behind it waits in the (bounded) queue.
            if !self.broken.load(Ordering::Acquire) {
                pending.extend(records.try_iter());
            }
            match self.write(&pending) {
                Ok(()) => {
                    self.queued.fetch_sub(pending.len(), Ordering::AcqRel);
                    pending.clear();
                    if self.broken.swap(false, Ordering::AcqRel) {
                        *self
                            .failure
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                        tracing::info!(target: "sigward::audit", path = %self.path.display(), "the audit log can be written again; serving");
                    }
                }
                Err(error) => {
                    if !self.broken.swap(true, Ordering::AcqRel) {
                        tracing::error!(target: "sigward::audit", %error, path = %self.path.display(), "audit log write failed; requests are refused until it can be written (retrying)");
                    }
                    *self
                        .failure
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(error.to_string());
                    std::thread::sleep(RETRY);
                }
            }
        }
    }

    /// Append `batch` as whole lines, or nothing: a failed write is cut back to the last
    /// whole line, so the chain never continues past half a line.
    fn write(&mut self, batch: &[Map<String, Value>]) -> std::io::Result<()> {
        let mut text = String::new();
        let mut lines = Vec::new();
        let (mut prev, mut seq) = (self.prev.clone(), self.seq);
        for record in batch {
            let mut line = Map::with_capacity(record.len() + 3);
            line.insert("seq".into(), seq.into());
            if let Some(replica) = &self.replica {
                line.insert("replica".into(), replica.clone().into());
            }
            line.extend(record.clone());
            line.insert("prev".into(), Value::String(prev));
            let json = Value::Object(line).to_string();
            prev = sha256_hex(json.as_bytes());
            text.push_str(&json);
            text.push('\n');
            if self.mirror.is_some() {
                lines.push((seq, json));
            }
            seq += 1;
        }
        if let Err(error) = self
            .file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
        {
            // Undo what part of the batch reached the file (a full disk writes some).
            let _ = self.file.set_len(self.length);
            return Err(error);
        }
        self.length += text.len() as u64;
        self.prev = prev;
        self.seq = seq;
        if let Some(mirror) = &self.mirror {
            mirror.send(lines);
        }
        Ok(())
    }
}

/// What `audit verify` found in an intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    pub lines: u64,
    /// Seals: where sigward found a torn line at a start and cut it off (line, what).
    pub seals: Vec<(u64, String)>,
    /// The hash of the newest line: keep it elsewhere to detect a rewritten tail later.
    pub head: String,
}

/// Check the chain of the log at `path`; the error names the first bad line (1-based).
pub fn verify(path: &Path) -> Result<Intact, AuditError> {
    verify_text(path, &read_log(path)?)
}

fn read_log(path: &Path) -> Result<String, AuditError> {
    let mut text = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|error| AuditError::Io {
            path: path.to_path_buf(),
            error,
        })?;
    Ok(text)
}

/// Check the chain of a log's `text` (named `path` in messages): a file's, or one
/// replica's records from the shared database.
pub fn verify_text(path: &Path, text: &str) -> Result<Intact, AuditError> {
    let damaged = |message: String| AuditError::Damaged {
        path: path.to_path_buf(),
        message,
    };
    let mut prev_hash: Option<String> = None;
    let mut prev_seq = 0u64;
    let mut lines = 0u64;
    let mut seals = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let number = index as u64 + 1;
        let Some(line) = line.strip_suffix('\n') else {
            return Err(damaged(format!("line {number} is incomplete")));
        };
        let record: Value = serde_json::from_str(line)
            .map_err(|e| damaged(format!("line {number} is not JSON ({e}): it was altered")))?;
        let seq = record["seq"]
            .as_u64()
            .ok_or_else(|| damaged(format!("line {number} has no seq: it was altered")))?;
        match &prev_hash {
            None => {
                if seq != 0 || record.get("genesis").is_none() {
                    return Err(damaged(
                        "line 1 is not the genesis line (seq 0): the log's start was removed or altered"
                            .into(),
                    ));
                }
            }
            Some(expected) => {
                if seq != prev_seq + 1 {
                    return Err(damaged(if seq > prev_seq + 1 {
                        format!(
                            "line {number} has seq {seq} after seq {prev_seq}: {} line(s) before it were removed or moved",
                            seq - prev_seq - 1
                        )
                    } else {
                        format!(
                            "line {number} has seq {seq} after seq {prev_seq}: lines were reordered or repeated"
                        )
                    }));
                }
                if record["prev"].as_str() != Some(expected.as_str()) {
                    return Err(damaged(format!(
                        "line {} was altered: line {number}'s prev is not its hash",
                        number - 1
                    )));
                }
            }
        }
        if let Some(found) = record["seal"]["found"].as_str() {
            seals.push((number, found.to_string()));
        }
        prev_hash = Some(sha256_hex(line.as_bytes()));
        prev_seq = seq;
        lines = number;
    }
    let head = prev_hash.ok_or_else(|| damaged("the log is empty (no genesis line)".into()))?;
    Ok(Intact { lines, seals, head })
}

/// A recorded verdict that replay did not reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub line: u64,
    pub policy: String,
    pub recorded: String,
    pub replayed: String,
}

/// What replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    pub records: u64,
    pub evaluations: u64,
    pub differences: Vec<Difference>,
}

/// Evaluate every recorded facet again with the recorded modules (from `store`, by
/// digest), settings and limits, and compare each policy's verdict.
pub fn replay(path: &Path, engine: &Engine, store: &Path) -> Result<Replayed, AuditError> {
    replay_text(path, &read_log(path)?, engine, store)
}

/// [`replay`] of a log's `text` (named `path` in messages).
pub fn replay_text(
    path: &Path,
    text: &str,
    engine: &Engine,
    store: &Path,
) -> Result<Replayed, AuditError> {
    let damaged = |message: String| AuditError::Damaged {
        path: path.to_path_buf(),
        message,
    };
    let mut loaded = HashMap::new();
    let mut result = Replayed::default();
    for (index, line) in text.lines().enumerate() {
        let number = index as u64 + 1;
        let record: Value = serde_json::from_str(line)
            .map_err(|e| damaged(format!("line {number} is not JSON: {e}")))?;
        let (Some(facet), Some(evaluations)) = (
            record.get("facet").filter(|f| !f.is_null()),
            record["evaluations"].as_array(),
        ) else {
            continue;
        };
        let facet: Facet = serde_json::from_value(facet.clone())
            .map_err(|e| damaged(format!("line {number}: facet: {e}")))?;
        let limits: Limits = serde_json::from_value(record["limits"].clone())
            .map_err(|e| damaged(format!("line {number}: limits: {e}")))?;
        result.records += 1;
        for evaluation in evaluations {
            let policy = evaluation["policy"].as_str().unwrap_or("?").to_string();
            let digest = evaluation["digest"].as_str().unwrap_or_default();
            let settings: Arc<str> = evaluation["settings"].as_str().unwrap_or("{}").into();
            // The verdict's own fields, without the evaluation's (policy, digest, …).
            let verdict_fields: Map<String, Value> = ["verdict", "reason", "approvers", "prompt"]
                .into_iter()
                .filter_map(|k| Some((k.to_string(), evaluation.get(k)?.clone())))
                .collect();
            let recorded: Verdict = serde_json::from_value(Value::Object(verdict_fields))
                .map_err(|e| damaged(format!("line {number}: {policy}'s verdict: {e}")))?;
            let module = match loaded.get(digest) {
                Some(module) => Arc::clone(module),
                None => {
                    let (file, bytes) = crate::modules::read(store, digest);
                    let bytes = bytes.map_err(|e| {
                        damaged(format!(
                            "line {number}: {policy} ({digest}) is not in the module store: {}: {e}",
                            file.display()
                        ))
                    })?;
                    // Named as recorded, so that failure reasons read the same.
                    let source = ModuleRef::File(PathBuf::from(format!("{policy}.wasm")));
                    let module = engine
                        .load_bytes(source, &bytes)
                        .map_err(|e| damaged(format!("line {number}: {policy} ({digest}): {e}")))?;
                    if module.digest.to_string() != digest {
                        return Err(damaged(format!(
                            "{}: its digest is {}, not {digest}",
                            file.display(),
                            module.digest
                        )));
                    }
                    loaded.insert(digest.to_string(), Arc::clone(&module));
                    module
                }
            };
            let entry = Entry {
                policy: module,
                settings,
            };
            let replayed = evaluate_one(&entry, &facet, &limits).verdict;
            result.evaluations += 1;
            if replayed != recorded {
                result.differences.push(Difference {
                    line: number,
                    policy,
                    recorded: serde_json::to_string(&recorded).unwrap_or_default(),
                    replayed: serde_json::to_string(&replayed).unwrap_or_default(),
                });
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("n".into(), n.into());
        map
    }

    #[test]
    fn a_log_that_cannot_be_written_says_so() {
        // A real device that is always full: every write fails with ENOSPC.
        let full = OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .expect("/dev/full");
        let log = AuditLog::start(
            Path::new("/dev/full"),
            full,
            "0".repeat(64),
            1,
            0,
            false,
            None,
        )
        .expect("start");
        assert_eq!(log.check(), Ok(()));
        log.append(record(1));
        let failed = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            log.check().is_err()
        });
        assert!(failed, "the failure was not noticed");
        let why = log.check().expect_err("broken");
        assert!(
            why.contains("cannot be written") && why.contains("No space left"),
            "{why}"
        );
    }

    #[test]
    fn a_log_continues_its_chain_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        for n in 0..2 {
            let log = AuditLog::open(&path, false).expect("open");
            log.append(record(n));
            log.append(record(n + 10));
            while log.queued.load(Ordering::Acquire) > 0 {
                std::thread::yield_now();
            }
        }
        let intact = verify(&path).expect("intact");
        assert_eq!(intact.lines, 5, "genesis and four records");
        // A partial last line (a crash mid-write) is sealed: cut off, a seal record chained
        // after the last whole line, and the log goes on.
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(b"{\"seq\":5,\"torn").expect("write");
        let log = AuditLog::open(&path, false).expect("a torn line does not stop a start");
        log.append(record(99));
        assert!(log.wait_written(std::time::Duration::from_secs(5)));
        let intact = verify(&path).expect("intact");
        assert_eq!(intact.lines, 7, "genesis, four records, the seal, one more");
        assert_eq!(intact.seals.len(), 1);
        assert_eq!(intact.seals[0].0, 6);
        assert!(
            intact.seals[0]
                .1
                .contains("an incomplete line of 14 bytes after line 5"),
            "{:?}",
            intact.seals
        );
        // A file with no whole line at all is not guessed at.
        let other = dir.path().join("torn-only.jsonl");
        std::fs::write(&other, b"{\"seq\":0").expect("write");
        assert!(matches!(
            AuditLog::open(&other, false).err(),
            Some(AuditError::Damaged { .. })
        ));
    }
}
