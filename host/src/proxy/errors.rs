//! Refusals in the format the agent's client parses for the protocol it speaks, so the
//! aws CLI and the SDKs show sigward's reason as an ordinary AWS error:
//! `An error occurred (AccessDenied) when calling the GetSecretValue operation: denied by
//! policy no-secrets: …`.

use crate::aws::tables::Protocol;

/// An error response: status, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl ErrorResponse {
    /// As an HTTP response (headers that are not valid values are left out).
    pub fn into_response(self) -> http::Response<crate::upstream::Body> {
        let mut response = crate::upstream::response(
            http::StatusCode::from_u16(self.status)
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
            "text/plain",
            self.body,
        );
        for (name, value) in self.headers {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// Build the refusal for a request in `protocol`.
pub fn aws_error(
    protocol: Protocol,
    status: u16,
    code: &str,
    message: &str,
    request_id: &str,
) -> ErrorResponse {
    let xml = |body: String| ErrorResponse {
        status,
        headers: vec![
            ("content-type", "text/xml".into()),
            ("x-amzn-requestid", request_id.into()),
        ],
        body: format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}").into_bytes(),
    };
    let (code_xml, message_xml, id_xml) = (escape(code), escape(message), escape(request_id));
    match protocol {
        Protocol::Cbor => {
            let mut body = Vec::new();
            let fields = [("__type", code), ("message", message)];
            let map: std::collections::BTreeMap<&str, &str> = fields.into_iter().collect();
            // Serializing two strings into a Vec cannot fail.
            let _ = ciborium::into_writer(&map, &mut body);
            ErrorResponse {
                status,
                headers: vec![
                    ("content-type", "application/cbor".into()),
                    ("smithy-protocol", "rpc-v2-cbor".into()),
                    ("x-amzn-requestid", request_id.into()),
                ],
                body,
            }
        }
        Protocol::Json => ErrorResponse {
            status,
            headers: vec![
                ("content-type", "application/x-amz-json-1.1".into()),
                ("x-amzn-requestid", request_id.into()),
                ("x-amzn-errortype", code.into()),
                // Query-compatible JSON services (SQS, CloudWatch) read their code here.
                ("x-amzn-query-error", format!("{code};Sender")),
            ],
            body: serde_json::json!({ "__type": code, "message": message })
                .to_string()
                .into_bytes(),
        },
        Protocol::RestJson => ErrorResponse {
            status,
            headers: vec![
                ("content-type", "application/json".into()),
                ("x-amzn-requestid", request_id.into()),
                ("x-amzn-errortype", code.into()),
            ],
            body: serde_json::json!({ "message": message })
                .to_string()
                .into_bytes(),
        },
        Protocol::Query => xml(format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code_xml}</Code><Message>{message_xml}</Message></Error>\
             <RequestId>{id_xml}</RequestId></ErrorResponse>"
        )),
        Protocol::Ec2 => xml(format!(
            "<Response><Errors><Error><Code>{code_xml}</Code><Message>{message_xml}</Message></Error></Errors>\
             <RequestID>{id_xml}</RequestID></Response>"
        )),
        Protocol::RestXml => xml(format!(
            "<Error><Code>{code_xml}</Code><Message>{message_xml}</Message><RequestId>{id_xml}</RequestId></Error>"
        )),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// A plain refusal for a proxy-level problem (a CONNECT to a host not intercepted).
pub fn plain_response(
    status: http::StatusCode,
    message: &str,
) -> http::Response<crate::upstream::Body> {
    crate::upstream::response(status, "text/plain", format!("{message}\n"))
}
