//! Hot reload: build a complete new set of every endpoint's policies off the request
//! path — compile, instantiate, smoke-evaluate, run the module's own cases — and swap it
//! in atomically. Evaluations already running finish on the set they started with; a
//! module that fails any step rejects the whole reload and the current set stays.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Deserialize;

use super::cases::{CaseFile, CasesError};
use super::engine::Engine;
use super::evaluate::{Failure, Limits};
use super::module::{LoadError, ModuleRef};
use super::set::{Entry, PolicySet};
use crate::facet::Facet;

/// One policy of an endpoint as the operator configures it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// `builtin:NAME` or a path to a `.wasm` component.
    pub module: String,
    /// Handed to the policy as JSON text; `{}` when absent.
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
}

/// An endpoint's policies and limits as the operator configures them.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    pub name: String,
    pub policies: Vec<PolicySpec>,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("endpoint {endpoint}: {error}")]
    Load { endpoint: String, error: LoadError },
    #[error("endpoint {endpoint}: policy {policy} failed its smoke evaluation: {failure}")]
    Smoke {
        endpoint: String,
        policy: String,
        failure: Failure,
    },
    #[error("endpoint {endpoint}: policy {policy}: {error}")]
    CasesFile {
        endpoint: String,
        policy: String,
        error: CasesError,
    },
    #[error("endpoint {endpoint}: policy {policy} failed its own cases: {failures}")]
    Cases {
        endpoint: String,
        policy: String,
        failures: String,
    },
    #[error(
        "endpoint {endpoint}: memory limit {limit} bytes is above the engine's maximum of {max} bytes"
    )]
    Limits {
        endpoint: String,
        limit: usize,
        max: usize,
    },
    #[error("could not read the policy configuration: {0}")]
    Source(String),
}

/// Every endpoint's policy set at one moment. Immutable; replaced whole on reload.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Counts successful loads, starting at 1.
    pub generation: u64,
    sets: HashMap<String, Arc<PolicySet>>,
}

impl Snapshot {
    pub fn endpoint(&self, name: &str) -> Option<&Arc<PolicySet>> {
        self.sets.get(name)
    }
}

/// The live policy sets, swapped atomically on reload.
#[derive(Debug)]
pub struct Policies {
    engine: Engine,
    current: ArcSwap<Snapshot>,
    /// Reloads applied and rejected (for metrics).
    applied: std::sync::atomic::AtomicU64,
    rejected: std::sync::atomic::AtomicU64,
}

impl Policies {
    /// Build the initial sets; any failure is an error (there is nothing to fall back to).
    pub fn new(engine: Engine, specs: &[EndpointSpec]) -> Result<Self, ReloadError> {
        let mut snapshot = build(&engine, specs)?;
        snapshot.generation = 1;
        Ok(Self {
            engine,
            current: ArcSwap::from_pointee(snapshot),
            applied: Default::default(),
            rejected: Default::default(),
        })
    }

    /// The current sets. Hold the `Arc` for the whole of a request: a reload meanwhile
    /// does not change what this request sees.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// How many reloads were applied and how many rejected.
    pub fn reload_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.applied.load(Relaxed), self.rejected.load(Relaxed))
    }

    /// Build new sets from `specs` and swap them in, or leave the current ones and say why.
    pub fn reload(&self, specs: &[EndpointSpec]) -> Result<u64, ReloadError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut snapshot = build(&self.engine, specs).inspect_err(|_| {
            self.rejected.fetch_add(1, Relaxed);
        })?;
        self.applied.fetch_add(1, Relaxed);
        // Only the reload thread writes, so reading then storing does not race.
        snapshot.generation = self.current.load().generation + 1;
        let generation = snapshot.generation;
        self.current.store(Arc::new(snapshot));
        Ok(generation)
    }

    /// [`Policies::reload`] that logs its outcome, for watchers and SIGHUP.
    pub fn reload_logged(&self, specs: Result<Vec<EndpointSpec>, String>) {
        let result = specs
            .map_err(|e| {
                self.rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ReloadError::Source(e)
            })
            .and_then(|specs| self.reload(&specs));
        match result {
            Ok(generation) => {
                let current = self.current();
                let digests: Vec<String> = current
                    .sets
                    .values()
                    .flat_map(|set| {
                        set.entries
                            .iter()
                            .map(|e| format!("{}={}", e.policy.name, e.policy.digest))
                    })
                    .collect();
                tracing::info!(generation, policies = ?digests, "policy sets reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "policy reload rejected; the current policy sets stay active");
            }
        }
    }
}

fn build(engine: &Engine, specs: &[EndpointSpec]) -> Result<Snapshot, ReloadError> {
    let mut sets = HashMap::with_capacity(specs.len());
    for spec in specs {
        sets.insert(spec.name.clone(), Arc::new(build_set(engine, spec)?));
    }
    Ok(Snapshot {
        generation: 0,
        sets,
    })
}

/// Load, smoke-test and case-test one endpoint's policies.
pub fn build_set(engine: &Engine, spec: &EndpointSpec) -> Result<PolicySet, ReloadError> {
    let endpoint = &spec.name;
    let max = engine.options().max_memory_bytes;
    if spec.limits.memory_bytes > max {
        return Err(ReloadError::Limits {
            endpoint: endpoint.clone(),
            limit: spec.limits.memory_bytes,
            max,
        });
    }
    let mut entries = Vec::with_capacity(spec.policies.len());
    for policy_spec in &spec.policies {
        let module = ModuleRef::parse(&policy_spec.module);
        let policy = engine.load(&module).map_err(|error| ReloadError::Load {
            endpoint: endpoint.clone(),
            error,
        })?;
        let settings: Arc<str> = policy_spec
            .settings
            .as_ref()
            .map_or_else(|| "{}".into(), |v| v.to_string().into());

        policy
            .evaluate(&settings, &Facet::smoke(), &spec.limits)
            .map_err(|failure| ReloadError::Smoke {
                endpoint: endpoint.clone(),
                policy: policy.label(),
                failure,
            })?;

        if let Some(cases_path) = own_cases_path(&module).filter(|p| p.is_file()) {
            let cases = CaseFile::read(&cases_path).map_err(|error| ReloadError::CasesFile {
                endpoint: endpoint.clone(),
                policy: policy.label(),
                error,
            })?;
            let failures: Vec<String> = cases
                .run(&policy, &spec.limits)
                .into_iter()
                .filter_map(|r| r.outcome.err().map(|e| format!("{}: {e}", r.name)))
                .collect();
            if !failures.is_empty() {
                return Err(ReloadError::Cases {
                    endpoint: endpoint.clone(),
                    policy: policy.label(),
                    failures: failures.join("; "),
                });
            }
        }
        entries.push(Entry { policy, settings });
    }
    Ok(PolicySet::new(
        endpoint.clone(),
        entries,
        spec.limits.clone(),
    ))
}

/// A file module's own test cases: `policy.wasm` → `policy.cases.json`.
pub fn own_cases_path(module: &ModuleRef) -> Option<PathBuf> {
    match module {
        ModuleRef::File(path) => Some(path.with_extension("cases.json")),
        ModuleRef::Builtin(_) => None,
    }
}

/// The files whose change should trigger a reload: every file module, its cases file,
/// and whatever extra files (a config file) the caller names.
pub fn watched_files(specs: &[EndpointSpec], extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = extra.to_vec();
    for policy in specs.iter().flat_map(|s| &s.policies) {
        let module = ModuleRef::parse(&policy.module);
        if let ModuleRef::File(path) = &module {
            files.push(path.clone());
            files.extend(own_cases_path(&module));
        }
    }
    files.sort();
    files.dedup();
    files
}

/// Keeps a reload watcher alive; dropping it stops watching.
#[derive(Debug)]
pub struct Watcher {
    _files: notify::RecommendedWatcher,
    _signals: signal_hook::iterator::Handle,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self._signals.close();
    }
}

/// How long to wait after a change for more changes (editors and `cp` write in steps).
const SETTLE: Duration = Duration::from_millis(150);

/// Reload on SIGHUP and whenever one of `files` changes. `specs` is called for each
/// reload (it may re-read a config file). Reloads run on a thread of their own.
pub fn watch<F>(policies: Arc<Policies>, files: Vec<PathBuf>, specs: F) -> std::io::Result<Watcher>
where
    F: Fn() -> Result<Vec<EndpointSpec>, String> + Send + 'static,
{
    use notify::Watcher as _;

    let (trigger, triggered) = mpsc::channel::<&'static str>();

    // Watch the directories, not the files: replacing a file (rename over it, as editors
    // and deploy tools do) would end a watch on the file itself.
    let wanted: Vec<PathBuf> = files.iter().map(|f| absolute(f)).collect();
    let file_trigger = trigger.clone();
    let wanted_in_handler = wanted.clone();
    let mut file_watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            if event
                .paths
                .iter()
                .any(|p| wanted_in_handler.contains(&absolute(p)))
            {
                let _ = file_trigger.send("file change");
            }
        })
        .map_err(std::io::Error::other)?;
    let mut dirs: Vec<&Path> = wanted.iter().filter_map(|f| f.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        file_watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)?;
    }

    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    let signal_handle = signals.handle();
    std::thread::Builder::new()
        .name("sigward-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                if trigger.send("SIGHUP").is_err() {
                    break;
                }
            }
        })?;

    std::thread::Builder::new()
        .name("sigward-reload".into())
        .spawn(move || {
            while let Ok(cause) = triggered.recv() {
                std::thread::sleep(SETTLE);
                while triggered.try_recv().is_ok() {}
                tracing::info!(cause, "reloading policy sets");
                policies.reload_logged(specs());
            }
        })?;

    Ok(Watcher {
        _files: file_watcher,
        _signals: signal_handle,
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
