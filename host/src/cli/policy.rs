//! `sigward policy …`: the tools policy authors use.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::LimitArgs;

/// `println!` that returns an error instead of panicking when stdout is closed
/// (`sigward … | head`); `main` exits quietly on a broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}
use crate::facet::Facet;
use crate::policy::cases::CaseFile;
use crate::policy::engine::EngineOptions;
use crate::policy::module::builtin_names;
use crate::policy::set::failure_verdict;
use crate::policy::{Engine, LoadedPolicy, ModuleRef, evaluate};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// `builtin:NAME` or a path to a policy component (.wasm).
    #[arg(long)]
    policy: String,
    /// The policy's settings, as JSON.
    #[arg(long, default_value = "{}")]
    settings: String,
    /// The facet as JSON (snake_case WIT field names), from a file or `-` for stdin.
    #[arg(long)]
    facet: PathBuf,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// `builtin:NAME` or a path to a policy component (.wasm).
    policy: String,
    /// A JSON file of cases: {"settings": {...}, "cases": [{"name", "facet", "settings"?, "expect"}]}.
    cases: PathBuf,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// `builtin:NAME` or a path to a policy component (.wasm).
    #[arg(long)]
    policy: String,
    /// The policy's settings, as JSON.
    #[arg(long, default_value = "{}")]
    settings: String,
    /// The facet to evaluate (default: a typical S3 GetObject).
    #[arg(long)]
    facet: Option<PathBuf>,
    /// Timed evaluations (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 20_000)]
    iterations: u32,
    #[command(flatten)]
    limits: LimitArgs,
}

pub fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let facet = read_facet(&args.facet)?;
    let settings = settings_text(&args.settings)?;
    let policy = load(&args.policy)?;
    let verdict = policy
        .evaluate(&settings, &facet, &args.limits.limits())
        .unwrap_or_else(|failure| failure_verdict(&policy, &failure));
    let mut out = serde_json::to_value(&verdict)?;
    out["policy"] = json!(policy.name);
    out["digest"] = json!(policy.digest);
    outln!("{out}");
    Ok(ExitCode::SUCCESS)
}

pub fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let cases = CaseFile::read(&args.cases)?;
    let policy = load(&args.policy)?;
    let results = cases.run(&policy, &args.limits.limits());
    let failed = results.iter().filter(|r| r.outcome.is_err()).count();
    for result in &results {
        match &result.outcome {
            Ok(()) => outln!("ok   {}", result.name),
            Err(why) => outln!("FAIL {}: {why}", result.name),
        }
    }
    outln!(
        "{}: {} passed, {failed} failed",
        policy.label(),
        results.len() - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.iterations > 0, "--iterations must be at least 1");
    let facet = match &args.facet {
        Some(path) => read_facet(path)?,
        None => typical_facet(),
    };
    let settings = settings_text(&args.settings)?;
    let limits = args.limits.limits();
    let policy = load(&args.policy)?;
    let iterations = args.iterations as usize;

    let fresh = |n: usize| -> anyhow::Result<Vec<u64>> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            let verdict = policy.evaluate(&settings, &facet, &limits);
            samples.push(start.elapsed().as_nanos() as u64);
            verdict.map_err(|failure| anyhow::anyhow!("policy {}: {failure}", policy.label()))?;
        }
        Ok(samples)
    };
    fresh(iterations / 10 + 1)?;
    let started = Instant::now();
    let mut samples = fresh(iterations)?;
    let elapsed = started.elapsed();

    let (_, fuel) = evaluate::run_metered(&policy, &settings, &facet, &limits);
    let mut floor = evaluate::reused_instance_samples(
        &policy,
        &settings,
        &facet,
        iterations,
        limits.memory_bytes,
    )
    .map_err(|failure| anyhow::anyhow!("policy {}: {failure}", policy.label()))?;

    let out = json!({
        "policy": policy.name,
        "digest": policy.digest,
        "iterations": iterations,
        "p50_ns": percentile(&mut samples, 50.0),
        "p99_ns": percentile(&mut samples, 99.0),
        "evals_per_sec": (iterations as f64 / elapsed.as_secs_f64()).round() as u64,
        "fuel_per_eval": fuel,
        "reused_instance_p50_ns": percentile(&mut floor, 50.0),
        "reused_instance_p99_ns": percentile(&mut floor, 99.0),
    });
    outln!("{out}");
    Ok(ExitCode::SUCCESS)
}

pub fn list() -> anyhow::Result<ExitCode> {
    let engine = engine()?;
    for name in builtin_names() {
        let policy = engine.load(&ModuleRef::Builtin(name.to_string()))?;
        outln!("builtin:{name}\t{}", policy.digest);
    }
    Ok(ExitCode::SUCCESS)
}

fn percentile(samples: &mut [u64], p: f64) -> u64 {
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn engine() -> anyhow::Result<Engine> {
    Ok(Engine::new(EngineOptions::default())?)
}

fn load(policy: &str) -> anyhow::Result<Arc<LoadedPolicy>> {
    Ok(engine()?.load(&ModuleRef::parse(policy))?)
}

fn settings_text(settings: &str) -> anyhow::Result<Arc<str>> {
    let value: serde_json::Value = serde_json::from_str(settings)
        .with_context(|| format!("--settings is not valid JSON: {settings:?}"))?;
    Ok(value.to_string().into())
}

fn read_facet(path: &Path) -> anyhow::Result<Facet> {
    let (text, shown) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the facet from stdin")?;
        (text, "stdin".to_string())
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read facet file {}", path.display()))?;
        (text, path.display().to_string())
    };
    serde_json::from_str(&text).with_context(|| format!("facet in {shown} is not valid"))
}

/// A typical read: what most agent calls look like.
fn typical_facet() -> Facet {
    Facet {
        service: "s3".into(),
        action: "GetObject".into(),
        iam_action: "s3:GetObject".into(),
        account: "111111111111".into(),
        account_name: Some("prod".into()),
        region: "us-east-1".into(),
        resources: vec!["arn:aws:s3:::example-bucket/reports/2026/11/summary.csv".into()],
        method: "GET".into(),
        host: "example-bucket.s3.us-east-1.amazonaws.com".into(),
        path: "/reports/2026/11/summary.csv".into(),
        principal: "claude".into(),
        endpoint: "default".into(),
        params: vec![("x-id".into(), "GetObject".into())],
        authorizations: vec![crate::facet::Authorization::new(
            "s3:GetObject",
            Some("arn:aws:s3:::example-bucket/reports/2026/11/summary.csv".into()),
        )],
    }
}
