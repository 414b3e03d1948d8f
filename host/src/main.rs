//! The `sigward` binary: parse the command line, start logging, run.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc rather than glibc's malloc: the proxy allocates small strings on every
/// request from several threads, where glibc's arenas contend (measured: README,
/// "Performance of the data path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = sigward::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIGWARD_LOG")
                .unwrap_or_else(|_| "sigward=info".into()),
        )
        .init();
    match sigward::cli::run(cli) {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sigward: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Output cut short by its reader (`sigward … | head`) is not an error.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
