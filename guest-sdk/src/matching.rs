//! Matching helpers with IAM's semantics.

/// IAM-style wildcard match: `*` matches any run of characters (including none), `?`
/// exactly one; everything else literally. Used for ARNs, which are case-sensitive.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    matches(pattern.as_bytes(), text.as_bytes(), |a, b| a == b)
}

/// [`wildcard_match`] ignoring ASCII case, as IAM compares actions (`s3:getobject`
/// matches `s3:GetObject`).
pub fn wildcard_match_ignore_case(pattern: &str, text: &str) -> bool {
    matches(pattern.as_bytes(), text.as_bytes(), |a, b| {
        a.eq_ignore_ascii_case(&b)
    })
}

/// Iterative glob with single-star backtracking: linear in practice, never exponential.
fn matches(pattern: &[u8], text: &[u8], eq: impl Fn(u8, u8) -> bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || eq(c, text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether an operation only reads: `Get*`, `List*`, `Describe*` or `Head*`, as a whole
/// word of the PascalCase name (`GetObject`, `ListBuckets`, `Head`; not `Getaway`).
/// Accepts a bare operation (`GetObject`) or an IAM action (`s3:GetObject`).
pub fn is_read_action(action: &str) -> bool {
    let op = action.rsplit_once(':').map_or(action, |(_, op)| op);
    ["Get", "List", "Describe", "Head"].iter().any(|verb| {
        op.strip_prefix(verb)
            .is_some_and(|rest| rest.chars().next().is_none_or(|c| c.is_ascii_uppercase()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn wildcards() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("s3:Get*", "s3:GetObject", true),
            ("s3:Get*", "s3:PutObject", false),
            ("s3:Get?bject", "s3:GetObject", true),
            ("s3:Get?bject", "s3:GetOObject", false),
            ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a/b/c", true),
            ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket", false),
            ("*:GetAuthorizationToken", "ecr:GetAuthorizationToken", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a**", "a", true),
            ("", "", true),
            ("", "x", false),
            ("exact", "exact", true),
            ("exact", "Exact", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                wildcard_match(pattern, text),
                want,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    #[test]
    fn action_case_is_ignored_only_when_asked() {
        assert!(wildcard_match_ignore_case("S3:getobject", "s3:GetObject"));
        assert!(wildcard_match_ignore_case(
            "ssm:getparameter*",
            "ssm:GetParametersByPath"
        ));
        assert!(!wildcard_match("S3:getobject", "s3:GetObject"));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let text = "a".repeat(10_000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!wildcard_match(&pattern, &text));
    }

    #[test]
    fn read_actions() {
        for action in [
            "GetObject",
            "ListBuckets",
            "DescribeInstances",
            "HeadObject",
            "Head",
            "s3:GetObject",
            "ec2:DescribeVpcs",
        ] {
            assert!(is_read_action(action), "{action}");
        }
        for action in [
            "PutObject",
            "TerminateInstances",
            "Getaway",
            "Listen",
            "Describer",
            "",
            "s3:DeleteObject",
            "BatchGetItem",
        ] {
            assert!(!is_read_action(action), "{action}");
        }
    }
}
