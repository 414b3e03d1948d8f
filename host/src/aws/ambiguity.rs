//! What makes a request mean more than one thing. sigward judges a call from the bytes
//! it received; AWS acts on the same bytes. Wherever two readers could pick different
//! readings — a repeated header, an operation named twice, a body whose media type says
//! one protocol while its selector says another — the request is refused here, before
//! any reading is judged. Real SDKs send none of these shapes, so refusing them costs
//! nothing legitimate.

use super::UnderstandError;
use super::request::Request;

/// Headers that may legitimately repeat: they select no operation and no resource.
const REPEATABLE: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "forwarded",
    "via",
    "x-forwarded-for",
];

/// Headers some HTTP stacks read as the method: the request would have two.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The body's media type, as far as understanding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    None,
    Form,
    Json,
    Cbor,
    Other,
    /// Not one media type (`a/b, c/d`, `nonsense`): what a JSON, query or CBOR call's
    /// body is cannot be told, so such a call is refused.
    Invalid,
}

fn ambiguous(why: String) -> UnderstandError {
    UnderstandError::Ambiguous(why)
}

/// Every header appears at most once (but for the few in `REPEATABLE`), and every
/// header value is text: a second `X-Amz-Target`, `Content-Type` or `Host`, or a value
/// sigward cannot read, is a second possible meaning.
pub fn check_headers(request: &Request<'_>) -> Result<(), UnderstandError> {
    for (i, (name, value)) in request.headers.iter().enumerate() {
        if METHOD_OVERRIDES
            .iter()
            .any(|o| name.eq_ignore_ascii_case(o))
        {
            return Err(ambiguous(format!(
                "header {} asks for another method than the request's",
                name.to_ascii_lowercase()
            )));
        }
        if std::str::from_utf8(value).is_err() {
            return Err(ambiguous(format!("header {name} is not UTF-8 text")));
        }
        if REPEATABLE.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            continue;
        }
        if request.headers[..i]
            .iter()
            .any(|(earlier, _)| earlier.eq_ignore_ascii_case(name))
        {
            return Err(ambiguous(format!(
                "header {} appears more than once",
                name.to_ascii_lowercase()
            )));
        }
    }
    Ok(())
}

/// No query parameter that selects something is given twice: SigV4's own (`X-Amz-*`:
/// which credential, which signature) and, for a REST call, the keys its operation's
/// template and required members name (`uploadId`, `list-type`, `uploads`…). Other
/// REST query keys may repeat: that is how REST list parameters are sent.
pub fn check_query<'k>(
    request: &Request<'_>,
    selecting: impl IntoIterator<Item = &'k str>,
) -> Result<(), UnderstandError> {
    let count = |key: &str| {
        request
            .query
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .count()
    };
    for (key, _) in &request.query {
        let lower = key.to_ascii_lowercase();
        if lower.starts_with("x-amz-") && count(key) > 1 {
            return Err(ambiguous(format!(
                "query parameter {key} appears more than once"
            )));
        }
    }
    for key in selecting {
        if count(key) > 1 {
            return Err(ambiguous(format!(
                "query parameter {key} appears more than once"
            )));
        }
    }
    Ok(())
}

/// The media type of the body, read strictly and ignoring case: one `type/subtype`,
/// optionally followed by `;` parameters. Anything else (a list of types) is
/// [`Media::Invalid`]: REST calls carry user content types, the other protocols refuse it.
pub fn media(request: &Request<'_>) -> Media {
    let Some(value) = request.header("content-type") else {
        return Media::None;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let (kind, subtype) = essence.split_once('/').unwrap_or((essence, ""));
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if !token(kind) || !token(subtype) || value.contains(',') {
        return Media::Invalid;
    }
    // sigward reads bodies as UTF-8; a body in another charset would read differently.
    let other_charset = value.split(';').skip(1).any(|param| {
        param.split_once('=').is_some_and(|(name, charset)| {
            name.trim().eq_ignore_ascii_case("charset")
                && !charset
                    .trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("utf-8")
        })
    });
    if other_charset {
        return Media::Invalid;
    }
    let essence = essence.to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Media::Form,
        "application/x-amz-json-1.0" | "application/x-amz-json-1.1" | "application/json" => {
            Media::Json
        }
        "application/cbor" => Media::Cbor,
        _ => Media::Other,
    }
}

/// The operation a query-protocol request names with `Action`: in the URL query or the
/// form body, spelled exactly so, once. `X-Amz-Target` beside any `Action` is refused.
pub fn action<'r>(
    request: &'r Request<'_>,
    form: &'r [(String, String)],
) -> Result<Option<&'r str>, UnderstandError> {
    let in_query = request
        .query
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("action"))
        .map(|(k, v)| (k.as_ref(), v.as_ref()));
    let in_form = form
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("action"))
        .map(|(k, v)| (k.as_str(), v.as_str()));
    let query_count = in_query.clone().count();
    let all: Vec<(&str, &str)> = in_query.chain(in_form).collect();
    if all.is_empty() {
        return Ok(None);
    }
    if request.header("x-amz-target").is_some() {
        return Err(ambiguous(
            "X-Amz-Target and an Action parameter name the operation twice".into(),
        ));
    }
    if query_count > 0 && query_count < all.len() {
        return Err(ambiguous(
            "Action is in both the URL query and the form body".into(),
        ));
    }
    if all.len() > 1 {
        return Err(ambiguous(format!(
            "Action appears {} times ({})",
            all.len(),
            all.iter().map(|(_, v)| *v).collect::<Vec<_>>().join(", ")
        )));
    }
    let (key, value) = all[0];
    if key != "Action" {
        return Err(ambiguous(format!(
            "the operation parameter is spelled {key:?}, not \"Action\""
        )));
    }
    Ok(Some(value))
}

/// No key twice, ignoring case: a reader that takes the first and one that takes the
/// last would judge and run different calls.
pub fn unique_keys<'k>(
    keys: impl IntoIterator<Item = &'k str>,
    what: &str,
) -> Result<(), UnderstandError> {
    let mut seen: Vec<&str> = Vec::new();
    for key in keys {
        if let Some(earlier) = seen.iter().find(|s| s.eq_ignore_ascii_case(key)) {
            let detail = if *earlier == key {
                format!("{what} has the key {key:?} twice")
            } else {
                format!("{what} has the keys {earlier:?} and {key:?}")
            };
            return Err(ambiguous(detail));
        }
        seen.push(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(head: &str) -> Vec<u8> {
        format!("{head}\r\n\r\n").into_bytes()
    }

    #[test]
    fn repeated_headers_are_refused_unless_harmless() {
        for (head, refused) in [
            (
                "POST / HTTP/1.1\r\nHost: a\r\nX-Amz-Target: a\r\nx-amz-target: b",
                true,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nHost: b", true),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Type: a/b\r\nContent-type: c/d",
                true,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nAccept: a/b\r\nAccept: c/d",
                false,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nX-Amz-Target: a", false),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nX-HTTP-Method-Override: DELETE",
                true,
            ),
        ] {
            let bytes = request(head);
            let parsed = Request::parse(&bytes).expect("parse");
            assert_eq!(check_headers(&parsed).is_err(), refused, "{head:?}");
        }
    }

    #[test]
    fn media_types_are_read_ignoring_case_and_lists_are_refused() {
        for (value, want) in [
            (
                "application/x-www-form-urlencoded; charset=utf-8",
                Some(Media::Form),
            ),
            ("APPLICATION/X-WWW-FORM-URLENCODED", Some(Media::Form)),
            ("Application/X-Amz-Json-1.0", Some(Media::Json)),
            ("application/cbor", Some(Media::Cbor)),
            (
                "application/x-www-form-urlencoded; charset=\"UTF-8\"",
                Some(Media::Form),
            ),
            ("application/x-www-form-urlencoded; charset=utf-16", None),
            ("application/x-amz-json-1.1; charset=iso-8859-1", None),
            ("text/xml", Some(Media::Other)),
            (
                "application/x-amz-json-1.0, application/x-www-form-urlencoded",
                None,
            ),
            ("application/x-www-form-urlencoded,", None),
            ("", None),
            ("nonsense", None),
        ] {
            let bytes = request(&format!("POST / HTTP/1.1\r\nContent-Type: {value}"));
            let parsed = Request::parse(&bytes).expect("parse");
            assert_eq!(media(&parsed), want.unwrap_or(Media::Invalid), "{value:?}");
        }
    }

    #[test]
    fn the_operation_is_named_once() {
        let form = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        let parse = |head: &str| request(head);
        let plain = parse("POST /?Action=DescribeInstances HTTP/1.1\r\nHost: a");
        let plain = Request::parse(&plain).expect("parse");
        assert_eq!(
            action(&plain, &[]).expect("one action"),
            Some("DescribeInstances")
        );
        assert!(action(&plain, &form(&[("Action", "DescribeInstances")])).is_err());
        assert!(action(&plain, &form(&[("Action", "TerminateInstances")])).is_err());

        let none = parse("POST / HTTP/1.1\r\nHost: a");
        let none = Request::parse(&none).expect("parse");
        assert_eq!(
            action(&none, &form(&[("Action", "ListUsers")])).expect("one"),
            Some("ListUsers")
        );
        assert!(
            action(
                &none,
                &form(&[("Action", "ListUsers"), ("Action", "CreateUser")])
            )
            .is_err()
        );
        assert!(action(&none, &form(&[("action", "CreateUser")])).is_err());

        let target = parse("POST / HTTP/1.1\r\nHost: a\r\nX-Amz-Target: AmazonSQS.ListQueues");
        let target = Request::parse(&target).expect("parse");
        assert_eq!(action(&target, &[]).expect("no action"), None);
        assert!(action(&target, &form(&[("Action", "DeleteQueue")])).is_err());
    }

    #[test]
    fn selecting_query_parameters_are_given_once() {
        let parse = |target: &str| request(&format!("GET {target} HTTP/1.1\r\nHost: a"));
        let twice = parse("/b?list-type=2&list-type=1");
        let twice = Request::parse(&twice).expect("parse");
        assert!(check_query(&twice, ["list-type"]).is_err());
        assert!(check_query(&twice, ["prefix"]).is_ok());
        let signed = parse("/b/k?X-Amz-Credential=a&x-amz-credential=b");
        let signed = Request::parse(&signed).expect("parse");
        assert!(check_query(&signed, []).is_err());
        let list = parse("/things?id=1&id=2");
        let list = Request::parse(&list).expect("parse");
        assert!(check_query(&list, ["kind"]).is_ok());
    }

    #[test]
    fn keys_are_unique_ignoring_case() {
        assert!(unique_keys(["TableName", "Key"], "the body").is_ok());
        assert!(unique_keys(["TableName", "TableName"], "the body").is_err());
        assert!(unique_keys(["TableName", "tablename"], "the body").is_err());
    }
}
