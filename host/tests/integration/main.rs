//! Integration tests of the sigward binary and library, against real policy components
//! compiled from `policies/` by the host's build script. One binary, one module per area.

mod ambiguity;
mod approvals;
mod authorizations;
mod authorizer;
mod browser;
mod cli;
mod clients;
mod cluster;
mod delivery;
mod differential;
mod e2e;
mod engine;
mod errors;
mod facet;
mod faults;
mod fuzz;
mod guests;
mod model;
mod reload;
mod sigv4;
mod support;
mod tls;
mod verifier;
