//! The SigV4 credential scope: who signed (access key id) and for which region and
//! service. It is the truth for the service and region; the host must agree with it.

use super::request::Request;

/// `Credential=<key>/<date>/<region>/<service>/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope<'a> {
    pub access_key_id: &'a str,
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    /// Signed in the query string (a presigned URL) rather than the `Authorization` header.
    pub presigned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("malformed credential scope {0:?}")]
    Malformed(String),
    #[error("SigV2 signatures are not supported (sign with SigV4: signature_version='s3v4')")]
    SigV2,
    #[error("unsupported Authorization scheme {0:?}")]
    Scheme(String),
}

impl<'r> Scope<'r> {
    /// The request's scope, `Ok(None)` when it is not signed at all (some operations,
    /// such as cognito-identity GetId, are unsigned by design).
    pub fn of<'a: 'r>(request: &'r Request<'a>) -> Result<Option<Scope<'r>>, ScopeError> {
        if let Some(auth) = request.header("authorization") {
            let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256") else {
                if auth.starts_with("AWS ") {
                    return Err(ScopeError::SigV2);
                }
                return Err(ScopeError::Scheme(
                    auth.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                ));
            };
            let credential = rest
                .split(',')
                .map(str::trim)
                .find_map(|part| part.strip_prefix("Credential="))
                .ok_or_else(|| ScopeError::Malformed(auth.to_string()))?;
            return Self::parse(credential, false).map(Some);
        }
        if let Some(credential) = request.query_param("X-Amz-Credential") {
            return Self::parse(credential, true).map(Some);
        }
        if request.query_param("AWSAccessKeyId").is_some()
            && request.query_param("Signature").is_some()
        {
            return Err(ScopeError::SigV2);
        }
        Ok(None)
    }

    fn parse(credential: &'r str, presigned: bool) -> Result<Scope<'r>, ScopeError> {
        let mut parts = credential.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(key), Some(date), Some(region), Some(service), Some("aws4_request"), None)
                if !key.is_empty() && !region.is_empty() && !service.is_empty() =>
            {
                Ok(Scope {
                    access_key_id: key,
                    date,
                    region,
                    service,
                    presigned,
                })
            }
            _ => Err(ScopeError::Malformed(credential.to_string())),
        }
    }
}
