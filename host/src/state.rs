//! Where the state more than one request shares lives: by default the state directory of
//! one sigward (approvals in memory, agents in `agents.json`, the audit log in its file);
//! with `[cluster]`, PostgreSQL, shared by every replica ([`database`]): approvals are
//! rows any replica can list and decide, agents and revocations are rows every replica
//! reads, and each replica's audit chain is appended there too. Below the pipeline and
//! the admin API; approvals ([`crate::approval`]), agents ([`crate::agents`]) and the
//! audit log ([`crate::audit`]) each take one or the other.

pub mod database;
pub mod secrets;

pub use database::{Database, DbError, Event};
