//! Every (IAM action, resource) pair AWS authorizes for one call.
//!
//! Most calls are one action on the resources they name — or, when AWS's Service
//! Authorization Reference lists no resource type for the action, on `"*"`. Where the call
//! names a resource sigward cannot derive, the pair's resource is unknown (`None`), and
//! policies judge it as if it could be any resource. The calls that are more than one
//! action, each from AWS's documentation of the operation:
//!
//! - S3 `CopyObject` / `UploadPartCopy`: `s3:PutObject` on the destination and
//!   `s3:GetObject` (`s3:GetObjectVersion` with a `versionId`) on the source;
//! - S3 `DeleteObjects`: `s3:DeleteObject` (`s3:DeleteObjectVersion`) on each key of the
//!   XML body;
//! - S3 object reads and writes with a `versionId`: the `…Version…` action;
//! - S3 uploads that set an ACL, tags, object lock or a KMS key in headers: also
//!   `s3:PutObjectAcl`, `s3:PutObjectTagging`, `s3:PutObjectRetention`,
//!   `s3:PutObjectLegalHold`, `kms:GenerateDataKey`; `CreateBucket` with an ACL or object
//!   lock: `s3:PutBucketAcl`, `s3:PutBucketObjectLockConfiguration` and
//!   `s3:PutBucketVersioning`;
//! - DynamoDB `BatchGetItem` / `BatchWriteItem`: the action on each table;
//!   `TransactGetItems`: `dynamodb:GetItem` on each table; `TransactWriteItems`:
//!   `dynamodb:ConditionCheckItem|PutItem|UpdateItem|DeleteItem` on each table;
//!   `Query` / `Scan` of an index: the index;
//! - DynamoDB PartiQL (`ExecuteStatement`, `BatchExecuteStatement`,
//!   `ExecuteTransaction`): `dynamodb:PartiQLSelect|Insert|Update|Delete`, by each
//!   statement's verb, on the table (or index) it names. A statement sigward cannot read
//!   is refused: it could name any table.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use serde_json::value::RawValue;

use super::UnderstandError;
use super::ambiguity;
use super::request::Request;
use super::resources;
use super::tables::{Operation, Service};
use crate::facet::Authorization;

/// What the pairs are derived from.
pub struct Context<'a> {
    pub request: &'a Request<'a>,
    /// The call as its resources were derived from (partition, region, account, URI
    /// labels, params).
    pub call: &'a resources::Context<'a>,
    pub service: &'a Service,
    pub operation: &'a Operation,
    /// The resources the call names ([`resources::resources`]).
    pub resources: &'a [String],
}

/// The pairs, in the order AWS checks them; an error when the call's resources are in a
/// part of the request sigward must read to judge it and cannot.
pub fn authorizations(cx: &Context<'_>) -> Result<Vec<Authorization>, UnderstandError> {
    // By the service's model, not its IAM prefix: S3 Control shares `s3` and has its own
    // CreateBucket.
    let mut out = match cx.service.id.as_str() {
        "s3" => s3(cx)?,
        "dynamodb" => dynamodb(cx)?,
        _ => None,
    }
    .unwrap_or_else(|| general(cx, &cx.operation.iam_action, cx.resources));
    out.dedup();
    Ok(out)
}

/// One action on each resource the call names; on `"*"` when IAM authorizes the action on
/// no resource; on an unknown resource when the call names one sigward did not find.
fn general(cx: &Context<'_>, action: &str, resources: &[String]) -> Vec<Authorization> {
    if !cx.operation.scoped {
        return vec![Authorization::new(action, Some("*".into()))];
    }
    if resources.is_empty() {
        return vec![Authorization::new(action, None)];
    }
    resources
        .iter()
        .map(|r| Authorization::new(action, Some(r.clone())))
        .collect()
}

fn label<'c>(cx: &'c Context<'_>, name: &str) -> Option<&'c str> {
    cx.call
        .labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn param<'c>(cx: &'c Context<'_>, name: &str) -> Option<&'c str> {
    cx.call
        .params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn unjudgeable(cx: &Context<'_>, why: impl Into<String>) -> UnderstandError {
    UnderstandError::Unjudgeable {
        operation: format!("{}:{}", cx.service.iam, cx.operation.name),
        why: why.into(),
    }
}

// ---------------------------------------------------------------------------------------
// S3

/// Actions that become their `…Version…` form when the request names a `versionId`.
const VERSIONED: &[(&str, &str)] = &[
    ("s3:GetObject", "s3:GetObjectVersion"),
    ("s3:DeleteObject", "s3:DeleteObjectVersion"),
    ("s3:GetObjectAcl", "s3:GetObjectVersionAcl"),
    ("s3:PutObjectAcl", "s3:PutObjectVersionAcl"),
    ("s3:GetObjectTagging", "s3:GetObjectVersionTagging"),
    ("s3:PutObjectTagging", "s3:PutObjectVersionTagging"),
    ("s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),
    ("s3:GetObjectAttributes", "s3:GetObjectVersionAttributes"),
];

fn versioned(action: &str, has_version: bool) -> &str {
    if !has_version {
        return action;
    }
    VERSIONED
        .iter()
        .find(|(plain, _)| *plain == action)
        .map_or(action, |(_, version)| version)
}

fn s3(cx: &Context<'_>) -> Result<Option<Vec<Authorization>>, UnderstandError> {
    let p = cx.call.partition;
    let object = match (label(cx, "Bucket"), label(cx, "Key")) {
        (Some(bucket), Some(key)) => Some(format!("arn:{p}:s3:::{bucket}/{key}")),
        _ => None,
    };
    let bucket = label(cx, "Bucket").map(|b| format!("arn:{p}:s3:::{b}"));
    let op = cx.operation.name.as_str();
    let has_version = cx.request.query.iter().any(|(k, _)| k == "versionId");
    let header = |name: &str| cx.request.header(name);
    let mut out = Vec::new();
    match op {
        "DeleteObjects" => {
            let bucket = label(cx, "Bucket").ok_or_else(|| unjudgeable(cx, "no bucket"))?;
            for (key, version) in delete_objects(cx)? {
                let action = if version {
                    "s3:DeleteObjectVersion"
                } else {
                    "s3:DeleteObject"
                };
                out.push(Authorization::new(
                    action,
                    Some(format!("arn:{p}:s3:::{bucket}/{key}")),
                ));
            }
            return Ok(Some(out));
        }
        "CopyObject" | "UploadPartCopy" => {
            out.push(Authorization::new("s3:PutObject", object.clone()));
            let source = header("x-amz-copy-source")
                .ok_or_else(|| unjudgeable(cx, "no x-amz-copy-source"))?;
            let (source, version) = copy_source(cx, source)?;
            let action = if version {
                "s3:GetObjectVersion"
            } else {
                "s3:GetObject"
            };
            out.push(Authorization::new(action, Some(source)));
        }
        "CreateBucket" => {
            out.push(Authorization::new("s3:CreateBucket", bucket.clone()));
            if sets_acl(cx.request) {
                out.push(Authorization::new("s3:PutBucketAcl", bucket.clone()));
            }
            if header("x-amz-bucket-object-lock-enabled")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            {
                out.push(Authorization::new(
                    "s3:PutBucketObjectLockConfiguration",
                    bucket.clone(),
                ));
                out.push(Authorization::new("s3:PutBucketVersioning", bucket));
            }
            return Ok(Some(out));
        }
        _ => {
            let action = versioned(&cx.operation.iam_action, has_version);
            out = general(cx, action, cx.resources);
        }
    }
    // What an upload sets besides the object's bytes is authorized as its own action.
    if matches!(op, "PutObject" | "CopyObject" | "CreateMultipartUpload") {
        if sets_acl(cx.request) {
            out.push(Authorization::new("s3:PutObjectAcl", object.clone()));
        }
        let tags = header("x-amz-tagging").is_some()
            && (op != "CopyObject"
                || header("x-amz-tagging-directive")
                    .is_some_and(|d| d.trim().eq_ignore_ascii_case("REPLACE")));
        if tags {
            out.push(Authorization::new("s3:PutObjectTagging", object.clone()));
        }
        if header("x-amz-object-lock-mode").is_some()
            || header("x-amz-object-lock-retain-until-date").is_some()
        {
            out.push(Authorization::new("s3:PutObjectRetention", object.clone()));
        }
        if header("x-amz-object-lock-legal-hold").is_some() {
            out.push(Authorization::new("s3:PutObjectLegalHold", object.clone()));
        }
        if let Some(key) = header("x-amz-server-side-encryption-aws-kms-key-id") {
            out.push(Authorization::new(
                "kms:GenerateDataKey",
                Some(kms_key(key.trim(), cx)),
            ));
        }
    }
    Ok(Some(out))
}

fn sets_acl(request: &Request<'_>) -> bool {
    request.headers.iter().any(|(name, _)| {
        name.eq_ignore_ascii_case("x-amz-acl")
            || name
                .get(..12)
                .is_some_and(|p| p.eq_ignore_ascii_case("x-amz-grant-"))
    })
}

/// A KMS key as S3's headers name it (key id, alias, or ARN) as an ARN.
fn kms_key(key: &str, cx: &Context<'_>) -> String {
    let (p, r, a) = (cx.call.partition, cx.call.region, cx.call.account);
    if key.starts_with("arn:") {
        key.to_string()
    } else if key.starts_with("alias/") {
        format!("arn:{p}:kms:{r}:{a}:{key}")
    } else {
        format!("arn:{p}:kms:{r}:{a}:key/{key}")
    }
}

/// `x-amz-copy-source` (`bucket/key`, `/bucket/key`, an access point ARN's object; URL-
/// encoded; `?versionId=…` after the encoded part) as the source's ARN, and whether it
/// names a version. The query is split off before decoding, as S3 does: an encoded `?`
/// is part of the key.
fn copy_source(cx: &Context<'_>, raw: &str) -> Result<(String, bool), UnderstandError> {
    let ambiguous =
        |why: &str| UnderstandError::Ambiguous(format!("x-amz-copy-source {raw:?}: {why}"));
    let bad = |why: &str| unjudgeable(cx, format!("x-amz-copy-source {raw:?}: {why}"));
    let (path, version) = match raw.split_once('?') {
        None => (raw, None),
        Some((path, query)) => match query.strip_prefix("versionId=") {
            Some(v) if !v.is_empty() && !v.contains(['&', '?', '=']) => (path, Some(v)),
            _ => return Err(ambiguous("its query is not one versionId")),
        },
    };
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| bad("not UTF-8 once decoded"))?;
    let decoded = decoded.strip_prefix('/').unwrap_or(&decoded);
    if decoded.starts_with("arn:") {
        // arn:aws:s3:region:account:accesspoint/name/object/key — authorized as that ARN.
        if !decoded.contains("/object/") {
            return Err(bad("an ARN that names no object"));
        }
        return Ok((decoded.to_string(), version.is_some()));
    }
    match decoded.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok((
            format!("arn:{}:s3:::{bucket}/{key}", cx.call.partition),
            version.is_some(),
        )),
        _ => Err(bad("not bucket/key")),
    }
}

/// The keys of a DeleteObjects body (`<Delete><Object><Key>…</Key><VersionId>…`), each
/// with whether it names a version. Read strictly: no DTD, comments, processing
/// instructions or CDATA (no SDK sends them, and each is a way to make two XML readers
/// disagree), only the elements S3 documents, each `Key` once.
fn delete_objects(cx: &Context<'_>) -> Result<Vec<(String, bool)>, UnderstandError> {
    if let Some(why) = &cx.request.unread {
        return Err(UnderstandError::UnreadBody {
            service: "s3".into(),
            protocol: "DeleteObjects XML",
            why: why.clone(),
        });
    }
    let bad = |why: String| unjudgeable(cx, format!("the Delete body: {why}"));
    let text = std::str::from_utf8(&cx.request.body).map_err(|_| bad("not UTF-8".into()))?;
    let document = roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions {
            allow_dtd: false,
            ..Default::default()
        },
    )
    .map_err(|e| bad(format!("not XML ({e})")))?;
    const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
    let named = |node: roxmltree::Node<'_, '_>, name: &str| {
        node.tag_name().name() == name && node.tag_name().namespace().is_none_or(|ns| ns == S3_NS)
    };
    let children = |node| element_children(node).map_err(&bad);
    let leaf = |node: roxmltree::Node<'_, '_>| -> Result<String, UnderstandError> {
        let mut parts = node.children();
        match (parts.next(), parts.next()) {
            (Some(text), None) if text.is_text() => Ok(text.text().unwrap_or("").to_string()),
            (None, _) => Ok(String::new()),
            _ => Err(bad(format!(
                "<{}> is not plain text",
                node.tag_name().name()
            ))),
        }
    };
    for node in document.root().children() {
        if !node.is_element() && !(node.is_text()) {
            return Err(bad("comments or processing instructions".into()));
        }
    }
    if text.contains("<![CDATA[") || text.contains("<!--") {
        return Err(bad("CDATA or comments".into()));
    }
    let root = document.root_element();
    if !named(root, "Delete") {
        return Err(bad(format!("the root is <{}>", root.tag_name().name())));
    }
    let mut keys = Vec::new();
    let mut quiet = 0;
    for child in children(root)? {
        if named(child, "Quiet") {
            quiet += 1;
            if quiet > 1 {
                return Err(bad("<Quiet> twice".into()));
            }
            continue;
        }
        if !named(child, "Object") {
            return Err(bad(format!("unexpected <{}>", child.tag_name().name())));
        }
        let mut key = None;
        let mut version = None;
        let mut seen: Vec<&str> = Vec::new();
        for field in children(child)? {
            let name = field.tag_name().name();
            if !["Key", "VersionId", "ETag", "LastModifiedTime", "Size"]
                .iter()
                .any(|n| named(field, n))
            {
                return Err(bad(format!("unexpected <{name}> in <Object>")));
            }
            if seen.contains(&name) {
                return Err(bad(format!("<{name}> twice in one <Object>")));
            }
            seen.push(name);
            match name {
                "Key" => key = Some(leaf(field)?),
                "VersionId" => version = Some(leaf(field)?),
                _ => {}
            }
        }
        match key {
            Some(key) if !key.is_empty() => {
                keys.push((key, version.is_some_and(|v| !v.is_empty())));
            }
            _ => return Err(bad("an <Object> without a <Key>".into())),
        }
    }
    if keys.is_empty() {
        return Err(bad("no <Object>".into()));
    }
    Ok(keys)
}

/// A node's children, which must be elements and the whitespace between them (text
/// belongs only inside the leaf elements).
fn element_children<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
) -> Result<Vec<roxmltree::Node<'a, 'i>>, String> {
    let mut out = Vec::new();
    for child in node.children() {
        if child.is_element() {
            out.push(child);
        } else if !(child.is_text() && child.text().is_some_and(|t| t.trim().is_empty())) {
            return Err(format!(
                "<{}> holds something other than elements",
                node.tag_name().name()
            ));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// DynamoDB

fn dynamodb(cx: &Context<'_>) -> Result<Option<Vec<Authorization>>, UnderstandError> {
    let op = cx.operation.name.as_str();
    let needs_body = matches!(
        op,
        "TransactGetItems"
            | "TransactWriteItems"
            | "ExecuteStatement"
            | "BatchExecuteStatement"
            | "ExecuteTransaction"
    );
    if !needs_body {
        if let (Some(table), Some(index)) = (param(cx, "TableName"), param(cx, "IndexName"))
            && matches!(op, "Query" | "Scan")
        {
            let index = format!("{}/index/{index}", table_arn(cx, table));
            return Ok(Some(vec![Authorization::new(
                cx.operation.iam_action.clone(),
                Some(index),
            )]));
        }
        return Ok(None);
    }
    if let Some(why) = &cx.request.unread {
        return Err(UnderstandError::UnreadBody {
            service: "dynamodb".into(),
            protocol: "JSON",
            why: why.clone(),
        });
    }
    let body = object_of(cx, &cx.request.body, "the JSON body")?;
    let mut out = Vec::new();
    match op {
        "TransactGetItems" | "TransactWriteItems" => {
            for item in list(cx, field(&body, "TransactItems"), "TransactItems")? {
                let item = object_of(cx, item.get().as_bytes(), "a TransactItems entry")?;
                if item.is_empty() {
                    return Err(unjudgeable(cx, "an empty TransactItems entry"));
                }
                for (kind, inner) in &item {
                    let action = match (op, kind.as_ref()) {
                        ("TransactGetItems", "Get") => "dynamodb:GetItem",
                        ("TransactWriteItems", "ConditionCheck") => "dynamodb:ConditionCheckItem",
                        ("TransactWriteItems", "Put") => "dynamodb:PutItem",
                        ("TransactWriteItems", "Update") => "dynamodb:UpdateItem",
                        ("TransactWriteItems", "Delete") => "dynamodb:DeleteItem",
                        (_, other) => {
                            return Err(unjudgeable(
                                cx,
                                format!("a TransactItems entry of kind {other:?}"),
                            ));
                        }
                    };
                    let inner = object_of(cx, inner.get().as_bytes(), kind)?;
                    let table = string(cx, field(&inner, "TableName"), "TableName")?;
                    out.push(Authorization::new(action, Some(table_arn(cx, &table))));
                }
            }
        }
        "ExecuteStatement" => {
            let statement = string(cx, field(&body, "Statement"), "Statement")?;
            out.push(partiql(cx, &statement)?);
        }
        "BatchExecuteStatement" | "ExecuteTransaction" => {
            let name = if op == "BatchExecuteStatement" {
                "Statements"
            } else {
                "TransactStatements"
            };
            for entry in list(cx, field(&body, name), name)? {
                let entry = object_of(cx, entry.get().as_bytes(), name)?;
                let statement = string(cx, field(&entry, "Statement"), "Statement")?;
                out.push(partiql(cx, &statement)?);
            }
        }
        _ => return Ok(None),
    }
    if out.is_empty() {
        return Err(unjudgeable(cx, "the call names no item or statement"));
    }
    Ok(Some(out))
}

/// A table name or ARN as the table's ARN.
fn table_arn(cx: &Context<'_>, table: &str) -> String {
    if table.starts_with("arn:") {
        return table.to_string();
    }
    let (p, r, a) = (cx.call.partition, cx.call.region, cx.call.account);
    format!("arn:{p}:dynamodb:{r}:{a}:table/{table}")
}

type Object<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// One JSON object, no key twice in any case.
fn object_of<'b>(
    cx: &Context<'_>,
    bytes: &'b [u8],
    what: &str,
) -> Result<Object<'b>, UnderstandError> {
    let super::TopLevel(fields) = serde_json::from_slice::<super::TopLevel<'b>>(bytes)
        .map_err(|e| unjudgeable(cx, format!("{what} is not a JSON object ({e})")))?;
    ambiguity::unique_keys(fields.iter().map(|(k, _)| k.as_ref()), what)?;
    Ok(fields)
}

fn field<'a>(object: &Object<'a>, name: &str) -> Option<&'a RawValue> {
    object.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn list<'a>(
    cx: &Context<'_>,
    value: Option<&'a RawValue>,
    what: &str,
) -> Result<Vec<&'a RawValue>, UnderstandError> {
    let value = value.ok_or_else(|| unjudgeable(cx, format!("no {what}")))?;
    serde_json::from_str(value.get()).map_err(|_| unjudgeable(cx, format!("{what} is not a list")))
}

fn string(
    cx: &Context<'_>,
    value: Option<&RawValue>,
    what: &str,
) -> Result<String, UnderstandError> {
    let value = value.ok_or_else(|| unjudgeable(cx, format!("no {what}")))?;
    serde_json::from_str(value.get())
        .map_err(|_| unjudgeable(cx, format!("{what} is not a string")))
}

/// A PartiQL statement's action and the table (or index) it names — unknown when a name
/// is unquoted (see [`partiql::Read::exact`]).
fn partiql(cx: &Context<'_>, statement: &str) -> Result<Authorization, UnderstandError> {
    let read = partiql::read(statement)
        .map_err(|why| unjudgeable(cx, format!("PartiQL statement {statement:?}: {why}")))?;
    let mut arn = table_arn(cx, &read.table);
    if let Some(index) = read.index {
        arn = format!("{arn}/index/{index}");
    }
    Ok(Authorization::new(
        format!("dynamodb:PartiQL{}", read.verb),
        read.exact.then_some(arn),
    ))
}

/// Just enough of DynamoDB's PartiQL to say what a statement does and to which table:
/// `SELECT … FROM t[.i] …`, `INSERT INTO t …`, `UPDATE t …`, `DELETE FROM t …`,
/// `EXISTS(SELECT … FROM t …)`. Anything it cannot be sure of is an error.
pub(crate) mod partiql {
    #[derive(Debug, PartialEq)]
    enum Token {
        /// An unquoted word, as written.
        Word(String),
        /// A "quoted" identifier, unescaped.
        Quoted(String),
        /// A 'string' or other literal: never a table.
        Literal,
        Punct(char),
    }

    fn tokens(text: &str) -> Result<Vec<Token>, String> {
        let mut out = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                c if c.is_whitespace() => {}
                '"' | '\'' => {
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            None => return Err("a quote is not closed".into()),
                            Some(q) if q == c => {
                                if chars.peek() == Some(&c) {
                                    chars.next();
                                    value.push(c);
                                } else {
                                    break;
                                }
                            }
                            Some(other) => value.push(other),
                        }
                    }
                    out.push(if c == '"' {
                        Token::Quoted(value)
                    } else {
                        Token::Literal
                    });
                }
                c if c.is_ascii_alphanumeric() || c == '_' => {
                    let mut word = String::from(c);
                    while let Some(&n) = chars.peek() {
                        if n.is_ascii_alphanumeric() || n == '_' {
                            word.push(n);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    out.push(Token::Word(word));
                }
                '-' if chars.peek() == Some(&'-') => return Err("a comment".into()),
                '/' if chars.peek() == Some(&'*') => return Err("a comment".into()),
                ';' => return Err("more than one statement".into()),
                c if c.is_ascii_punctuation() => out.push(Token::Punct(c)),
                other => return Err(format!("the character {other:?}")),
            }
        }
        Ok(out)
    }

    fn is(token: Option<&Token>, keyword: &str) -> bool {
        matches!(token, Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    /// What a statement does, and to which table (or index).
    #[derive(Debug, PartialEq)]
    pub struct Read {
        /// "Select", "Insert", "Update", "Delete".
        pub verb: &'static str,
        pub table: String,
        pub index: Option<String>,
        /// Every name was "quoted". PartiQL compares unquoted identifiers ignoring case,
        /// and sigward does not know which table DynamoDB would pick for `FROM vault`
        /// when `Vault` exists too: such a name is taken as an unknown resource.
        pub exact: bool,
    }

    pub fn read(statement: &str) -> Result<Read, String> {
        let tokens = tokens(statement)?;
        let keyword_count = |k: &str| tokens.iter().filter(|t| is(Some(t), k)).count();
        let mut at = 0;
        // EXISTS(SELECT …): a transaction's condition check, read as the SELECT.
        if is(tokens.first(), "EXISTS") {
            if tokens.get(1) != Some(&Token::Punct('('))
                || tokens.last() != Some(&Token::Punct(')'))
            {
                return Err("EXISTS without (SELECT …)".into());
            }
            at = 2;
        }
        let verb_token = tokens.get(at);
        let (verb, table_at) = if is(verb_token, "SELECT") {
            let froms: Vec<usize> = tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| is(Some(t), "FROM"))
                .map(|(i, _)| i)
                .collect();
            match froms.as_slice() {
                [from] => ("Select", from + 1),
                _ => return Err("not exactly one FROM".into()),
            }
        } else if is(verb_token, "INSERT") && is(tokens.get(at + 1), "INTO") {
            ("Insert", at + 2)
        } else if is(verb_token, "UPDATE") {
            ("Update", at + 1)
        } else if is(verb_token, "DELETE") && is(tokens.get(at + 1), "FROM") {
            ("Delete", at + 2)
        } else {
            return Err("not SELECT, INSERT INTO, UPDATE or DELETE FROM".into());
        };
        // One statement, one verb: a second SELECT (a subquery) or FROM could name
        // another table.
        if keyword_count("SELECT") > usize::from(verb == "Select")
            || keyword_count("FROM") > usize::from(verb == "Select" || verb == "Delete")
        {
            return Err("more than one SELECT or FROM".into());
        }
        let mut exact = true;
        let mut name = |token: Option<&Token>| match token {
            Some(Token::Quoted(name)) if !name.is_empty() => Some(name.clone()),
            Some(Token::Word(name)) => {
                exact = false;
                Some(name.clone())
            }
            _ => None,
        };
        let table = name(tokens.get(table_at)).ok_or("no table name")?;
        let index = if tokens.get(table_at + 1) == Some(&Token::Punct('.')) {
            Some(name(tokens.get(table_at + 2)).ok_or("no index name after the table's dot")?)
        } else {
            None
        };
        Ok(Read {
            verb,
            table,
            index,
            exact,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::read;

        #[test]
        fn statements_name_their_verb_and_table() {
            let cases = [
                (
                    r#"SELECT * FROM "vault" WHERE id = 1"#,
                    ("Select", "vault", None),
                ),
                (r#"select a, b from Music"#, ("Select", "Music", None)),
                (
                    r#"SELECT * FROM "t"."byArtist""#,
                    ("Select", "t", Some("byArtist")),
                ),
                (
                    r#"INSERT INTO "vault" VALUE {'id': 'x'}"#,
                    ("Insert", "vault", None),
                ),
                (
                    r#"UPDATE "vault" SET a = 'FROM x' WHERE id = 1"#,
                    ("Update", "vault", None),
                ),
                (
                    r#"DELETE FROM "vault" WHERE id = 1"#,
                    ("Delete", "vault", None),
                ),
                (
                    r#"EXISTS(SELECT * FROM "vault" WHERE id = 1)"#,
                    ("Select", "vault", None),
                ),
                (r#"SELECT "FROM" FROM "a""b""#, ("Select", "a\"b", None)),
            ];
            for (statement, (verb, table, index)) in cases {
                let got = read(statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
                assert_eq!(
                    (got.verb, got.table, got.index),
                    (verb, table.to_string(), index.map(str::to_string)),
                    "{statement}"
                );
                // Only `from Music` names its table unquoted.
                assert_eq!(got.exact, !statement.contains("Music"), "{statement}");
            }
        }

        #[test]
        fn statements_sigward_cannot_be_sure_of_are_refused() {
            for statement in [
                "",
                "GRANT ALL",
                r#"SELECT * FROM "a" WHERE x IN (SELECT * FROM "vault")"#,
                r#"SELECT * FROM "a" -- FROM "vault""#,
                r#"SELECT * FROM "a" /* x */"#,
                r#"SELECT * FROM "a"; DELETE FROM "vault""#,
                r#"SELECT * FROM "unclosed"#,
                r#"UPDATE "a" SET x = 1 FROM "vault""#,
                r#"SELECT * FROM 'literal'"#,
                r#"INSERT "a" VALUE {}"#,
            ] {
                assert!(read(statement).is_err(), "{statement:?} was read");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::aws::account::AccountNames;
    use crate::aws::understand_bytes;
    use crate::facet::Authorization;

    fn pairs(raw: &str) -> Vec<Authorization> {
        match understand_bytes(raw.as_bytes(), &AccountNames::default()) {
            Ok(facet) => facet.authorizations,
            Err(e) => panic!("{e}"),
        }
    }

    fn pair(action: &str, resource: Option<&str>) -> Authorization {
        Authorization::new(action, resource.map(str::to_string))
    }

    const S3_AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=AKIA111111111111XXXX/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD";
    const DDB_AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=AKIA111111111111XXXX/20250101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00";

    fn ddb(target: &str, body: &str) -> String {
        format!(
            "POST / HTTP/1.1\r\nHost: dynamodb.us-east-1.amazonaws.com\r\n{DDB_AUTH}\r\nX-Amz-Target: DynamoDB_20120810.{target}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn copy_object_reads_the_source_and_writes_the_destination() {
        let raw = format!(
            "PUT /open/copy HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com\r\n{S3_AUTH}\r\nx-amz-copy-source: /vault/secret%3FversionId%3D1?versionId=v7\r\n\r\n"
        );
        assert_eq!(
            pairs(&raw),
            vec![
                pair("s3:PutObject", Some("arn:aws:s3:::open/copy")),
                pair(
                    "s3:GetObjectVersion",
                    Some("arn:aws:s3:::vault/secret?versionId=1")
                ),
            ]
        );
    }

    #[test]
    fn delete_objects_deletes_each_key_of_its_body() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a&amp;b</Key></Object><Object><Key>k</Key><VersionId>v1</VersionId></Object><Quiet>true</Quiet></Delete>"#;
        let raw = format!(
            "POST /vault?delete HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com\r\n{S3_AUTH}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(
            pairs(&raw),
            vec![
                pair("s3:DeleteObject", Some("arn:aws:s3:::vault/a&b")),
                pair("s3:DeleteObjectVersion", Some("arn:aws:s3:::vault/k")),
            ]
        );
        for body in [
            "<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>",
            "<Delete><Object><Key>a<!-- x -->b</Key></Object></Delete>",
            "<Delete><Object><Key><![CDATA[vault]]></Key></Object></Delete>",
            "<!DOCTYPE d [<!ENTITY e \"x\">]><Delete><Object><Key>&e;</Key></Object></Delete>",
            "<Delete><Object><Key>a</Key><Extra/></Object></Delete>",
            "<Delete></Delete>",
            "<Delete><Object><Key>a</Key></Object>",
            "<x:Delete xmlns:x=\"urn:other\"><Object><Key>a</Key></Object></x:Delete>",
        ] {
            let raw = format!(
                "POST /vault?delete HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com\r\n{S3_AUTH}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            assert!(
                understand_bytes(raw.as_bytes(), &AccountNames::default()).is_err(),
                "{body} was understood"
            );
        }
    }

    #[test]
    fn a_delete_objects_body_sigward_did_not_read_is_refused() {
        let body = "<Delete><Object><Key>k</Key></Object></Delete>";
        let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
        let raw = format!(
            "POST /vault?delete HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com\r\n{S3_AUTH}\r\nContent-Encoding: aws-chunked\r\nContent-Length: {}\r\n\r\n{chunked}",
            chunked.len()
        );
        let error = understand_bytes(raw.as_bytes(), &AccountNames::default())
            .expect_err("an aws-chunked Delete body is not judged");
        assert!(error.to_string().contains("was not read"), "{error}");
    }

    #[test]
    fn versions_acls_and_tags_are_their_own_actions() {
        let raw = format!(
            "GET /vault/k?versionId=3 HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com\r\n{S3_AUTH}\r\n\r\n"
        );
        assert_eq!(
            pairs(&raw),
            vec![pair("s3:GetObjectVersion", Some("arn:aws:s3:::vault/k"))]
        );
        let raw = format!(
            "PUT /b/k HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com\r\n{S3_AUTH}\r\nx-amz-acl: public-read\r\nx-amz-tagging: a=b\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            pairs(&raw),
            vec![
                pair("s3:PutObject", Some("arn:aws:s3:::b/k")),
                pair("s3:PutObjectAcl", Some("arn:aws:s3:::b/k")),
                pair("s3:PutObjectTagging", Some("arn:aws:s3:::b/k")),
            ]
        );
        let raw =
            format!("GET / HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com\r\n{S3_AUTH}\r\n\r\n");
        assert_eq!(pairs(&raw), vec![pair("s3:ListAllMyBuckets", Some("*"))]);
    }

    #[test]
    fn dynamodb_transactions_and_partiql_name_each_table() {
        let raw = ddb(
            "TransactWriteItems",
            r#"{"TransactItems":[{"Put":{"TableName":"a","Item":{}}},{"Delete":{"TableName":"vault","Key":{}}},{"ConditionCheck":{"TableName":"c","Key":{},"ConditionExpression":"x"}}]}"#,
        );
        let arn = |t: &str| format!("arn:aws:dynamodb:us-east-1:111111111111:table/{t}");
        assert_eq!(
            pairs(&raw),
            vec![
                pair("dynamodb:PutItem", Some(&arn("a"))),
                pair("dynamodb:DeleteItem", Some(&arn("vault"))),
                pair("dynamodb:ConditionCheckItem", Some(&arn("c"))),
            ]
        );
        let raw = ddb(
            "TransactGetItems",
            r#"{"TransactItems":[{"Get":{"TableName":"vault","Key":{}}}]}"#,
        );
        assert_eq!(
            pairs(&raw),
            vec![pair("dynamodb:GetItem", Some(&arn("vault")))]
        );
        let raw = ddb(
            "ExecuteStatement",
            r#"{"Statement":"SELECT * FROM \"vault\" WHERE id = 'x'"}"#,
        );
        let facet = understand_bytes(raw.as_bytes(), &AccountNames::default()).expect("facet");
        assert_eq!(
            facet.authorizations,
            vec![pair("dynamodb:PartiQLSelect", Some(&arn("vault")))]
        );
        assert_eq!(facet.iam_action, "dynamodb:PartiQLSelect");
        assert!(facet.resources.contains(&arn("vault")));
        let raw = ddb(
            "BatchExecuteStatement",
            r#"{"Statements":[{"Statement":"UPDATE \"a\" SET x = 1"},{"Statement":"DELETE FROM \"vault\" WHERE id = 1"}]}"#,
        );
        assert_eq!(
            pairs(&raw),
            vec![
                pair("dynamodb:PartiQLUpdate", Some(&arn("a"))),
                pair("dynamodb:PartiQLDelete", Some(&arn("vault"))),
            ]
        );
        // Unquoted, `VAULT` may be read as the table `vault`: the resource is unknown.
        let raw = ddb(
            "ExecuteStatement",
            r#"{"Statement":"SELECT * FROM VAULT WHERE id = 'x'"}"#,
        );
        assert_eq!(pairs(&raw), vec![pair("dynamodb:PartiQLSelect", None)]);
        for body in [
            r#"{"TransactItems":[{"Get":{"TableName":"a"},"get":{"TableName":"vault"}}]}"#,
            r#"{"TransactItems":[{"Get":{"TableName":"a","TableName":"vault"}}]}"#,
            r#"{"TransactItems":[{"Grab":{"TableName":"vault"}}]}"#,
            r#"{"TransactItems":[{"Get":{}}]}"#,
        ] {
            let raw = ddb("TransactGetItems", body);
            assert!(
                understand_bytes(raw.as_bytes(), &AccountNames::default()).is_err(),
                "{body} was understood"
            );
        }
        let raw = ddb(
            "ExecuteStatement",
            r#"{"Statement":"SELECT * FROM a WHERE x IN (SELECT * FROM vault)"}"#,
        );
        assert!(understand_bytes(raw.as_bytes(), &AccountNames::default()).is_err());
    }

    #[test]
    fn a_call_whose_resource_sigward_cannot_name_has_an_unknown_resource() {
        // ecs:DescribeServices names a cluster by name: no rule derives its ARN.
        let body = r#"{"cluster":"prod","services":["web"]}"#;
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: ecs.us-east-1.amazonaws.com\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIA111111111111XXXX/20250101/us-east-1/ecs/aws4_request, SignedHeaders=host, Signature=00\r\nX-Amz-Target: AmazonEC2ContainerServiceV20141113.DescribeServices\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(pairs(&raw), vec![pair("ecs:DescribeServices", None)]);
    }
}
