//! The differential harness: real requests (the corpus of captured client requests and,
//! under scripts/test, every JSON, query and EC2 operation of AWS's models as botocore
//! serializes it) are mutated the way an attacker would — the operation named a second
//! time (in the URL, the body, a header), a header repeated with another value, the
//! Content-Type swapped or re-cased, a JSON key repeated, headers reordered — and each
//! variant is read by sigward and by independent readers of the same bytes:
//!
//! - **moto**: its dispatch (`moto/core/responses.py`, `setup_class` and `_get_action`,
//!   moto 5.x), transcribed: the form body's first values, else the URL query, else the
//!   body parsed as a query string whatever its media type; `Action` before
//!   `X-Amz-Target`;
//! - **URL first**: the URL's `Action`, then the form body's, then the target — the
//!   reading sigward itself used before the one-meaning rule;
//! - **last wins**: the last value of everything (`Action` in the body, else the URL,
//!   else the last `X-Amz-Target`; the last of a repeated JSON key), as a
//!   dictionary-building parser reads;
//! - **target first**: `X-Amz-Target` (last value) before any `Action`;
//! - **botocore**: the operation the original request was serialized for.
//!
//! The property: whenever sigward understands a variant, every reader that can name an
//! operation names sigward's, and a repeated JSON key names the same table first and
//! last; so every variant where the readers disagree is refused. Variants that keep the
//! meaning (reordered headers, a re-cased or charset-qualified media type) must still be
//! understood as the original.

use std::sync::OnceLock;

use data_encoding::BASE64;
use proptest::prelude::*;
use sigward::aws::account::AccountNames;
use sigward::aws::request::Request;
use sigward::aws::tables::Protocol;
use sigward::aws::understand_call;

/// One request, taken apart so that it can be put back together changed.
#[derive(Debug, Clone)]
struct Raw {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// botocore's (or the capture's) operation.
    operation: String,
}

impl Raw {
    fn parse(bytes: &[u8], operation: String) -> Option<Raw> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(head) = request.parse(bytes).ok()? else {
            return None;
        };
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|h| {
                Some((
                    h.name.to_string(),
                    String::from_utf8(h.value.to_vec()).ok()?,
                ))
            })
            .collect::<Option<_>>()?;
        if headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        {
            return None;
        }
        Some(Raw {
            method: request.method?.to_string(),
            target: request.path?.to_string(),
            headers,
            body: bytes[head..].to_vec(),
            operation,
        })
    }

    fn bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (name, value) in &self.headers {
            if !name.eq_ignore_ascii_case("content-length") {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn is_form(&self) -> bool {
        self.values("content-type").first().is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    }

    fn url_pairs(&self) -> Vec<(String, String)> {
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn body_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

fn first<'p>(pairs: &'p [(String, String)], key: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn last<'p>(pairs: &'p [(String, String)], key: &str) -> Option<&'p str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn target_op(target: &str) -> String {
    target.rsplit('.').next().unwrap_or_default().to_string()
}

/// moto's reading of the operation (see the module doc).
fn moto(raw: &Raw) -> Option<String> {
    let form = if raw.is_form() {
        raw.body_pairs()
    } else {
        Vec::new()
    };
    let querystring: Vec<(String, String)> = if !form.is_empty() {
        // werkzeug's MultiDict.items(): each key once, its first value.
        let mut seen: Vec<(String, String)> = Vec::new();
        for (k, v) in form {
            if !seen.iter().any(|(s, _)| *s == k) {
                seen.push((k, v));
            }
        }
        seen
    } else if !raw.url_pairs().is_empty() {
        raw.url_pairs()
    } else if !raw.body.is_empty() {
        // parse_qsl into a dict: the last value of each key.
        let mut pairs = raw.body_pairs();
        pairs.reverse();
        pairs
    } else {
        Vec::new()
    };
    if let Some(action) = first(&querystring, "Action").filter(|a| !a.is_empty()) {
        return Some(action.to_string());
    }
    raw.values("x-amz-target").first().map(|t| target_op(t))
}

fn url_first(raw: &Raw) -> Option<String> {
    let form = if raw.is_form() {
        raw.body_pairs()
    } else {
        Vec::new()
    };
    first(&raw.url_pairs(), "Action")
        .or_else(|| first(&form, "Action"))
        .map(str::to_string)
        .or_else(|| raw.values("x-amz-target").first().map(|t| target_op(t)))
}

fn last_wins(raw: &Raw) -> Option<String> {
    let form = if raw.is_form() {
        raw.body_pairs()
    } else {
        Vec::new()
    };
    let url = raw.url_pairs();
    last(&form, "Action")
        .or_else(|| last(&url, "Action"))
        .map(str::to_string)
        .or_else(|| raw.values("x-amz-target").last().map(|t| target_op(t)))
}

fn target_first(raw: &Raw) -> Option<String> {
    raw.values("x-amz-target")
        .last()
        .map(|t| target_op(t))
        .or_else(|| url_first(raw))
}

/// The first and the last value of a top-level JSON string key, if the body is a JSON
/// object that has it.
fn json_key(raw: &Raw, key: &str) -> Option<(String, String)> {
    struct Fields(Vec<(String, serde_json::Value)>);
    impl<'de> serde::Deserialize<'de> for Fields {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Fields;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Fields, A::Error> {
                    let mut fields = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        fields.push(entry);
                    }
                    Ok(Fields(fields))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    let Fields(fields) = serde_json::from_slice(&raw.body).ok()?;
    let values: Vec<String> = fields
        .into_iter()
        .filter(|(k, _)| k == key)
        .filter_map(|(_, v)| v.as_str().map(str::to_string))
        .collect();
    Some((values.first()?.clone(), values.last()?.clone()))
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Repeat X-Amz-Target with another operation.
    DuplicateTarget(usize),
    /// Repeat Content-Type with another protocol's.
    DuplicateContentType(usize),
    /// Put `Action=<op>` in the URL query.
    ActionInUrl(usize),
    /// Put `Action=<op>` in the body, before or after what is there.
    ActionInBody(usize, bool),
    /// Spell the Action parameter in another case.
    LowerCaseAction,
    /// Add an X-Amz-Target naming an operation.
    AddTarget(usize),
    /// Replace the Content-Type with another protocol's.
    SwapContentType(usize),
    /// Repeat a JSON table name with another value.
    DuplicateTable(usize),
    /// Meaning-preserving: upper-case the media type, add a charset.
    RecaseContentType,
    /// Meaning-preserving: reverse the headers' order.
    ReorderHeaders,
}

const OTHER_OPS: &[&str] = &[
    "TerminateInstances",
    "DeleteTable",
    "CreateUser",
    "DeleteQueue",
    "AssumeRole",
    "GetSecretValue",
    "Decrypt",
];
const CONTENT_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "application/x-amz-json-1.0",
    "application/x-amz-json-1.1",
    "application/cbor",
    "text/plain",
];

impl Mutation {
    fn keeps_meaning(&self) -> bool {
        matches!(self, Mutation::RecaseContentType | Mutation::ReorderHeaders)
    }

    fn apply(&self, raw: &mut Raw) {
        let op = |i: &usize| OTHER_OPS[i % OTHER_OPS.len()];
        match self {
            Mutation::DuplicateTarget(i) => {
                let prefix = raw
                    .values("x-amz-target")
                    .first()
                    .and_then(|t| t.rsplit_once('.'))
                    .map_or("DynamoDB_20120810".to_string(), |(p, _)| p.to_string());
                raw.headers
                    .push(("X-Amz-Target".into(), format!("{prefix}.{}", op(i))));
            }
            Mutation::DuplicateContentType(i) => raw.headers.push((
                "Content-Type".into(),
                CONTENT_TYPES[i % CONTENT_TYPES.len()].into(),
            )),
            Mutation::ActionInUrl(i) => {
                let sep = if raw.target.contains('?') { '&' } else { '?' };
                raw.target = format!("{}{sep}Action={}", raw.target, op(i));
            }
            Mutation::ActionInBody(i, before) => {
                let pair = format!("Action={}", op(i));
                raw.body = match (*before, raw.body.is_empty()) {
                    (_, true) => pair.into_bytes(),
                    (true, false) => [pair.as_bytes(), b"&", raw.body.as_slice()].concat(),
                    (false, false) => [raw.body.as_slice(), b"&", pair.as_bytes()].concat(),
                };
            }
            Mutation::LowerCaseAction => {
                raw.target = raw.target.replace("Action=", "action=");
                let body = String::from_utf8_lossy(&raw.body).replace("Action=", "action=");
                raw.body = body.into_bytes();
            }
            Mutation::AddTarget(i) => raw
                .headers
                .push(("X-Amz-Target".into(), format!("AmazonSQS.{}", op(i)))),
            Mutation::SwapContentType(i) => {
                raw.headers
                    .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
                raw.headers.push((
                    "Content-Type".into(),
                    CONTENT_TYPES[i % CONTENT_TYPES.len()].into(),
                ));
            }
            Mutation::DuplicateTable(i) => {
                let text = String::from_utf8_lossy(&raw.body).into_owned();
                if let Some(rest) = text.strip_prefix('{') {
                    let sep = if rest.trim_start().starts_with('}') {
                        ""
                    } else {
                        ","
                    };
                    raw.body = format!("{{\"TableName\":\"vault{i}\"{sep}{rest}").into_bytes();
                }
            }
            Mutation::RecaseContentType => {
                for (name, value) in &mut raw.headers {
                    if name.eq_ignore_ascii_case("content-type") {
                        let essence = value.split(';').next().unwrap_or_default().to_string();
                        *value = format!("{}; charset=UTF-8", essence.to_ascii_uppercase());
                    }
                }
            }
            Mutation::ReorderHeaders => raw.headers.reverse(),
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DuplicateTarget),
        any::<usize>().prop_map(Mutation::DuplicateContentType),
        any::<usize>().prop_map(Mutation::ActionInUrl),
        (any::<usize>(), any::<bool>()).prop_map(|(i, b)| Mutation::ActionInBody(i, b)),
        Just(Mutation::LowerCaseAction),
        any::<usize>().prop_map(Mutation::AddTarget),
        any::<usize>().prop_map(Mutation::SwapContentType),
        any::<usize>().prop_map(Mutation::DuplicateTable),
        Just(Mutation::RecaseContentType),
        Just(Mutation::ReorderHeaders),
    ]
}

/// The corpus, and the model's requests of services whose body carries the call.
fn requests() -> &'static [Raw] {
    static REQUESTS: OnceLock<Vec<Raw>> = OnceLock::new();
    REQUESTS.get_or_init(|| {
        let names = AccountNames::default();
        let mut out = Vec::new();
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .expect("corpus")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "http"))
            .collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).expect("read");
            if let Ok((facet, _)) = Request::parse(&bytes)
                .map_err(|_| ())
                .and_then(|r| understand_call(&r, &names).map_err(|_| ()))
                && let Some(raw) = Raw::parse(&bytes, facet.action)
            {
                out.push(raw);
            }
        }
        if let Some(path) = std::env::var_os("SIGWARD_MODEL_REQUESTS") {
            let text = std::fs::read_to_string(path).expect("model requests");
            for line in text.lines() {
                let case: serde_json::Value = serde_json::from_str(line).expect("JSON line");
                let Some(encoded) = case["request"].as_str() else {
                    continue;
                };
                let bytes = BASE64.decode(encoded.as_bytes()).expect("base64");
                let Ok(request) = Request::parse(&bytes) else {
                    continue;
                };
                let Ok((facet, protocol)) = understand_call(&request, &names) else {
                    continue;
                };
                if matches!(protocol, Protocol::Json | Protocol::Query | Protocol::Ec2)
                    && let Some(raw) = Raw::parse(&bytes, facet.action)
                {
                    out.push(raw);
                }
            }
        }
        out
    })
}

fn check(original: &Raw, mutations: &[Mutation]) -> Result<(), TestCaseError> {
    let mut raw = original.clone();
    for m in mutations {
        m.apply(&mut raw);
    }
    let bytes = raw.bytes();
    let names = AccountNames::default();
    let understood = Request::parse(&bytes)
        .ok()
        .and_then(|r| understand_call(&r, &names).ok());
    if mutations.iter().all(Mutation::keeps_meaning) {
        let Some((facet, _)) = &understood else {
            return Err(TestCaseError::fail(format!(
                "a variant with the same meaning was refused: {}",
                String::from_utf8_lossy(&bytes)
            )));
        };
        prop_assert_eq!(&facet.action, &original.operation);
        return Ok(());
    }
    let Some((facet, protocol)) = understood else {
        return Ok(()); // refused: always safe
    };
    if !matches!(protocol, Protocol::Json | Protocol::Query | Protocol::Ec2) {
        return Ok(());
    }
    for (reader, reading) in [
        ("moto", moto(&raw)),
        ("URL first", url_first(&raw)),
        ("last wins", last_wins(&raw)),
        ("target first", target_first(&raw)),
    ] {
        if let Some(reading) = reading {
            prop_assert_eq!(
                &reading,
                &facet.action,
                "{} reads another operation than sigward in {}",
                reader,
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    if let Some((first, last)) = json_key(&raw, "TableName") {
        prop_assert_eq!(
            first,
            last,
            "two tables in {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn readers_of_the_same_bytes_agree_or_sigward_refuses(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let requests = requests();
        let original = &requests[pick.index(requests.len())];
        check(original, &mutations)?;
    }
}

/// Every request once with each single mutation: a deterministic sweep beside the
/// random combinations above, with the counts the README reports.
#[test]
fn every_request_with_every_single_mutation() {
    let requests = requests();
    let singles = [
        Mutation::DuplicateTarget(1),
        Mutation::DuplicateContentType(0),
        Mutation::ActionInUrl(0),
        Mutation::ActionInBody(0, true),
        Mutation::ActionInBody(2, false),
        Mutation::LowerCaseAction,
        Mutation::AddTarget(3),
        Mutation::SwapContentType(1),
        Mutation::SwapContentType(0),
        Mutation::DuplicateTable(0),
        Mutation::RecaseContentType,
        Mutation::ReorderHeaders,
    ];
    let (mut variants, mut refused) = (0usize, 0usize);
    let names = AccountNames::default();
    for original in requests {
        for mutation in &singles {
            variants += 1;
            if let Err(e) = check(original, std::slice::from_ref(mutation)) {
                panic!("{mutation:?}: {e}");
            }
            let mut raw = original.clone();
            mutation.apply(&mut raw);
            let bytes = raw.bytes();
            if Request::parse(&bytes)
                .ok()
                .and_then(|r| understand_call(&r, &names).ok())
                .is_none()
            {
                refused += 1;
            }
        }
    }
    eprintln!(
        "differential: {} requests × {} mutations = {variants} variants, {refused} refused, {} understood alike by every reader",
        requests.len(),
        singles.len(),
        variants - refused
    );
    assert!(requests.len() > 50, "only {} requests", requests.len());
}
