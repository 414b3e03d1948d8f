//! Verifying an agent's SigV4 signature: the same computation as signing (aws-sigv4),
//! with the agent's secret, over exactly the headers the agent signed, at the time it
//! signed — then a constant-time comparison. Header signatures and presigned URLs;
//! AWS's 15-minute clock-skew window.
//!
//! Header-form signatures (nearly every request) are computed by `canonical`, which
//! gives aws-sigv4's result without its per-call allocations; presigned URLs and
//! anything `canonical` does not cover go through aws-sigv4 itself.

mod canonical;

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
    SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::request::Request;
use super::scope::Scope;

/// Which implementation computes a signature. [`Signer::Fast`] falls back to aws-sigv4
/// for what it does not cover; [`Signer::AwsSigv4`] is aws-sigv4 alone (the tests
/// compare the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Fast,
    AwsSigv4,
}

/// AWS accepts requests signed up to 15 minutes before or after its clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a signature was refused. `Mismatch` and the rest map to AWS's own error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the request is not signed")]
    Unsigned,
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("signature time {signed} is more than 15 minutes from the proxy's time {now}")]
    Skewed { signed: String, now: String },
    #[error("the presigned URL expired at {0}")]
    Expired(String),
    #[error("the request signature does not match the signature computed with the agent's key")]
    Mismatch,
}

impl VerifyError {
    /// The AWS error code a client understands.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Unsigned => "MissingAuthenticationToken",
            VerifyError::Malformed(_) => "IncompleteSignature",
            VerifyError::Skewed { .. } => "RequestTimeTooSkewed",
            VerifyError::Expired(_) => "AccessDenied",
            VerifyError::Mismatch => "SignatureDoesNotMatch",
        }
    }
}

/// Check that `request`, whose credential scope is `scope`, was signed with `secret`.
pub fn verify(
    request: &Request<'_>,
    scope: &Scope<'_>,
    secret: &str,
    now: SystemTime,
) -> Result<(), VerifyError> {
    verify_with(Signer::Fast, request, scope, secret, now)
}

/// [`verify`] with a chosen implementation.
pub fn verify_with(
    signer: Signer,
    request: &Request<'_>,
    scope: &Scope<'_>,
    secret: &str,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let mut settings = settings_for(scope.service);
    settings.excluded_headers = Some(Vec::new());
    settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;

    let (amz_date, signed_headers, claimed, token) = if scope.presigned {
        let param = |name: &str| request.query_param(name);
        let expires = param("X-Amz-Expires")
            .and_then(|e| e.parse::<u64>().ok())
            .ok_or_else(|| VerifyError::Malformed("X-Amz-Expires is missing".into()))?;
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(expires));
        (
            param("X-Amz-Date")
                .ok_or_else(|| VerifyError::Malformed("X-Amz-Date is missing".into()))?,
            param("X-Amz-SignedHeaders")
                .ok_or_else(|| VerifyError::Malformed("X-Amz-SignedHeaders is missing".into()))?,
            param("X-Amz-Signature")
                .ok_or_else(|| VerifyError::Malformed("X-Amz-Signature is missing".into()))?,
            param("X-Amz-Security-Token"),
        )
    } else {
        let auth = request
            .header("authorization")
            .ok_or(VerifyError::Unsigned)?;
        let field = |name: &str| {
            auth.split(',')
                .map(str::trim)
                .map(|part| {
                    part.strip_prefix("AWS4-HMAC-SHA256")
                        .map_or(part, str::trim)
                })
                .find_map(|part| part.strip_prefix(name))
        };
        (
            request
                .header("x-amz-date")
                .ok_or_else(|| VerifyError::Malformed("X-Amz-Date is missing".into()))?,
            field("SignedHeaders=")
                .ok_or_else(|| VerifyError::Malformed("SignedHeaders is missing".into()))?,
            field("Signature=")
                .ok_or_else(|| VerifyError::Malformed("Signature is missing".into()))?,
            None,
        )
    };

    let signed_at = parse_amz_date(amz_date)?;
    check_time(signed_at, now, settings.expires_in)?;

    // Exactly the headers the agent signed, with the values it sent (a repeated header's
    // values joined, as AWS canonicalises them); x-amz-date is supplied by the signer
    // from the signing time.
    let mut values: Vec<(&str, Cow<'_, str>)> = Vec::new();
    for name in signed_headers
        .split(';')
        .filter(|n| !n.is_empty() && *n != "x-amz-date")
    {
        let value = request
            .header_joined(name)
            .ok_or_else(|| VerifyError::Malformed(format!("signed header {name} is missing")))?;
        values.push((name, value));
    }
    let headers: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_ref())).collect();
    let payload_hash = request.header("x-amz-content-sha256");

    if signer == Signer::Fast
        && !scope.presigned
        && let Some(outcome) = verify_fast(
            request,
            scope,
            &headers,
            payload_hash,
            signed_at,
            secret,
            claimed,
        )
    {
        return outcome;
    }

    let body = match payload_hash {
        Some(hash) => SignableBody::Precomputed(hash.to_string()),
        None if scope.presigned => SignableBody::UnsignedPayload,
        None => SignableBody::Bytes(&request.body),
    };

    let uri = signed_uri(request, scope.presigned);

    let identity: Identity = Credentials::new(
        scope.access_key_id,
        secret,
        token.map(str::to_string),
        None,
        "sigward-agent",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(scope.region)
        .name(scope.service)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?
        .into();
    let signable = SignableRequest::new(request.method, uri, headers.into_iter(), body)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let output = sign(signable, &params).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    matches(output.signature(), claimed)
}

/// The header form of [`verify`] through `canonical`, or `None` for aws-sigv4 to do it.
fn verify_fast(
    request: &Request<'_>,
    scope: &Scope<'_>,
    headers: &[(&str, &str)],
    payload_hash: Option<&str>,
    signed_at: SystemTime,
    secret: &str,
    claimed: &str,
) -> Option<Result<(), VerifyError>> {
    // aws-sigv4 signs the date it formats from the time, not the header's text.
    let amz_date = canonical::format_amz_date(signed_at);
    let body_hash;
    let mut fast = canonical::Canonical {
        method: request.method,
        path: request.raw_path,
        query: request.raw_query,
        headers: Vec::with_capacity(headers.len() + 1),
        payload_hash: match payload_hash {
            Some(hash) => hash,
            None => {
                body_hash = hex::encode(Sha256::digest(&request.body));
                &body_hash
            }
        },
        s3: is_s3(scope.service),
    };
    fast.headers.extend_from_slice(headers);
    fast.headers.push(("x-amz-date", &amz_date));
    let (signature, _) = canonical::sign(
        &mut fast,
        &amz_date,
        signed_at,
        secret,
        scope.region,
        scope.service,
    )?;
    Some(matches(&signature, claimed))
}

/// Constant-time comparison of the computed and the claimed signature.
fn matches(computed: &str, claimed: &str) -> Result<(), VerifyError> {
    if bool::from(computed.as_bytes().ct_eq(claimed.as_bytes())) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The path and query a signature covers: as sent, less a presigned URL's signature
/// parameters (what its signer adds).
pub fn signed_uri(request: &Request<'_>, presigned: bool) -> String {
    let query = if presigned {
        without_signature_params(request.raw_query)
    } else {
        request.raw_query.to_string()
    };
    if query.is_empty() {
        request.raw_path.to_string()
    } else {
        format!("{}?{query}", request.raw_path)
    }
}

/// A presigned URL's query without the parameters its signer added.
pub fn without_signature_params(raw_query: &str) -> String {
    raw_query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            !matches!(
                key,
                "X-Amz-Algorithm"
                    | "X-Amz-Credential"
                    | "X-Amz-Date"
                    | "X-Amz-Expires"
                    | "X-Amz-SignedHeaders"
                    | "X-Amz-Signature"
                    | "X-Amz-Security-Token"
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn check_time(
    signed_at: SystemTime,
    now: SystemTime,
    expires_in: Option<Duration>,
) -> Result<(), VerifyError> {
    let skew = now
        .duration_since(signed_at)
        .unwrap_or_else(|e| e.duration());
    if signed_at > now && skew > MAX_SKEW {
        return Err(VerifyError::Skewed {
            signed: format_time(signed_at),
            now: format_time(now),
        });
    }
    match expires_in {
        // A presigned URL is good from its date until it expires.
        Some(expires) if now > signed_at + expires => {
            Err(VerifyError::Expired(format_time(signed_at + expires)))
        }
        Some(_) => Ok(()),
        None if skew > MAX_SKEW => Err(VerifyError::Skewed {
            signed: format_time(signed_at),
            now: format_time(now),
        }),
        None => Ok(()),
    }
}

/// `20261122T075358Z` → time.
pub fn parse_amz_date(text: &str) -> Result<SystemTime, VerifyError> {
    let bad = || VerifyError::Malformed(format!("X-Amz-Date {text:?} is not YYYYMMDDTHHMMSSZ"));
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, VerifyError> {
        text.get(range)
            .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .map_err(|_| bad())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn format_time(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{secs} (unix seconds)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Ok(UNIX_EPOCH));
        assert_eq!(
            parse_amz_date("20150830T123600Z"),
            Ok(UNIX_EPOCH + Duration::from_secs(1_440_938_160))
        );
        assert_eq!(
            parse_amz_date("20240229T235959Z"),
            Ok(UNIX_EPOCH + Duration::from_secs(1_709_251_199))
        );
        for bad in [
            "",
            "20150830T123600",
            "2015083OT123600Z",
            "20151330T123600Z",
            "20150830T253600Z",
            "2015-08-30T12:36:00Z",
        ] {
            assert!(parse_amz_date(bad).is_err(), "{bad}");
        }
    }
}

fn is_s3(service: &str) -> bool {
    matches!(service, "s3" | "s3express" | "s3-object-lambda")
}

/// S3 signs the path as sent (single encoding, no normalisation); other services
/// double-encode and normalise it.
fn settings_for(service: &str) -> SigningSettings {
    let mut settings = SigningSettings::default();
    (
        settings.percent_encoding_mode,
        settings.uri_path_normalization_mode,
    ) = if is_s3(service) {
        (
            PercentEncodingMode::Single,
            UriPathNormalizationMode::Disabled,
        )
    } else {
        (
            PercentEncodingMode::Double,
            UriPathNormalizationMode::Enabled,
        )
    };
    settings
}

/// The header form of [`resign`] through `canonical`, or `None` for aws-sigv4 to do it.
fn resign_fast(
    request: &Outgoing<'_>,
    service: &str,
    region: &str,
    credentials: &SigningCredentials,
    now: SystemTime,
) -> Option<Signed> {
    let s3 = is_s3(service);
    let amz_date = canonical::format_amz_date(now);
    let payload_hash: Cow<'_, str> = match request.payload_hash {
        Some(hash) => Cow::Borrowed(hash),
        None => Cow::Owned(hex::encode(Sha256::digest(request.body))),
    };
    let send_hash = request.payload_hash.is_some() || s3;
    let (path, query) = request.uri.split_once('?').unwrap_or((request.uri, ""));
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(request.headers.len() + 3);
    for &(name, value) in request.headers {
        // Headers the signer adds itself must not be there already; names must be lowercase.
        if AGENT_SIGNATURE_HEADERS.contains(&name) || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        if !UNSIGNED_HEADERS.contains(&name) {
            headers.push((name, value));
        }
    }
    headers.push(("x-amz-date", &amz_date));
    if send_hash {
        headers.push(("x-amz-content-sha256", &payload_hash));
    }
    if let Some(token) = &credentials.session_token {
        headers.push(("x-amz-security-token", token));
    }
    let mut fast = canonical::Canonical {
        method: request.method,
        path,
        query,
        headers,
        payload_hash: &payload_hash,
        s3,
    };
    let (signature, signed_headers) = canonical::sign(
        &mut fast,
        &amz_date,
        now,
        &credentials.secret_access_key,
        region,
        service,
    )?;
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{}/{region}/{service}/aws4_request, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id,
        &amz_date[..8],
    );
    let mut added = vec![
        ("x-amz-date".to_string(), amz_date.clone()),
        ("authorization".to_string(), authorization),
    ];
    if send_hash {
        added.push((
            "x-amz-content-sha256".to_string(),
            payload_hash.into_owned(),
        ));
    }
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token".to_string(), token.clone()));
    }
    Some(Signed {
        headers: added,
        params: Vec::new(),
        signature,
    })
}

/// Credentials to sign an outgoing request with: the target account's assumed role.
#[derive(Clone)]
pub struct SigningCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for SigningCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the token.
        f.debug_struct("SigningCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Headers an agent's signature leaves on a request; they are removed before re-signing.
pub const AGENT_SIGNATURE_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// An outgoing request to sign: the agent's request without [`AGENT_SIGNATURE_HEADERS`]
/// (and, for a presigned URL, without its `X-Amz-*` signature parameters), with `host`
/// set to the upstream authority.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// Path and query, as they go on the wire.
    pub uri: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    /// The agent's declared `x-amz-content-sha256` (a hex hash, `UNSIGNED-PAYLOAD` or a
    /// `STREAMING-…` mode), kept and sent when present; else the body is hashed.
    pub payload_hash: Option<&'a str>,
    pub body: &'a [u8],
    /// Sign in the query string, valid for this long (re-presigning a presigned URL).
    pub presign: Option<Duration>,
}

/// What signing adds to an outgoing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `authorization`, `x-amz-date`, and `x-amz-security-token` / `x-amz-content-sha256`
    /// where they apply (headers form).
    pub headers: Vec<(String, String)>,
    /// The `X-Amz-*` query parameters (presigned form), to append to the query.
    pub params: Vec<(String, String)>,
    /// The signature: the seed of an aws-chunked body's chunk signatures.
    pub signature: String,
}

/// Sign `request` for `service` in `region` at `now` with `credentials`.
pub fn resign(
    request: &Outgoing<'_>,
    service: &str,
    region: &str,
    credentials: &SigningCredentials,
    now: SystemTime,
) -> Result<Signed, VerifyError> {
    resign_with(Signer::Fast, request, service, region, credentials, now)
}

/// Headers aws-sigv4 never signs by default (it is told to sign the rest).
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];

/// [`resign`] with a chosen implementation.
pub fn resign_with(
    signer: Signer,
    request: &Outgoing<'_>,
    service: &str,
    region: &str,
    credentials: &SigningCredentials,
    now: SystemTime,
) -> Result<Signed, VerifyError> {
    if signer == Signer::Fast
        && request.presign.is_none()
        && let Some(signed) = resign_fast(request, service, region, credentials, now)
    {
        return Ok(signed);
    }
    let Outgoing {
        method,
        uri,
        headers,
        payload_hash,
        body,
        presign,
    } = *request;
    let s3 = is_s3(service);
    let mut settings = settings_for(service);
    let body = match payload_hash {
        Some(hash) => {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            SignableBody::Precomputed(hash.to_string())
        }
        None if presign.is_some() => SignableBody::UnsignedPayload,
        None => SignableBody::Bytes(body),
    };
    if s3 {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    if let Some(expires) = presign {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires);
        settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    }
    let identity: Identity = Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        credentials.session_token.clone(),
        None,
        "sigward-assumed-role",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?
        .into();
    let signable = SignableRequest::new(method, uri, headers.iter().copied(), body)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let (instructions, signature) = sign(signable, &params)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?
        .into_parts();
    let (added, params) = instructions.into_parts();
    Ok(Signed {
        headers: added
            .into_iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect(),
        params: params
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.into_owned()))
            .collect(),
        signature,
    })
}

/// The fast path against aws-sigv4 on every request botocore serializes (scripts/test
/// provides them) and every real client capture in tests/corpus: the same verdict when
/// verifying, the same headers and signature when re-signing, and the fast path taken
/// for nearly all of them (so the agreement is not aws-sigv4 agreeing with itself).
#[cfg(test)]
mod agreement {
    use super::*;
    use crate::aws::request::Request;
    use crate::aws::scope::Scope;

    /// What the model requests and the corpus are signed with.
    const MODEL_SECRET: &str = "not-a-secret";
    const CORPUS_SECRET: &str = "capture-secret-not-real";

    fn model_requests() -> Vec<Vec<u8>> {
        let Some(path) = std::env::var_os("SIGWARD_MODEL_REQUESTS") else {
            assert!(
                std::env::var_os("SIGWARD_REQUIRE_MODEL_CHECK").is_none(),
                "SIGWARD_MODEL_REQUESTS is not set: run the suite with scripts/test"
            );
            eprintln!("model requests skipped: set SIGWARD_MODEL_REQUESTS (scripts/test does)");
            return Vec::new();
        };
        let text = std::fs::read_to_string(path).expect("read the model requests");
        text.lines()
            .filter_map(|line| {
                let case: serde_json::Value = serde_json::from_str(line).expect("JSON line");
                let request = case.get("request")?.as_str()?;
                Some(
                    data_encoding::BASE64
                        .decode(request.as_bytes())
                        .expect("base64"),
                )
            })
            .collect()
    }

    fn corpus() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("corpus")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "http"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect()
    }

    #[derive(Default)]
    struct Tally {
        cases: usize,
        verified_fast: usize,
        resigned_fast: usize,
        disagreements: Vec<String>,
    }

    fn compare(raw: &[u8], secret: &str, tally: &mut Tally) {
        let Ok(request) = Request::parse(raw) else {
            return;
        };
        let Ok(Some(scope)) = Scope::of(&request) else {
            return;
        };
        let Some(signed_at) = request
            .header("x-amz-date")
            .or_else(|| request.query_param("X-Amz-Date"))
            .and_then(|d| parse_amz_date(d).ok())
        else {
            return;
        };
        tally.cases += 1;
        let line = String::from_utf8_lossy(raw.split(|b| *b == b'\n').next().unwrap_or_default())
            .trim_end()
            .to_string();

        for (secret, expect_ok) in [(secret, true), ("a-wrong-secret", false)] {
            let fast = verify_with(Signer::Fast, &request, &scope, secret, signed_at);
            let library = verify_with(Signer::AwsSigv4, &request, &scope, secret, signed_at);
            if fast != library || fast.is_ok() != expect_ok {
                tally.disagreements.push(format!(
                    "verify {line}: fast {fast:?}, aws-sigv4 {library:?}"
                ));
            }
        }
        if !scope.presigned {
            let auth = request.header("authorization").unwrap_or_default();
            let list = auth
                .split("SignedHeaders=")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap_or_default();
            let headers: Option<Vec<(&str, &str)>> = list
                .split(';')
                .filter(|n| *n != "x-amz-date")
                .map(|n| request.header(n).map(|v| (n, v)))
                .collect();
            let claimed = auth.rsplit("Signature=").next().unwrap_or_default();
            if let Some(headers) = headers
                && verify_fast(
                    &request,
                    &scope,
                    &headers,
                    request.header("x-amz-content-sha256"),
                    signed_at,
                    secret,
                    claimed,
                )
                .is_some()
            {
                tally.verified_fast += 1;
            }
        }

        // Re-signing as the pipeline does: the agent's headers (lowercase, as hyper gives
        // them) minus its signature and Host, then the upstream host.
        let names: Vec<String> = request
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        let mut headers: Vec<(&str, &str)> = names
            .iter()
            .zip(&request.headers)
            .filter(|(n, _)| !AGENT_SIGNATURE_HEADERS.contains(&n.as_str()) && *n != "host")
            .filter_map(|(n, (_, v))| std::str::from_utf8(v).ok().map(|v| (n.as_str(), v)))
            .collect();
        headers.push(("host", "upstream.example.com"));
        let uri = signed_uri(&request, scope.presigned);
        let outgoing = Outgoing {
            method: request.method,
            uri: &uri,
            headers: &headers,
            payload_hash: request.header("x-amz-content-sha256"),
            body: &request.body,
            presign: None,
        };
        let now = signed_at + Duration::from_secs(61);
        for token in [None, Some("a-session-token".to_string())] {
            let role = SigningCredentials {
                access_key_id: "ASIAROLEKEY000000000".into(),
                secret_access_key: "role-secret".into(),
                session_token: token,
            };
            let [fast, library] = [Signer::Fast, Signer::AwsSigv4].map(|signer| {
                resign_with(signer, &outgoing, scope.service, scope.region, &role, now)
            });
            if fast != library {
                tally.disagreements.push(format!(
                    "resign {line}: fast {fast:?}, aws-sigv4 {library:?}"
                ));
            }
            if role.session_token.is_none()
                && resign_fast(&outgoing, scope.service, scope.region, &role, now).is_some()
            {
                tally.resigned_fast += 1;
            }
        }
    }

    fn check(name: &str, requests: &[Vec<u8>], secret: &str, minimum: usize) {
        let mut tally = Tally::default();
        for raw in requests {
            compare(raw, secret, &mut tally);
        }
        eprintln!(
            "{name}: {} signed requests, {} verified and {} re-signed on the fast path",
            tally.cases, tally.verified_fast, tally.resigned_fast
        );
        assert!(tally.cases >= minimum, "{name}: only {} cases", tally.cases);
        assert!(
            tally.disagreements.is_empty(),
            "{name}: {} disagreements, e.g.:\n{}",
            tally.disagreements.len(),
            tally.disagreements[..tally.disagreements.len().min(5)].join("\n")
        );
        // Paths with dot segments or `//` and presigned URLs go to aws-sigv4; that is
        // a few percent at most.
        assert!(
            tally.verified_fast * 100 >= tally.cases * 90,
            "{name}: the fast path verified only {} of {}",
            tally.verified_fast,
            tally.cases
        );
        assert!(
            tally.resigned_fast * 100 >= tally.cases * 90,
            "{name}: the fast path re-signed only {} of {}",
            tally.resigned_fast,
            tally.cases
        );
    }

    #[test]
    fn the_fast_path_agrees_with_aws_sigv4_on_every_model_operation() {
        let requests = model_requests();
        if !requests.is_empty() {
            check("model", &requests, MODEL_SECRET, 15_000);
        }
    }

    #[test]
    fn the_fast_path_agrees_with_aws_sigv4_on_real_client_requests() {
        check("corpus", &corpus(), CORPUS_SECRET, 80);
    }
}
