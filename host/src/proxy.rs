//! The proxy's network edges: the listeners agents connect to ([`listener`]), the
//! upstream client requests leave through ([`forward`]), request bodies streamed between
//! them ([`body`]), the AWS-shaped refusals ([`errors`]), and the listener agents fetch
//! their issued keys from ([`credentials`]). What happens to a request
//! in between is the [`crate::pipeline`].

pub mod body;
pub mod credentials;
pub mod errors;
pub mod forward;
pub mod listener;
