//! The proxy's network edges: the listeners agents connect to ([`listener`]), the
//! upstream client requests leave through ([`forward`]), request bodies streamed between
//! them ([`body`]), and the AWS-shaped refusals ([`errors`]). What happens to a request
//! in between is the [`crate::pipeline`].

pub mod body;
pub mod errors;
pub mod forward;
pub mod listener;
