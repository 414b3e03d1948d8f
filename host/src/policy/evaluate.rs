//! One evaluation: a fresh `Store` and instance from the pre-instantiated component, with
//! a memory limit, a wall-clock deadline (epochs) and fuel, and nothing of the host world
//! inside — no files, network, environment, real clocks or real randomness. Nothing
//! survives the call, so a verdict depends only on (module, settings, facet).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::Verdict;
use super::engine::EPOCH_TICK;
use super::module::LoadedPolicy;
use super::{bindings, bindings_v01};
use crate::facet::{Authorization, Facet};

/// A compiled, pre-instantiated component, by the contract version it was built against.
#[derive(Clone)]
pub(crate) enum Pre {
    /// `sigward:policy@0.2.0`: the facet with its authorizations.
    Current(bindings::PolicyPre<Sandbox>),
    /// `sigward:policy@0.1.0`: the facet as it was, without them.
    V01(bindings_v01::PolicyPre<Sandbox>),
}

impl Pre {
    /// The component as whichever contract it implements (the current one's error if none).
    pub(crate) fn new(
        instance_pre: wasmtime::component::InstancePre<Sandbox>,
    ) -> Result<Self, wasmtime::Error> {
        match bindings::PolicyPre::new(instance_pre.clone()) {
            Ok(pre) => Ok(Pre::Current(pre)),
            Err(current) => bindings_v01::PolicyPre::new(instance_pre)
                .map(Pre::V01)
                .map_err(|_| current),
        }
    }

    pub(crate) fn component(&self) -> &wasmtime::component::Component {
        match self {
            Pre::Current(pre) => pre.instance_pre().component(),
            Pre::V01(pre) => pre.instance_pre().component(),
        }
    }

    pub(crate) fn contract(&self) -> &'static str {
        match self {
            Pre::Current(_) => "0.2.0",
            Pre::V01(_) => "0.1.0",
        }
    }

    /// Instantiate in `store` and evaluate once. The error says whether instantiating failed.
    fn call(
        &self,
        store: &mut Store<Sandbox>,
        lowered: &Lowered<'_>,
    ) -> Result<bindings::sigward::policy::types::Verdict, (wasmtime::Error, bool)> {
        match self {
            Pre::Current(pre) => {
                let instance = pre.instantiate(&mut *store).map_err(|e| (e, true))?;
                let authorizations = lowered.authorizations();
                instance
                    .call_evaluate(store, lowered.wit(&authorizations))
                    .map_err(|e| (e, false))
            }
            Pre::V01(pre) => {
                let instance = pre.instantiate(&mut *store).map_err(|e| (e, true))?;
                instance
                    .call_evaluate(store, lowered.wit_v01())
                    .map(upgrade)
                    .map_err(|e| (e, false))
            }
        }
    }
}

/// A 0.1.0 verdict as the current contract's (the variant is unchanged).
fn upgrade(
    verdict: bindings_v01::sigward::policy::types::Verdict,
) -> bindings::sigward::policy::types::Verdict {
    use bindings::sigward::policy::types::{Approval, Verdict as Now};
    use bindings_v01::sigward::policy::types::Verdict as Then;
    match verdict {
        Then::Allow => Now::Allow,
        Then::Deny(reason) => Now::Deny(reason),
        Then::Approve(a) => Now::Approve(Approval {
            approvers: a.approvers,
            prompt: a.prompt,
        }),
    }
}

/// Per-endpoint limits on one evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest linear memory a policy may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time an evaluation may take.
    #[serde(with = "millis", rename = "deadline_ms")]
    pub deadline: Duration,
    /// WebAssembly instructions (roughly) an evaluation may execute.
    pub fuel: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 8 << 20,
            deadline: Duration::from_millis(100),
            fuel: 50_000_000,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Why an evaluation produced no verdict. Each one is turned into a deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Deadline(Duration),
    Fuel(u64),
    Memory(usize),
    Trap(String),
    Instantiate(String),
    Malformed(String),
}

impl Failure {
    /// A short, stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Deadline(_) => "deadline",
            Failure::Fuel(_) => "fuel",
            Failure::Memory(_) => "memory",
            Failure::Trap(_) => "trap",
            Failure::Instantiate(_) => "instantiate",
            Failure::Malformed(_) => "malformed",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Deadline(d) => write!(f, "deadline exceeded after {} ms", d.as_millis()),
            Failure::Fuel(fuel) => write!(f, "fuel exhausted after {fuel} units"),
            Failure::Memory(limit) => write!(f, "memory limit of {} exceeded", human_bytes(*limit)),
            Failure::Trap(message) => write!(f, "trapped: {message}"),
            Failure::Instantiate(message) => write!(f, "could not be instantiated: {message}"),
            Failure::Malformed(message) => write!(f, "returned a malformed verdict: {message}"),
        }
    }
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// Verdict strings longer than this are treated as malformed rather than stored.
const MAX_TEXT: usize = 4096;
const MAX_APPROVERS: usize = 64;
/// Table growth beyond this is refused (no sane policy needs it).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The data of one evaluation's `Store`.
pub(crate) struct Sandbox {
    /// Built on a component's first WASI call: most policies (the built-ins, anything
    /// from the `no_std` SDK) make none, and building it costs about a microsecond.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    limiter: Limiter,
    settings: Arc<str>,
}

struct Limiter {
    memory_bytes: usize,
    memory_exceeded: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(empty_wasi),
            table: &mut self.table,
        }
    }
}

impl bindings::PolicyImports for Sandbox {
    fn settings(&mut self) -> String {
        self.settings.to_string()
    }
}

impl bindings::sigward::policy::types::Host for Sandbox {}

impl bindings_v01::sigward::policy::types::Host for Sandbox {}

/// A WASI context with nothing in it: no preopened directories, environment, arguments
/// or network; stdin empty and output discarded; clocks frozen at the Unix epoch and
/// "randomness" a fixed sequence, so that evaluations are reproducible.
fn empty_wasi() -> WasiCtx {
    WasiCtxBuilder::new()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .secure_random(FixedSequence(0))
        .insecure_random(FixedSequence(0))
        .insecure_random_seed(0)
        .build()
}

struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// A deterministic stand-in for randomness (splitmix64 from a fixed seed).
struct FixedSequence(u64);

impl rand_core::TryRng for FixedSequence {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Ok(z ^ (z >> 31))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

pub(crate) fn run(
    policy: &LoadedPolicy,
    settings: &Arc<str>,
    facet: &Facet,
    limits: &Limits,
) -> Result<Verdict, Failure> {
    run_metered(policy, settings, facet, limits).0
}

/// Evaluate (as [`LoadedPolicy::evaluate`] does), also returning the fuel the evaluation consumed (instantiation included).
pub fn run_metered(
    policy: &LoadedPolicy,
    settings: &Arc<str>,
    facet: &Facet,
    limits: &Limits,
) -> (Result<Verdict, Failure>, u64) {
    let mut store = match new_store(policy, settings, limits) {
        Ok(store) => store,
        Err(failure) => return (Err(failure), 0),
    };
    let lowered = Lowered::new(facet);
    let _ticking = policy.engine.ticking();
    let outcome = policy.pre.call(&mut store, &lowered);
    let fuel = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    let verdict = match outcome {
        Ok(verdict) => validate(verdict),
        Err((error, instantiating)) => Err(classify(&error, store.data(), limits, instantiating)),
    };
    (verdict, fuel)
}

fn new_store(
    policy: &LoadedPolicy,
    settings: &Arc<str>,
    limits: &Limits,
) -> Result<Store<Sandbox>, Failure> {
    let sandbox = Sandbox {
        wasi: None,
        table: ResourceTable::new(),
        limiter: Limiter {
            memory_bytes: limits.memory_bytes,
            memory_exceeded: false,
        },
        settings: Arc::clone(settings),
    };
    let mut store = Store::new(policy.engine.wasmtime(), sandbox);
    store.limiter(|s| &mut s.limiter);
    // Cannot fail: the engine is always configured with consume_fuel.
    store
        .set_fuel(limits.fuel)
        .map_err(|e| Failure::Instantiate(format!("{e:#}")))?;
    store.set_epoch_deadline(deadline_ticks(limits.deadline));
    store.epoch_deadline_trap();
    Ok(store)
}

fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    u64::try_from(deadline.as_nanos().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .max(1)
}

fn classify(
    error: &wasmtime::Error,
    sandbox: &Sandbox,
    limits: &Limits,
    instantiating: bool,
) -> Failure {
    // A guest whose allocation was refused aborts with a plain trap: the limiter knows why.
    if sandbox.limiter.memory_exceeded {
        return Failure::Memory(limits.memory_bytes);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Deadline(limits.deadline),
        Some(Trap::OutOfFuel) => Failure::Fuel(limits.fuel),
        Some(trap) => Failure::Trap(trap.to_string()),
        None if instantiating => Failure::Instantiate(format!("{error:#}")),
        None => Failure::Trap(format!("{error:#}")),
    }
}

fn validate(verdict: bindings::sigward::policy::types::Verdict) -> Result<Verdict, Failure> {
    use bindings::sigward::policy::types::Verdict as Wit;
    let too_long = |what: &str, text: &str| {
        (text.len() > MAX_TEXT)
            .then(|| Failure::Malformed(format!("{what} longer than {MAX_TEXT} bytes")))
    };
    match verdict {
        Wit::Allow => Ok(Verdict::Allow),
        Wit::Deny(reason) => {
            if let Some(failure) = too_long("deny reason", &reason) {
                return Err(failure);
            }
            Ok(Verdict::Deny { reason })
        }
        Wit::Approve(approval) => {
            if approval.approvers.is_empty() {
                return Err(Failure::Malformed("approve with no approvers".into()));
            }
            if approval.approvers.len() > MAX_APPROVERS {
                return Err(Failure::Malformed(format!(
                    "more than {MAX_APPROVERS} approvers"
                )));
            }
            if approval.approvers.iter().any(|a| a.trim().is_empty()) {
                return Err(Failure::Malformed("an approver's name is empty".into()));
            }
            for text in approval.approvers.iter().chain([&approval.prompt]) {
                if let Some(failure) = too_long("approval text", text) {
                    return Err(failure);
                }
            }
            Ok(Verdict::Approve {
                approvers: approval.approvers,
                prompt: approval.prompt,
            })
        }
    }
}

/// Latencies of `n` calls into reused instances: the floor a fresh sandbox per
/// evaluation is measured against. Only for benchmarks — the proxy never reuses an
/// instance. A new instance is started (untimed) every 256 calls,
/// because guests built with the SDK never free memory.
pub fn reused_instance_samples(
    policy: &LoadedPolicy,
    settings: &Arc<str>,
    facet: &Facet,
    n: usize,
    memory_bytes: usize,
) -> Result<Vec<u64>, Failure> {
    const CALLS_PER_INSTANCE: usize = 256;
    let limits = Limits {
        fuel: u64::MAX / 4,
        deadline: Duration::from_secs(3600),
        memory_bytes,
    };
    let lowered = Lowered::new(facet);
    let authorizations = lowered.authorizations();
    let mut samples = Vec::with_capacity(n);
    while samples.len() < n {
        let mut store = new_store(policy, settings, &limits)?;
        let instantiated =
            |e: wasmtime::Error, store: &Store<Sandbox>| classify(&e, store.data(), &limits, true);
        let called =
            |e: wasmtime::Error, store: &Store<Sandbox>| classify(&e, store.data(), &limits, false);
        let calls = CALLS_PER_INSTANCE.min(n - samples.len());
        match &policy.pre {
            Pre::Current(pre) => {
                let instance = pre
                    .instantiate(&mut store)
                    .map_err(|e| instantiated(e, &store))?;
                for _ in 0..calls {
                    let start = std::time::Instant::now();
                    let verdict = instance
                        .call_evaluate(&mut store, lowered.wit(&authorizations))
                        .map_err(|e| called(e, &store))?;
                    samples.push(start.elapsed().as_nanos() as u64);
                    validate(verdict)?;
                }
            }
            Pre::V01(pre) => {
                let instance = pre
                    .instantiate(&mut store)
                    .map_err(|e| instantiated(e, &store))?;
                for _ in 0..calls {
                    let start = std::time::Instant::now();
                    let verdict = instance
                        .call_evaluate(&mut store, lowered.wit_v01())
                        .map_err(|e| called(e, &store))?;
                    samples.push(start.elapsed().as_nanos() as u64);
                    validate(upgrade(verdict))?;
                }
            }
        }
    }
    Ok(samples)
}

/// The facet as the WIT bindings take it: borrowed, so lowering it into the guest copies
/// each string once, straight into guest memory.
struct Lowered<'a> {
    facet: &'a Facet,
    resources: Vec<&'a str>,
    params: Vec<(&'a str, &'a str)>,
    /// The facet's authorizations, or those its action and resources imply.
    pairs: Cow<'a, [Authorization]>,
}

type WitAuthorization<'a> = bindings::sigward::policy::types::Authorization<'a>;

impl<'a> Lowered<'a> {
    fn new(facet: &'a Facet) -> Self {
        Self {
            facet,
            resources: facet.resources.iter().map(String::as_str).collect(),
            params: facet
                .params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            pairs: if facet.authorizations.is_empty() {
                Cow::Owned(facet.pairs())
            } else {
                Cow::Borrowed(&facet.authorizations)
            },
        }
    }

    fn authorizations(&self) -> Vec<WitAuthorization<'_>> {
        self.pairs
            .iter()
            .map(|a| WitAuthorization {
                action: &a.action,
                resource: a.resource.as_deref(),
            })
            .collect()
    }

    fn wit<'s>(
        &'s self,
        authorizations: &'s [WitAuthorization<'s>],
    ) -> bindings::sigward::policy::types::AwsFacet<'s> {
        let facet = self.facet;
        bindings::sigward::policy::types::AwsFacet {
            service: &facet.service,
            action: &facet.action,
            iam_action: &facet.iam_action,
            account: &facet.account,
            account_name: facet.account_name.as_deref(),
            region: &facet.region,
            resources: &self.resources,
            method: &facet.method,
            host: &facet.host,
            path: &facet.path,
            principal: &facet.principal,
            endpoint: &facet.endpoint,
            params: &self.params,
            authorizations,
        }
    }

    fn wit_v01(&self) -> bindings_v01::sigward::policy::types::AwsFacet<'_> {
        let facet = self.facet;
        bindings_v01::sigward::policy::types::AwsFacet {
            service: &facet.service,
            action: &facet.action,
            iam_action: &facet.iam_action,
            account: &facet.account,
            account_name: facet.account_name.as_deref(),
            region: &facet.region,
            resources: &self.resources,
            method: &facet.method,
            host: &facet.host,
            path: &facet.path,
            principal: &facet.principal,
            endpoint: &facet.endpoint,
            params: &self.params,
        }
    }
}
