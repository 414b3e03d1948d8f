//! Request bodies on their way upstream, streamed frame by frame — never buffered whole:
//!
//! - a declared SHA-256 is checked as the bytes pass; the last frame is held back until
//!   the hash matches, so a mismatch aborts the upstream request before it is complete;
//! - aws-chunked bodies signed chunk by chunk are verified and re-signed ([`Resigner`]);
//! - anything else (`UNSIGNED-PAYLOAD`, `STREAMING-UNSIGNED-PAYLOAD-TRAILER`) passes as is.
//!
//! A failure is recorded in a [`Failure`] slot the pipeline reads when the upstream
//! request fails, so the agent is told why.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};

use super::forward::BoxError;
use crate::aws::chunked::{ChunkError, Resigner};

/// Why a body stopped, shared between the body and the pipeline.
#[derive(Debug, Clone, Default)]
pub struct Failure(Arc<Mutex<Option<BodyError>>>);

impl Failure {
    pub fn take(&self) -> Option<BodyError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn set(&self, error: BodyError) -> BoxError {
        let boxed: BoxError = Box::new(error.clone());
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        boxed
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body's SHA-256 {computed} is not the declared x-amz-content-sha256 {declared}")]
    HashMismatch { declared: String, computed: String },
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("reading the request body from the agent failed: {0}")]
    Read(String),
}

impl BodyError {
    /// The AWS error code and status a client understands.
    pub fn code(&self) -> (u16, &'static str) {
        match self {
            BodyError::HashMismatch { .. } => (400, "XAmzContentSHA256Mismatch"),
            BodyError::Chunk(ChunkError::Signature(_) | ChunkError::TrailerSignature) => {
                (403, "SignatureDoesNotMatch")
            }
            BodyError::Chunk(_) => (400, "IncompleteBody"),
            BodyError::Read(_) => (400, "IncompleteBody"),
        }
    }
}

enum Stage {
    Pass,
    Hash {
        declared: String,
        hasher: Sha256,
        held: Option<Bytes>,
    },
    Chunked(Box<Resigner>),
}

/// The agent's body, transformed on the way upstream.
pub struct Outgoing {
    incoming: Incoming,
    stage: Stage,
    failure: Failure,
    done: bool,
}

impl Outgoing {
    /// Pass the body through unchanged.
    pub fn pass(incoming: Incoming, failure: Failure) -> Self {
        Self::new(incoming, Stage::Pass, failure)
    }

    /// Check the body against a declared hex SHA-256.
    pub fn hashed(incoming: Incoming, declared: &str, failure: Failure) -> Self {
        let stage = Stage::Hash {
            declared: declared.to_ascii_lowercase(),
            hasher: Sha256::new(),
            held: None,
        };
        Self::new(incoming, stage, failure)
    }

    /// Verify and re-sign an aws-chunked body chunk by chunk.
    pub fn resigned(incoming: Incoming, resigner: Resigner, failure: Failure) -> Self {
        Self::new(incoming, Stage::Chunked(Box::new(resigner)), failure)
    }

    fn new(incoming: Incoming, stage: Stage, failure: Failure) -> Self {
        Self {
            incoming,
            stage,
            failure,
            done: false,
        }
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        Poll::Ready(Some(Err(self.failure.set(error))))
    }
}

impl http_body::Body for Outgoing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = ready!(Pin::new(&mut this.incoming).poll_frame(cx));
            match frame {
                Some(Err(e)) => return this.fail(BodyError::Read(e.to_string())),
                None => {
                    this.done = true;
                    match &mut this.stage {
                        Stage::Pass => return Poll::Ready(None),
                        Stage::Hash {
                            declared,
                            hasher,
                            held,
                        } => {
                            let computed = hex::encode(std::mem::take(hasher).finalize());
                            if computed != *declared {
                                let declared = declared.clone();
                                return this.fail(BodyError::HashMismatch { declared, computed });
                            }
                            return Poll::Ready(held.take().map(|b| Ok(Frame::data(b))));
                        }
                        Stage::Chunked(resigner) => {
                            if let Err(e) = resigner.finish() {
                                return this.fail(e.into());
                            }
                            return Poll::Ready(None);
                        }
                    }
                }
                Some(Ok(frame)) => {
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        // HTTP trailers pass through.
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    match &mut this.stage {
                        Stage::Pass => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Stage::Hash { hasher, held, .. } => {
                            if data.is_empty() {
                                continue;
                            }
                            hasher.update(&data);
                            // Send the frame before this one; keep this one back.
                            if let Some(previous) = held.replace(data) {
                                return Poll::Ready(Some(Ok(Frame::data(previous))));
                            }
                        }
                        Stage::Chunked(resigner) => {
                            let mut out = BytesMut::with_capacity(data.len() + 96);
                            if let Err(e) = resigner.push(&data, &mut out) {
                                return this.fail(e.into());
                            }
                            if !out.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                            }
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // Every stage keeps the length: hashing does not change it, and re-signed chunk
        // signatures are as long as the agent's.
        self.incoming.size_hint()
    }
}
