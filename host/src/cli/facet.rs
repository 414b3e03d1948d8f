//! `sigward facet`: what sigward understands of one raw request.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;

use crate::aws::account::AccountNames;
use crate::aws::understand_bytes;

#[derive(Debug, Args)]
pub struct FacetArgs {
    /// Label accounts: `111111111111=prod` (repeat the flag, or separate with commas).
    #[arg(long = "accounts", value_name = "ID=NAME", value_delimiter = ',')]
    accounts: Vec<String>,
    /// Measure instead: understand the request N times and print latency percentiles.
    #[arg(long, value_name = "N")]
    bench: Option<u32>,
    /// One raw HTTP/1.1 request as it arrives after TLS termination, or `-` for stdin.
    file: PathBuf,
}

pub fn facet(args: FacetArgs) -> anyhow::Result<ExitCode> {
    let names = AccountNames::parse(args.accounts.iter().map(String::as_str))?;
    let bytes = if args.file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the request from stdin")?;
        bytes
    } else {
        std::fs::read(&args.file)
            .with_context(|| format!("cannot read request file {}", args.file.display()))?
    };
    let facet = understand_bytes(&bytes, &names)?;
    let mut out = std::io::stdout();
    match args.bench {
        None => writeln!(out, "{}", serde_json::to_string(&facet)?)?,
        Some(n) => {
            let n = n.max(1) as usize;
            let mut samples: Vec<u64> = Vec::with_capacity(n);
            for _ in 0..n {
                let start = Instant::now();
                let facet = understand_bytes(&bytes, &names);
                samples.push(start.elapsed().as_nanos() as u64);
                std::hint::black_box(facet)?;
            }
            samples.sort_unstable();
            let at = |p: f64| samples[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
            let line = serde_json::json!({
                "action": facet.action, "iterations": n, "p50_ns": at(50.0), "p99_ns": at(99.0),
            });
            writeln!(out, "{line}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
