//! The proxy's data path. So far: the AWS-shaped refusals it answers with.

pub mod errors;
