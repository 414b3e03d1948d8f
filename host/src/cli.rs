//! The command line: `sigward serve`, `sigward check`, `sigward facet`, `sigward policy
//! {eval,test,bench,list,new}`; for agents `sigward agent {add,list,revoke}`, `sigward
//! credentials`, `sigward env`, `sigward profile {install,remove}`; and for other proxies
//! `sigward authorize` and `sigward squid-helper`; for reviewers `sigward audit {verify,replay}`,
//! `sigward approvals {list,approve,deny}` and `sigward policy generate`.
//!
//! Exit codes: 0 success, 1 a test failed, 2 bad input (a one-line error on stderr).

mod agent;
mod audit;
mod authorize;
mod check;
mod env;
mod facet;
mod generate;
mod new;
mod policy;
mod serve;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::policy::Limits;

#[derive(Debug, Parser)]
#[command(
    name = "sigward",
    version,
    about = "A proxy between AI agents and the AWS APIs, with WebAssembly policies."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy: print HTTPS_PROXY and AWS_CA_BUNDLE for agents, then serve.
    Serve(serve::ServeArgs),
    /// Validate a configuration file without starting: keys, policies, credentials.
    Check(check::CheckArgs),
    /// Print the aws facet of one raw HTTP request, as policies would see it.
    Facet(facet::FacetArgs),
    /// Evaluate, test and benchmark policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Agents sigward issues short-lived keys to.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Print a fresh key for an agent as AWS `credential_process` JSON.
    Credentials(agent::CredentialsArgs),
    /// Print the exports an agent's shell needs to go through sigward.
    Env(env::EnvArgs),
    /// Write or remove AWS config profiles that get keys from `sigward credentials`.
    #[command(subcommand)]
    Profile(env::ProfileCommand),
    /// Serve Envoy's ext_authz HTTP protocol: judge requests another proxy forwards.
    Authorize(authorize::AuthorizeArgs),
    /// Answer Squid's external ACL helper protocol on stdin/stdout.
    SquidHelper(authorize::SquidHelperArgs),
    /// Verify and replay an audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// List, approve and deny requests waiting for a human.
    #[command(subcommand)]
    Approvals(audit::ApprovalsCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Evaluate one policy on one facet and print its verdict as JSON.
    Eval(policy::EvalArgs),
    /// Run a file of test cases (facet, settings, expected verdict) against a policy.
    Test(policy::TestArgs),
    /// Measure evaluation latency with a fresh sandbox per evaluation, as the proxy runs it.
    Bench(policy::BenchArgs),
    /// List the built-in policies and their digests.
    List,
    /// Create a policy project (Rust, JavaScript or Python) that builds and passes its cases.
    New(new::NewArgs),
    /// A least-privilege IAM policy from the calls agents made (an audit log).
    Generate(generate::GenerateArgs),
}

/// Sandbox limits for one evaluation (the defaults an endpoint gets).
#[derive(Debug, Clone, Args)]
struct LimitArgs {
    /// Memory limit in MiB.
    #[arg(long, value_name = "MIB", default_value_t = Limits::default().memory_bytes >> 20)]
    memory_mib: usize,
    /// Wall-clock deadline in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = Limits::default().deadline.as_millis() as u64)]
    deadline_ms: u64,
    /// Fuel (roughly, WebAssembly instructions) per evaluation.
    #[arg(long, default_value_t = Limits::default().fuel)]
    fuel: u64,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_mib.saturating_mul(1 << 20),
            deadline: Duration::from_millis(self.deadline_ms),
            fuel: self.fuel,
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Check(args) => check::check(args),
        Command::Facet(args) => facet::facet(args),
        Command::Policy(PolicyCommand::Eval(args)) => policy::eval(args),
        Command::Policy(PolicyCommand::Test(args)) => policy::test(args),
        Command::Policy(PolicyCommand::Bench(args)) => policy::bench(args),
        Command::Policy(PolicyCommand::List) => policy::list(),
        Command::Policy(PolicyCommand::New(args)) => new::new(args),
        Command::Agent(command) => agent::agent(command),
        Command::Credentials(args) => agent::credentials(args),
        Command::Env(args) => env::env(args),
        Command::Profile(command) => env::profile(command),
        Command::Authorize(args) => authorize::authorize(args),
        Command::SquidHelper(args) => authorize::squid_helper(args),
        Command::Audit(command) => audit::audit(command),
        Command::Approvals(command) => audit::approvals(command),
        Command::Policy(PolicyCommand::Generate(args)) => generate::run(args),
    }
}
