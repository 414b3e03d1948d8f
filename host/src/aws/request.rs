//! One HTTP/1.1 request as it arrives after TLS termination, parsed into the parts the
//! facet is built from. Bodies are decoded only as far as understanding needs: chunked
//! framing removed, gzip inflated (bounded); aws-chunked payloads (S3 uploads) are left
//! as they are, since nothing in an S3 facet comes from the object's bytes. A body that
//! is not inspected says why ([`Unread`]): for the protocols whose body names the
//! operation and its resources, understanding refuses such a request rather than judge
//! it as if the body were empty.

use std::borrow::Cow;
use std::io::Read as _;

/// Bodies up to this size are read whole even when they are S3's and could stream
/// (small uploads are understood from their bytes like any other call).
pub const MAX_BODY: usize = 1 << 20;
/// The largest body understanding parses (after gzip): DynamoDB takes 16 MB requests,
/// and SQS's 1 MiB messages grow when form-encoded. A larger body is not inspected.
pub const MAX_UNDERSTOOD_BODY: usize = 24 << 20;
const MAX_HEADERS: usize = 128;

/// A parsed request, borrowing from the bytes it was parsed from: understanding a
/// request sits on every call's path and should not copy what it only reads. Header
/// names keep their case and are compared ignoring it; the query is decoded, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent, percent-encoded, without the query string.
    pub raw_path: &'a str,
    /// The query string as sent (empty if none).
    pub raw_query: &'a str,
    pub query: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Raw header values: most are never read, so UTF-8 is checked only on access.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// The body with transfer and gzip encodings removed (empty if not inspected).
    pub body: Cow<'a, [u8]>,
    /// Why the body was not inspected, if it was not.
    pub unread: Option<Unread>,
}

/// Why a request's body is not in [`Request::body`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unread {
    #[error("the body is aws-chunked")]
    AwsChunked,
    #[error("the body is larger than {MAX_UNDERSTOOD_BODY} bytes")]
    TooLarge,
    #[error("the gzip body does not inflate to at most {MAX_UNDERSTOOD_BODY} bytes")]
    Gzip,
    #[error("the body's Content-Encoding {0:?} is not one sigward decodes")]
    Encoding(String),
    #[error("the body is {got} bytes where Content-Length says {declared}")]
    Truncated { declared: usize, got: usize },
    #[error("the body streams past sigward ({0})")]
    Streamed(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("not an HTTP/1.1 request: {0}")]
    Malformed(String),
    #[error("incomplete request: the headers do not end")]
    Incomplete,
    #[error("malformed chunked body: {0}")]
    Chunked(String),
}

impl<'a> Request<'a> {
    /// Parse a complete request (head and body) from its bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RequestError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Err(RequestError::Incomplete),
            Err(e) => return Err(RequestError::Malformed(e.to_string())),
        };
        let method = req.method.unwrap_or_default();
        let target = req.path.unwrap_or_default();
        if !target.starts_with('/') {
            return Err(RequestError::Malformed(format!(
                "request target {target:?} is not origin-form"
            )));
        }
        let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
        let query = decode_query(raw_query);
        let headers = req.headers.iter().map(|h| (h.name, h.value)).collect();
        let mut request = Request {
            method,
            raw_path,
            raw_query,
            query,
            headers,
            body: Cow::Borrowed(&[]),
            unread: None,
        };
        request.body = request.decode_body(&bytes[head_len..])?;
        Ok(request)
    }

    /// A request whose head an HTTP server already parsed: `target` is the origin-form
    /// path and query, `body` the bytes after transfer decoding as the agent signed them
    /// (empty when the body is streamed rather than read). [`Request::with_decoded_body`]
    /// removes content encodings for understanding, as [`Request::parse`] does.
    pub fn from_parts(
        method: &'a str,
        target: &'a str,
        headers: Vec<(&'a str, &'a [u8])>,
        body: &'a [u8],
    ) -> Self {
        let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method,
            raw_path,
            raw_query,
            query: decode_query(raw_query),
            headers,
            body: Cow::Borrowed(body),
            unread: None,
        }
    }

    /// The request with its body's content encodings removed (gzip inflated, bounded;
    /// aws-chunked or oversized bodies not inspected).
    pub fn with_decoded_body(mut self) -> Self {
        let body = std::mem::take(&mut self.body);
        if self.unread.is_none()
            && let Some(declared) = self.content_length()
            && declared != body.len()
            && !self.is_transfer_chunked()
        {
            self.unread = Some(Unread::Truncated {
                declared,
                got: body.len(),
            });
            return self;
        }
        self.body = self.decode_content(body);
        self
    }

    /// The request with its body marked as not read (it streams instead).
    pub fn with_unread_body(mut self, why: &'static str) -> Self {
        self.body = Cow::Borrowed(&[]);
        self.unread = Some(Unread::Streamed(why));
        self
    }

    /// Whether the request carries a body at all (read or not).
    pub fn has_body(&self) -> bool {
        !self.body.is_empty()
            || self.is_transfer_chunked()
            || self.content_length().is_some_and(|l| l > 0)
    }

    fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
    }

    fn is_transfer_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|te| {
            te.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("chunked"))
        })
    }

    /// The first value of a header (any case), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        let (_, value) = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        std::str::from_utf8(value).ok().map(str::trim)
    }

    /// Every value of a header (any case), trimmed and joined with `,` as SigV4's
    /// canonical request has them; `None` if absent or a value is not UTF-8.
    pub fn header_joined(&self, name: &str) -> Option<Cow<'a, str>> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| std::str::from_utf8(v).ok().map(str::trim));
        let first = values.next()??;
        let mut joined: Option<String> = None;
        for value in values {
            let text = joined.get_or_insert_with(|| first.to_string());
            text.push(',');
            text.push_str(value?);
        }
        Some(joined.map_or(Cow::Borrowed(first), Cow::Owned))
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The `Host` header without its port.
    pub fn host(&self) -> &'a str {
        strip_port(self.header("host").unwrap_or_default())
    }

    /// The percent-decoded path.
    pub fn path(&self) -> String {
        percent_encoding::percent_decode_str(self.raw_path)
            .decode_utf8_lossy()
            .into_owned()
    }

    fn decode_body(&mut self, rest: &'a [u8]) -> Result<Cow<'a, [u8]>, RequestError> {
        let body: Cow<'a, [u8]> = if self.is_transfer_chunked() {
            Cow::Owned(dechunk(rest)?)
        } else {
            let len = self.content_length().unwrap_or(rest.len());
            if len > rest.len() {
                self.unread = Some(Unread::Truncated {
                    declared: len,
                    got: rest.len(),
                });
                return Ok(Cow::Borrowed(&[]));
            }
            Cow::Borrowed(&rest[..len])
        };
        Ok(self.decode_content(body))
    }

    /// Remove content encodings understanding can see through: one gzip layer is
    /// inflated (bounded). An aws-chunked, oversized or otherwise encoded body is not
    /// inspected: it is left empty and [`Request::unread`] says why.
    fn decode_content(&mut self, body: Cow<'a, [u8]>) -> Cow<'a, [u8]> {
        let mut gzip = false;
        for encoding in self
            .header("content-encoding")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let unread = if encoding.eq_ignore_ascii_case("aws-chunked") {
                Some(Unread::AwsChunked)
            } else if encoding.eq_ignore_ascii_case("gzip") && !gzip {
                gzip = true;
                None
            } else if encoding.eq_ignore_ascii_case("identity") {
                None
            } else {
                Some(Unread::Encoding(encoding.to_string()))
            };
            if unread.is_some() {
                self.unread = unread;
                return Cow::Borrowed(&[]);
            }
        }
        if body.len() > MAX_UNDERSTOOD_BODY {
            self.unread = Some(Unread::TooLarge);
            return Cow::Borrowed(&[]);
        }
        if gzip {
            let mut inflated = Vec::new();
            // A bounded read: a gzip bomb stops at the limit and is then not inspected.
            let read = flate2::read::GzDecoder::new(body.as_ref())
                .take(MAX_UNDERSTOOD_BODY as u64 + 1)
                .read_to_end(&mut inflated);
            if read.is_err() || inflated.len() > MAX_UNDERSTOOD_BODY {
                self.unread = Some(Unread::Gzip);
                return Cow::Borrowed(&[]);
            }
            return Cow::Owned(inflated);
        }
        body
    }
}

/// A `Host` value (or CONNECT authority) without its port: `name:443` or `[::1]:443`; a
/// bare IPv6 address has colons but no port.
pub fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

/// Remove HTTP/1.1 chunked framing (trailers are dropped).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, RequestError> {
    let mut body = Vec::new();
    loop {
        let (consumed, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => {
                return Err(RequestError::Chunked(
                    "a chunk size line does not end".into(),
                ));
            }
            Err(_) => return Err(RequestError::Chunked("invalid chunk size".into())),
        };
        rest = &rest[consumed..];
        if size == 0 {
            return Ok(body);
        }
        let size =
            usize::try_from(size).map_err(|_| RequestError::Chunked("chunk too large".into()))?;
        if rest.len() < size.saturating_add(2) {
            return Err(RequestError::Chunked(format!(
                "a chunk of {size} bytes is cut short"
            )));
        }
        if body.len() + size <= MAX_UNDERSTOOD_BODY + 1 {
            body.extend_from_slice(&rest[..size]);
        }
        rest = &rest[size + 2..];
    }
}

/// Decode an `application/x-www-form-urlencoded` string (a query or a form body).
pub fn decode_query(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    form_urlencoded::parse(query.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_head_query_and_length_body() {
        let raw = b"POST /a%20b/c?x=1&y=two%2F HTTP/1.1\r\nHost: ec2.us-east-1.amazonaws.com:443\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
        let req = Request::parse(raw).expect("parse");
        assert_eq!(req.method, "POST");
        assert_eq!(req.raw_path, "/a%20b/c");
        assert_eq!(req.path(), "/a b/c");
        assert_eq!(
            req.query,
            [("x".into(), "1".into()), ("y".into(), "two/".into())]
        );
        assert_eq!(req.host(), "ec2.us-east-1.amazonaws.com");
        assert_eq!(req.body.as_ref(), b"hello");
    }

    #[test]
    fn removes_chunked_framing_and_drops_aws_chunked_payloads() {
        let raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(
            Request::parse(raw).expect("parse").body.as_ref(),
            b"hello world"
        );
        let raw = b"PUT /b/k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Encoding: aws-chunked\r\n\r\nd\r\n3\r\nabc\r\n0\r\n\r\n\r\n0\r\n\r\n";
        assert!(Request::parse(raw).expect("parse").body.is_empty());
    }

    #[test]
    fn inflates_gzip_bodies() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"Action=PutMetricData").expect("gzip");
        let body = gz.finish().expect("gzip");
        let mut raw = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        assert_eq!(
            Request::parse(&raw).expect("parse").body.as_ref(),
            b"Action=PutMetricData"
        );
    }

    #[test]
    fn rejects_what_is_not_a_request() {
        assert_eq!(
            Request::parse(b"GET / HTTP/1.1\r\nHost: h\r\n"),
            Err(RequestError::Incomplete)
        );
        assert!(matches!(
            Request::parse(b"\x00\x01garbage\r\n\r\n"),
            Err(RequestError::Malformed(_))
        ));
        assert!(matches!(
            Request::parse(b"GET http://x/ HTTP/1.1\r\n\r\n"),
            Err(RequestError::Malformed(_))
        ));
        let cut = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nabc";
        assert!(matches!(Request::parse(cut), Err(RequestError::Chunked(_))));
    }
}
