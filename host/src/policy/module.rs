//! Where a policy's bytes come from, their digest, and the loaded (compiled and
//! pre-instantiated) form the engine evaluates.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::Verdict;
use super::engine::Engine;
use super::evaluate::{self, Failure, Limits, Pre};
use crate::facet::Facet;

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}

/// The names of the built-in policies (`builtin:NAME`).
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    builtin::BUILTINS.iter().map(|(name, _)| *name)
}

/// The sha256 of a module's bytes: its identity in verdicts, the audit log and replay.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyDigest([u8; 32]);

impl PolicyDigest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The first 8 hex digits, for messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for PolicyDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PolicyDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let hex_part = text.strip_prefix("sha256:").unwrap_or(&text);
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes)
            .map_err(|e| serde::de::Error::custom(format!("bad policy digest {text:?}: {e}")))?;
        Ok(Self(bytes))
    }
}

/// A policy module reference as operators write it: `builtin:NAME` or a path to a
/// `.wasm` component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleRef {
    Builtin(String),
    File(PathBuf),
}

impl ModuleRef {
    pub fn parse(text: &str) -> Self {
        match text.strip_prefix("builtin:") {
            Some(name) => ModuleRef::Builtin(name.to_string()),
            None => ModuleRef::File(PathBuf::from(text)),
        }
    }

    /// The policy's name in verdicts and messages: the builtin's name or the file stem.
    pub fn name(&self) -> String {
        match self {
            ModuleRef::Builtin(name) => name.clone(),
            ModuleRef::File(path) => path.file_stem().map_or_else(
                || path.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            ),
        }
    }

    pub fn read(&self) -> Result<Cow<'static, [u8]>, LoadError> {
        match self {
            ModuleRef::Builtin(name) => builtin::BUILTINS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, bytes)| Cow::Borrowed(*bytes))
                .ok_or_else(|| LoadError::UnknownBuiltin {
                    name: name.clone(),
                    known: builtin_names()
                        .map(|n| format!("builtin:{n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            ModuleRef::File(path) => {
                std::fs::read(path)
                    .map(Cow::Owned)
                    .map_err(|error| LoadError::Read {
                        path: path.clone(),
                        error,
                    })
            }
        }
    }
}

impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleRef::Builtin(name) => write!(f, "builtin:{name}"),
            ModuleRef::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("unknown built-in policy builtin:{name} (known: {known})")]
    UnknownBuiltin { name: String, known: String },
    #[error("cannot read policy module {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("policy {name} is not a valid WebAssembly component: {message}")]
    Compile { name: String, message: String },
    #[error("policy {name} does not implement the sigward:policy world: {message}")]
    NotAPolicy { name: String, message: String },
}

/// A compiled, pre-instantiated policy, ready to evaluate in fresh sandboxes.
pub struct LoadedPolicy {
    pub name: String,
    pub source: ModuleRef,
    pub digest: PolicyDigest,
    pub(crate) pre: Pre,
    pub(crate) engine: Engine,
}

impl fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl LoadedPolicy {
    /// Evaluate in a fresh sandbox. `settings` is the JSON text the policy's `settings`
    /// import returns.
    pub fn evaluate(
        &self,
        settings: &Arc<str>,
        facet: &Facet,
        limits: &Limits,
    ) -> Result<Verdict, Failure> {
        evaluate::run(self, settings, facet, limits)
    }

    /// The names of the component's imports (`settings`, `wasi:cli/environment@0.2.6`, …).
    /// A policy without WASI imports instantiates measurably faster.
    pub fn imports(&self) -> Vec<String> {
        let component = self.pre.component();
        component
            .component_type()
            .imports(self.engine.wasmtime())
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The version of the `sigward:policy` contract the component was built against.
    pub fn contract(&self) -> &'static str {
        self.pre.contract()
    }

    /// "read-only@1a2b3c4d": how failures name the policy.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.digest.short())
    }
}
