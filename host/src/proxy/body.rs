//! Request bodies on their way upstream, streamed frame by frame — never buffered whole:
//!
//! - a declared SHA-256 is checked as the bytes pass; the last frame is held back until
//!   the hash matches, so a mismatch aborts the upstream request before it is complete;
//! - aws-chunked bodies signed chunk by chunk are verified and re-signed ([`Resigner`]);
//! - anything else (`UNSIGNED-PAYLOAD`, `STREAMING-UNSIGNED-PAYLOAD-TRAILER`) passes as is.
//!
//! A failure is recorded in a [`Failure`] slot the pipeline reads when the upstream
//! request fails, so the agent is told why. An agent that stops sending its body for
//! `body_timeout` is given up on, streamed or read whole ([`read_whole`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};

use crate::aws::chunked::{ChunkError, Resigner};
use crate::upstream::BoxError;

/// How a streamed body ended, shared between the body and the pipeline: why it stopped,
/// if it failed, and when it ended (the upstream's response time counts from then).
#[derive(Debug, Clone, Default)]
pub struct Failure(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    error: Mutex<Option<BodyError>>,
    ended: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
    /// Frames passed upstream so far: whether the body is moving.
    frames: std::sync::atomic::AtomicU64,
}

impl Failure {
    pub fn take(&self) -> Option<BodyError> {
        self.0
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn set(&self, error: BodyError) -> BoxError {
        let boxed: BoxError = Box::new(error.clone());
        *self.0.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        self.end();
        boxed
    }

    fn end(&self) {
        self.0
            .ended
            .store(true, std::sync::atomic::Ordering::Release);
        self.0.notify.notify_waiters();
    }

    /// How many frames have gone upstream.
    pub fn frames(&self) -> u64 {
        self.0.frames.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn moved(&self) {
        self.0
            .frames
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wait until the body has ended (sent whole, or failed).
    pub async fn ended(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.0.ended.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            notified.await;
        }
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
    #[error(
        "the agent sent no part of the request body for {} ms (proxy.body_timeout)",
        .0.as_millis()
    )]
    Idle(Duration),
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
            BodyError::Idle(_) => (400, "RequestTimeout"),
        }
    }
}

/// One frame from the agent, as hyper gives it.
type IncomingFrame = Result<Frame<Bytes>, hyper::Error>;

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
    /// How long the agent may keep the next frame waiting, and the deadline while it
    /// does (armed when the agent has nothing ready, not while the upstream is slow to
    /// take what it has).
    idle: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Outgoing {
    /// Pass the body through unchanged.
    pub fn pass(incoming: Incoming, failure: Failure, idle: Duration) -> Self {
        Self::new(incoming, Stage::Pass, failure, idle)
    }

    /// Check the body against a declared hex SHA-256.
    pub fn hashed(incoming: Incoming, declared: &str, failure: Failure, idle: Duration) -> Self {
        let stage = Stage::Hash {
            declared: declared.to_ascii_lowercase(),
            hasher: Sha256::new(),
            held: None,
        };
        Self::new(incoming, stage, failure, idle)
    }

    /// Verify and re-sign an aws-chunked body chunk by chunk.
    pub fn resigned(
        incoming: Incoming,
        resigner: Resigner,
        failure: Failure,
        idle: Duration,
    ) -> Self {
        Self::new(incoming, Stage::Chunked(Box::new(resigner)), failure, idle)
    }

    fn new(incoming: Incoming, stage: Stage, failure: Failure, idle: Duration) -> Self {
        // An empty body may never be polled: it has ended already.
        if http_body::Body::is_end_stream(&incoming) {
            failure.end();
        }
        Self {
            incoming,
            stage,
            failure,
            done: false,
            idle,
            deadline: None,
        }
    }

    /// The agent's next frame, or `Pending` until it comes or the idle deadline passes.
    fn poll_incoming(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<IncomingFrame>, BodyError>> {
        match http_body::Body::poll_frame(Pin::new(&mut self.incoming), cx) {
            Poll::Ready(frame) => {
                self.deadline = None;
                self.failure.moved();
                Poll::Ready(Ok(frame))
            }
            Poll::Pending => {
                let idle = self.idle;
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Err(BodyError::Idle(idle)))
            }
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
            let frame = match ready!(this.poll_incoming(cx)) {
                Ok(frame) => frame,
                Err(idle) => return this.fail(idle),
            };
            match frame {
                Some(Err(e)) => return this.fail(BodyError::Read(e.to_string())),
                None => {
                    this.done = true;
                    this.failure.end();
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

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadWhole {
    #[error("it is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the memory for request bodies read whole ({0} bytes) is in use")]
    Busy(usize),
    #[error(transparent)]
    Failed(#[from] BodyError),
}

/// The memory all bodies read whole may hold together, in KiB permits.
#[derive(Debug, Clone)]
pub struct Budget {
    permits: Arc<tokio::sync::Semaphore>,
    bytes: usize,
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        let kib = (bytes / 1024).clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(kib)),
            bytes,
        }
    }

    /// Room for `more` bytes beyond what `held` already has, now or never.
    fn take(
        &self,
        held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
        had: usize,
        more: usize,
    ) -> Result<(), ReadWhole> {
        let want = (had + more).div_ceil(1024);
        let have = held.as_ref().map_or(0, |p| p.num_permits());
        if want <= have {
            return Ok(());
        }
        let extra = u32::try_from(want - have).map_err(|_| ReadWhole::Busy(self.bytes))?;
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(extra)
            .map_err(|_| ReadWhole::Busy(self.bytes))?;
        match held {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

/// A body read whole, and its share of the [`Budget`] (released when dropped).
pub struct Whole {
    pub bytes: Bytes,
    /// Held while the request is served.
    pub budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Read a body whole, at most `limit` bytes and within `budget`, giving up when the agent
/// sends nothing for `idle`. The declared length is reserved before anything is read; a
/// body already there (one frame, the usual case) is taken without a timer.
pub async fn read_whole(
    incoming: &mut Incoming,
    limit: usize,
    idle: Duration,
    budget: &Budget,
) -> Result<Whole, ReadWhole> {
    let mut held = None;
    if let Some(declared) = http_body::Body::size_hint(&*incoming).upper() {
        let declared = usize::try_from(declared).unwrap_or(usize::MAX);
        if declared > limit {
            return Err(ReadWhole::TooLarge(limit));
        }
        budget.take(&mut held, 0, declared)?;
    }
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    loop {
        let frame = match incoming.frame().now_or_never() {
            Some(frame) => frame,
            None => tokio::time::timeout(idle, incoming.frame())
                .await
                .map_err(|_| BodyError::Idle(idle))?,
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(BodyError::Read(e.to_string()).into()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        let had = first.as_ref().map_or(0, Bytes::len) + more.len();
        if had + data.len() > limit {
            return Err(ReadWhole::TooLarge(limit));
        }
        budget.take(&mut held, had, data.len())?;
        match &first {
            None if more.is_empty() => first = Some(data),
            _ => {
                if let Some(first) = first.take() {
                    more.extend_from_slice(&first);
                }
                more.extend_from_slice(&data);
            }
        }
    }
    Ok(Whole {
        bytes: match first {
            Some(first) => first,
            None => more.freeze(),
        },
        budget: held,
    })
}

/// Before a refusal, read and discard what the agent is sending — at most 1 MiB, for at
/// most 5 s — so that it reads the answer. `false` when the body did not end within
/// that: the connection is then closed after the answer.
pub async fn drain(mut incoming: Incoming) -> bool {
    const MAX: usize = 1 << 20;
    const WITHIN: Duration = Duration::from_secs(5);
    if http_body::Body::is_end_stream(&incoming) {
        return true;
    }
    let read = async {
        let mut seen = 0usize;
        while let Some(frame) = incoming.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > MAX {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(WITHIN, read).await.unwrap_or(false)
}
