//! aws-chunked bodies signed chunk by chunk (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD` and its
//! `-TRAILER` variant), re-signed in one streaming pass: each chunk's signature is
//! checked against the agent's key before the chunk is re-signed with the assumed role's
//! and passed on. New signatures are as long as the old, so `Content-Length` holds.
//!
//! Wire form: `hex(size);chunk-signature=<64 hex>\r\n<data>\r\n` …, then a zero-size
//! chunk, then (with `-TRAILER`) trailer lines ending in `x-amz-trailer-signature:<sig>`,
//! then an empty line. The signatures themselves are aws-sigv4's
//! ([`v4::sign_chunk`], [`v4::sign_trailer`]).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::http::Headers;
use bytes::{Buf as _, Bytes, BytesMut};
use subtle::ConstantTimeEq as _;

/// A chunk larger than this is refused (clients send 64 KiB to 8 MiB).
pub const MAX_CHUNK: usize = 16 << 20;
/// A chunk header or trailer line longer than this is refused.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("malformed aws-chunked body: {0}")]
    Malformed(String),
    #[error("chunk {0}'s signature does not match the signature computed with the agent's key")]
    Signature(usize),
    #[error("the trailer signature does not match the signature computed with the agent's key")]
    TrailerSignature,
    #[error("the aws-chunked body ended before its final chunk")]
    Truncated,
}

/// One side's chunk-signing chain: who signs, when, for what, and the last signature.
pub struct Chain {
    identity: Identity,
    time: SystemTime,
    region: String,
    service: String,
    previous: String,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("service", &self.service)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// A chain seeded with the request's own (seed) signature.
    pub fn new(
        access_key_id: &str,
        secret: &str,
        time: SystemTime,
        region: &str,
        service: &str,
        seed: &str,
    ) -> Self {
        let identity = Credentials::new(access_key_id, secret, None, None, "sigward-chunks").into();
        Self {
            identity,
            time,
            region: region.to_string(),
            service: service.to_string(),
            previous: seed.to_string(),
        }
    }

    fn params(&self) -> v4::SigningParams<'_, ()> {
        // INVARIANT: every field the builder requires is set, so `build` cannot fail.
        v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(&self.service)
            .time(self.time)
            .settings(())
            .build()
            .expect("complete signing params")
    }

    /// Sign the next chunk and advance the chain.
    pub fn sign_chunk(&mut self, data: &Bytes) -> String {
        let signature = v4::sign_chunk(data, &self.previous, &self.params())
            .map(|o| o.signature().to_string())
            .unwrap_or_default();
        self.previous.clone_from(&signature);
        signature
    }

    /// Sign the trailer (after the final chunk).
    pub fn sign_trailer(&mut self, trailers: &Headers) -> String {
        let signature = v4::sign_trailer(trailers, &self.previous, &self.params())
            .map(|o| o.signature().to_string())
            .unwrap_or_default();
        self.previous.clone_from(&signature);
        signature
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting `hex;chunk-signature=…\r\n`.
    Header,
    /// Expecting `size` bytes and `\r\n`, to be checked against `signature`.
    Data {
        size: usize,
    },
    /// After the final chunk: trailer lines, then an empty line.
    Trailer,
    Done,
}

/// Checks the agent's chain and writes the re-signed body.
#[derive(Debug)]
pub struct Resigner {
    agent: Chain,
    ours: Chain,
    trailer: bool,
    state: State,
    claimed: String,
    chunks: usize,
    pending: BytesMut,
    trailers: Vec<(String, String)>,
}

impl Resigner {
    /// `trailer`: the body is `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`.
    pub fn new(agent: Chain, ours: Chain, trailer: bool) -> Self {
        Self {
            agent,
            ours,
            trailer,
            state: State::Header,
            claimed: String::new(),
            chunks: 0,
            pending: BytesMut::new(),
            trailers: Vec::new(),
        }
    }

    /// Feed bytes from the agent; whatever is complete and verified is appended to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), ChunkError> {
        self.pending.extend_from_slice(input);
        loop {
            match self.state {
                State::Header => {
                    let Some(line) = self.line()? else {
                        return Ok(());
                    };
                    let (size, signature) = parse_header(&line)?;
                    self.claimed = signature;
                    self.state = State::Data { size };
                }
                // The final chunk of a body with a trailer has no data and so no data CRLF
                // (RFC 9112's chunked grammar): the trailer lines follow its header line.
                State::Data { size: 0 } if self.trailer => {
                    let expected = self.agent.sign_chunk(&Bytes::new());
                    if !bool::from(expected.as_bytes().ct_eq(self.claimed.as_bytes())) {
                        return Err(ChunkError::Signature(self.chunks));
                    }
                    let signature = self.ours.sign_chunk(&Bytes::new());
                    out.extend_from_slice(format!("0;chunk-signature={signature}\r\n").as_bytes());
                    self.chunks += 1;
                    self.state = State::Trailer;
                }
                State::Data { size } => {
                    if self.pending.len() < size + 2 {
                        return Ok(());
                    }
                    let data = self.pending.split_to(size).freeze();
                    if &self.pending[..2] != b"\r\n" {
                        return Err(ChunkError::Malformed(format!(
                            "chunk {} does not end with CRLF",
                            self.chunks
                        )));
                    }
                    self.pending.advance(2);
                    let expected = self.agent.sign_chunk(&data);
                    if !bool::from(expected.as_bytes().ct_eq(self.claimed.as_bytes())) {
                        return Err(ChunkError::Signature(self.chunks));
                    }
                    let signature = self.ours.sign_chunk(&data);
                    out.extend_from_slice(
                        format!("{size:x};chunk-signature={signature}\r\n").as_bytes(),
                    );
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                    self.chunks += 1;
                    self.state = if size == 0 {
                        State::Done
                    } else {
                        State::Header
                    };
                }
                State::Trailer => {
                    let Some(line) = self.line()? else {
                        return Ok(());
                    };
                    if line.is_empty() {
                        self.finish_trailer(out)?;
                        self.state = State::Done;
                        continue;
                    }
                    let (name, value) = line.split_once(':').ok_or_else(|| {
                        ChunkError::Malformed(format!("trailer line {line:?} has no colon"))
                    })?;
                    self.trailers
                        .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                }
                State::Done => {
                    if self.pending.is_empty() {
                        return Ok(());
                    }
                    return Err(ChunkError::Malformed("bytes after the final chunk".into()));
                }
            }
        }
    }

    /// The body ended: it must have ended after its final chunk (and trailer).
    pub fn finish(&self) -> Result<(), ChunkError> {
        if self.state == State::Done && self.pending.is_empty() {
            Ok(())
        } else {
            Err(ChunkError::Truncated)
        }
    }

    fn finish_trailer(&mut self, out: &mut BytesMut) -> Result<(), ChunkError> {
        let mut claimed = None;
        let mut headers = Headers::new();
        for (name, value) in &self.trailers {
            if name == "x-amz-trailer-signature" {
                claimed = Some(value.clone());
            } else {
                headers
                    .try_insert(name.clone(), value.clone())
                    .map_err(|e| ChunkError::Malformed(format!("trailer {name}: {e}")))?;
            }
        }
        let claimed = claimed.ok_or_else(|| {
            ChunkError::Malformed("the trailer has no x-amz-trailer-signature".into())
        })?;
        let expected = self.agent.sign_trailer(&headers);
        if !bool::from(expected.as_bytes().ct_eq(claimed.as_bytes())) {
            return Err(ChunkError::TrailerSignature);
        }
        let signature = self.ours.sign_trailer(&headers);
        for (name, value) in &self.trailers {
            if name != "x-amz-trailer-signature" {
                out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
            }
        }
        out.extend_from_slice(format!("x-amz-trailer-signature:{signature}\r\n\r\n").as_bytes());
        Ok(())
    }

    /// The next CRLF-terminated line, if complete.
    fn line(&mut self) -> Result<Option<String>, ChunkError> {
        match self.pending.windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                let line = self.pending.split_to(end);
                self.pending.advance(2);
                String::from_utf8(line.to_vec())
                    .map(Some)
                    .map_err(|_| ChunkError::Malformed("a line is not UTF-8".into()))
            }
            None if self.pending.len() > MAX_LINE => Err(ChunkError::Malformed(
                "a chunk header line does not end".into(),
            )),
            None => Ok(None),
        }
    }
}

fn parse_header(line: &str) -> Result<(usize, String), ChunkError> {
    let bad = || ChunkError::Malformed(format!("chunk header {line:?}"));
    let (size, signature) = line.split_once(";chunk-signature=").ok_or_else(bad)?;
    let size = usize::from_str_radix(size.trim(), 16).map_err(|_| bad())?;
    if size > MAX_CHUNK {
        return Err(ChunkError::Malformed(format!(
            "a chunk of {size} bytes is larger than {MAX_CHUNK}"
        )));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((size, signature.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";

    fn chain(secret: &str) -> Chain {
        let time = UNIX_EPOCH + Duration::from_secs(1_369_353_600); // 20130524T000000Z
        Chain::new(
            "AKIAIOSFODNN7EXAMPLE",
            secret,
            time,
            "us-east-1",
            "s3",
            SEED,
        )
    }

    /// AWS's published example (sigv4-streaming): a 64 KiB chunk of 'a', a 1 KiB chunk
    /// and the final chunk, with their documented signatures.
    #[test]
    fn matches_the_aws_documented_example() {
        let mut c = chain("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        assert_eq!(
            c.sign_chunk(&Bytes::from(vec![b'a'; 65536])),
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
        );
        assert_eq!(
            c.sign_chunk(&Bytes::from(vec![b'a'; 1024])),
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
        );
        assert_eq!(
            c.sign_chunk(&Bytes::new()),
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
        );
    }

    /// A body in AWS's framing: each chunk's data ends in CRLF; the final (empty) chunk's
    /// header is followed by the trailer lines, or by the closing empty line.
    /// aws-c-auth's trailing-headers vector (tests/test_chunked_signing.c): after the
    /// documented example's final chunk, the trailer `first:1st`, `second:2nd`, `third:3rd`.
    #[test]
    fn matches_aws_c_auths_trailer_signature() {
        let mut c = chain("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        c.sign_chunk(&Bytes::from(vec![b'a'; 65536]));
        c.sign_chunk(&Bytes::from(vec![b'a'; 1024]));
        c.sign_chunk(&Bytes::new());
        let mut headers = Headers::new();
        for (name, value) in [("first", "1st"), ("second", "2nd"), ("third", "3rd")] {
            headers.insert(name, value.to_string());
        }
        assert_eq!(
            c.sign_trailer(&headers),
            "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c"
        );
    }

    /// The framing of aws-c-auth's integration body, piece by piece as that test writes it
    /// (`1;chunk-signature=` … `\r\na\r\n0;chunk-signature=` … `\r\nx-amz-checksum-crc32c:
    /// wdBDMA==\r\nx-amz-trailer-signature:` … `\r\n\r\n`): verified and re-signed, and
    /// the re-signed body keeps that framing.
    #[test]
    fn reads_aws_framing_of_a_signed_trailer() {
        let mut agent = chain("agent-secret");
        let first = agent.sign_chunk(&Bytes::from_static(b"a"));
        let last = agent.sign_chunk(&Bytes::new());
        let mut headers = Headers::new();
        headers.insert("x-amz-checksum-crc32c", "wdBDMA==".to_string());
        let trailer = agent.sign_trailer(&headers);
        let input = format!(
            "1;chunk-signature={first}\r\na\r\n0;chunk-signature={last}\r\nx-amz-checksum-crc32c:wdBDMA==\r\nx-amz-trailer-signature:{trailer}\r\n\r\n"
        );
        for piece in [1, 5, input.len()] {
            let out = resign_in_pieces(input.as_bytes(), piece, true).expect("AWS's framing");
            let text = String::from_utf8(out).expect("text");
            let mut ours = chain("role-secret");
            let first = ours.sign_chunk(&Bytes::from_static(b"a"));
            let last = ours.sign_chunk(&Bytes::new());
            let trailer = ours.sign_trailer(&headers);
            assert_eq!(
                text,
                format!(
                    "1;chunk-signature={first}\r\na\r\n0;chunk-signature={last}\r\nx-amz-checksum-crc32c:wdBDMA==\r\nx-amz-trailer-signature:{trailer}\r\n\r\n"
                ),
                "piece {piece}"
            );
            assert_eq!(text.len(), input.len());
        }
    }

    fn body(secret: &str, chunks: &[&[u8]], trailer: Option<(&str, &str)>) -> Vec<u8> {
        let mut c = chain(secret);
        let mut out = Vec::new();
        for data in chunks.iter().chain([&&b""[..]]) {
            let sig = c.sign_chunk(&Bytes::copy_from_slice(data));
            out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", data.len()).as_bytes());
            out.extend_from_slice(data);
            if !data.is_empty() || trailer.is_none() {
                out.extend_from_slice(b"\r\n");
            }
        }
        if let Some((name, value)) = trailer {
            let mut headers = Headers::new();
            headers.insert(name.to_string(), value.to_string());
            let sig = c.sign_trailer(&headers);
            out.extend_from_slice(
                format!("{name}:{value}\r\nx-amz-trailer-signature:{sig}\r\n\r\n").as_bytes(),
            );
        }
        out
    }

    fn resign_in_pieces(input: &[u8], piece: usize, trailer: bool) -> Result<Vec<u8>, ChunkError> {
        let mut r = Resigner::new(chain("agent-secret"), chain("role-secret"), trailer);
        let mut out = BytesMut::new();
        for part in input.chunks(piece) {
            r.push(part, &mut out)?;
        }
        r.finish()?;
        Ok(out.to_vec())
    }

    #[test]
    fn resigns_whatever_the_pieces_the_bytes_arrive_in() {
        let chunks: [&[u8]; 2] = [&[7u8; 3000], b"tail"];
        let input = body("agent-secret", &chunks, None);
        for piece in [1, 7, 100, input.len()] {
            let out = resign_in_pieces(&input, piece, false).expect("resigned");
            assert_eq!(out, body("role-secret", &chunks, None), "piece {piece}");
            assert_eq!(out.len(), input.len());
        }
        let input = body(
            "agent-secret",
            &chunks,
            Some(("x-amz-checksum-crc32", "AAAAAA==")),
        );
        let out = resign_in_pieces(&input, 13, true).expect("resigned");
        assert_eq!(
            out,
            body(
                "role-secret",
                &chunks,
                Some(("x-amz-checksum-crc32", "AAAAAA=="))
            )
        );
    }

    #[test]
    fn refuses_a_bad_chunk_before_passing_it_on() {
        let chunks: [&[u8]; 2] = [b"first", b"second"];
        let mut input = body("agent-secret", &chunks, None);
        // Corrupt one byte of the second chunk's data.
        let at = input
            .windows(6)
            .position(|w| w == b"second")
            .expect("second");
        input[at] = b'S';
        let mut r = Resigner::new(chain("agent-secret"), chain("role-secret"), false);
        let mut out = BytesMut::new();
        assert_eq!(r.push(&input, &mut out), Err(ChunkError::Signature(1)));
        assert!(out.ends_with(b"first\r\n"), "only the first chunk went out");

        let wrong_key = body("not-the-agent", &chunks, None);
        assert_eq!(
            resign_in_pieces(&wrong_key, 64, false),
            Err(ChunkError::Signature(0))
        );
        let cut = &body("agent-secret", &chunks, None)[..40];
        assert_eq!(resign_in_pieces(cut, 64, false), Err(ChunkError::Truncated));
        let mut tampered = body(
            "agent-secret",
            &chunks,
            Some(("x-amz-checksum-crc32", "AAAAAA==")),
        );
        let at = tampered
            .windows(8)
            .position(|w| w == b"AAAAAA==")
            .expect("crc");
        tampered[at] = b'B';
        assert_eq!(
            resign_in_pieces(&tampered, 64, true),
            Err(ChunkError::TrailerSignature)
        );
        assert!(matches!(
            resign_in_pieces(b"zz;chunk-signature=1\r\n", 64, false),
            Err(ChunkError::Malformed(_))
        ));
    }
}
