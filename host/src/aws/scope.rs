//! The SigV4 credential scope: who signed (access key id) and for which region and
//! service. It is the truth for the service and region; the host must agree with it.

use super::request::Request;

/// `Credential=<key>/<date>/<region>/<service>/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
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

impl Scope {
    /// The request's scope, `Ok(None)` when it is not signed at all (some operations,
    /// such as cognito-identity GetId, are unsigned by design).
    pub fn of(request: &Request) -> Result<Option<Scope>, ScopeError> {
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

    fn parse(credential: &str, presigned: bool) -> Result<Scope, ScopeError> {
        let parts: Vec<&str> = credential.split('/').collect();
        match parts.as_slice() {
            [key, date, region, service, "aws4_request"]
                if !key.is_empty() && !region.is_empty() && !service.is_empty() =>
            {
                Ok(Scope {
                    access_key_id: key.to_string(),
                    date: date.to_string(),
                    region: region.to_string(),
                    service: service.to_string(),
                    presigned,
                })
            }
            _ => Err(ScopeError::Malformed(credential.to_string())),
        }
    }
}
