//! The proxy's edges towards agents: the listeners they connect to ([`listener`]), their
//! request bodies on the way to the upstream client ([`body`]; the client itself is
//! [`crate::upstream`], below this module and [`crate::aws`]), the AWS-shaped refusals
//! ([`errors`]), and the listener agents fetch their issued keys from ([`credentials`]). The listeners hand each
//! request to a [`listener::Handler`] — in `sigward serve`, the [`crate::pipeline`].

pub mod body;
pub mod credentials;
pub mod errors;
pub mod listener;
