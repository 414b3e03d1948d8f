//! What an AWS host name says. A host is accepted for a service only in one of that
//! service's endpoint forms, from AWS's endpoint rules ([`HostTemplate`], generated into
//! the tables): `ec2.us-east-1.amazonaws.com`, `123456789012.ddb.eu-west-1.amazonaws.com`,
//! never a customer's name under the same domain (`ec2-1-2-3-4.compute-1.amazonaws.com`,
//! an ELB, an API Gateway id). S3's data plane is read by hand: the bucket of a
//! virtual-hosted request is everything left of the endpoint suffix, matched from the
//! right; access points, Object Lambda, Multi-Region Access Points, Outposts and S3
//! Express hosts are refused, never judged as if path-style. The credential scope is the
//! truth for service and region; the host must agree with it.

use super::tables::TABLES;

/// An AWS host, split into what matters. Non-AWS hosts (a custom endpoint such as
/// 127.0.0.1) parse to `None` and the request is understood from its scope alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsHost {
    /// The host, lower case, without a trailing dot.
    pub name: String,
    /// The region an S3 host names, if any (`bucket.s3.amazonaws.com` names none). Other
    /// services' hosts name theirs through the endpoint form they match.
    pub region: Option<String>,
    /// Whether this is an S3 data-plane host (`s3`, `s3-<region>`, `s3-accelerate`,
    /// dual-stack, FIPS).
    pub s3: bool,
    /// The bucket of a virtual-hosted S3 request (`my.bucket.s3.eu-west-1.amazonaws.com`).
    pub bucket: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host {0:?} is not a valid DNS name")]
    Invalid(String),
    #[error(
        "host {host:?} is an S3 {kind} endpoint, which sigward does not understand; \
         address the bucket itself (virtual-hosted or path-style)"
    )]
    S3Form { host: String, kind: &'static str },
}

/// The DNS suffixes of the partitions sigward serves (dual-stack ones included).
const DOMAINS: &[&str] = &[
    "amazonaws.com.cn",
    "amazonaws.com",
    "api.amazonwebservices.com.cn",
    "api.aws",
];

/// Whether `label` is a region of a partition sigward serves: `us-east-1`,
/// `us-gov-west-1`, `cn-north-1` — from AWS's endpoint data, not from its shape.
pub fn is_region(label: &str) -> bool {
    TABLES.is_region(label)
}

/// Parse a host name. `Ok(None)`: not an AWS host. An AWS host that is an S3 form
/// sigward does not understand is an error.
pub fn parse(host: &str) -> Result<Option<AwsHost>, HostError> {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let Some(core) = DOMAINS
        .iter()
        .find_map(|d| name.strip_suffix(d)?.strip_suffix('.'))
    else {
        return Ok(None);
    };
    let labels: Vec<&str> = core.split('.').collect();
    if labels.iter().any(|l| {
        l.is_empty()
            || l.len() > 63
            || !l
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }) {
        return Err(HostError::Invalid(name));
    }
    if let Some((bucket, region)) = s3_endpoint(&labels) {
        return Ok(Some(AwsHost {
            name,
            region,
            s3: true,
            bucket,
        }));
    }
    // A resource's own host under one of S3's other endpoints (the bare endpoints, such
    // as `s3-outposts.<region>`, are S3 Control's and S3 on Outposts' control planes).
    const S3_FORMS: &[(&str, &str)] = &[
        ("s3-accesspoint", "access point"),
        ("s3-object-lambda", "Object Lambda access point"),
        ("s3-global", "Multi-Region Access Point"),
        ("s3-outposts", "on Outposts"),
        ("s3express-", "Express One Zone (directory bucket)"),
    ];
    for label in labels.iter().skip(1) {
        if let Some((_, kind)) = S3_FORMS
            .iter()
            .find(|(form, _)| label.starts_with(form) && !label.starts_with("s3express-control"))
        {
            return Err(HostError::S3Form {
                host: name.clone(),
                kind,
            });
        }
    }
    Ok(Some(AwsHost {
        name,
        region: None,
        s3: false,
        bucket: None,
    }))
}

/// S3's data-plane endpoint forms, matched against the host's last labels: the bucket
/// is every label before them. `R` stands for a region.
fn s3_endpoint(labels: &[&str]) -> Option<(Option<String>, Option<String>)> {
    const FORMS: &[&[&str]] = &[
        &["s3-fips", "dualstack", "R"],
        &["s3", "dualstack", "R"],
        &["s3-accelerate", "dualstack"],
        &["s3-fips", "R"],
        &["s3", "R"],
        &["s3-R"],
        &["s3-external-1"],
        &["s3-accelerate"],
        &["s3"],
    ];
    for form in FORMS {
        let Some(at) = labels.len().checked_sub(form.len()) else {
            continue;
        };
        let mut region = None;
        let fits = form.iter().zip(&labels[at..]).all(|(want, got)| {
            let named = match *want {
                "R" => Some(*got),
                "s3-R" => got.strip_prefix("s3-"),
                literal => return literal == *got,
            };
            match named.filter(|r| is_region(r)) {
                Some(r) => {
                    region = Some(r.to_string());
                    true
                }
                None => false,
            }
        });
        if fits {
            if form == &["s3-external-1"] {
                region = Some("us-east-1".into());
            }
            let bucket = (at > 0).then(|| labels[..at].join("."));
            return Some((bucket, region));
        }
    }
    None
}

/// One endpoint host form of a service: `{account}.ddb.{region}.{dns}`. Variables:
/// `{region}` a known region, `{dns}` a partition's DNS suffix, `{account}` 12 digits,
/// anything else one DNS label part (letters, digits, hyphens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTemplate(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Region,
    Dns,
    Account,
    Label,
}

impl HostTemplate {
    pub fn parse(form: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = form;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let close = rest.find('}').unwrap_or(rest.len() - 1);
                    parts.push(match &rest[1..close] {
                        "region" => Part::Region,
                        "dns" => Part::Dns,
                        "account" => Part::Account,
                        _ => Part::Label,
                    });
                    rest = &rest[close + 1..];
                }
                Some(open) => {
                    parts.push(Part::Literal(rest[..open].to_string()));
                    rest = &rest[open..];
                }
                None => {
                    parts.push(Part::Literal(rest.to_string()));
                    rest = "";
                }
            }
        }
        HostTemplate(parts)
    }

    /// If `host` (lower case) has this form: the region it names, if any.
    pub fn matches<'h>(&self, host: &'h str) -> Option<Option<&'h str>> {
        match_parts(&self.0, host, None)
    }
}

fn match_parts<'h>(
    parts: &[Part],
    host: &'h str,
    region: Option<&'h str>,
) -> Option<Option<&'h str>> {
    let Some((part, rest)) = parts.split_first() else {
        return host.is_empty().then_some(region);
    };
    match part {
        Part::Literal(text) => match_parts(rest, host.strip_prefix(text.as_str())?, region),
        Part::Dns => DOMAINS
            .iter()
            .find_map(|d| match_parts(rest, host.strip_prefix(d)?, region)),
        Part::Region | Part::Account | Part::Label => {
            let run = host
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                .count();
            // A region and an account are whole labels in every form; a label part may
            // share its label with literal text (`{label}-kinesis`).
            let shortest = if matches!(part, Part::Label) { 1 } else { run };
            (shortest.max(1)..=run).rev().find_map(|len| {
                let (value, after) = host.split_at(len);
                let region = match part {
                    Part::Region if !is_region(value) => return None,
                    Part::Region => Some(value),
                    Part::Account
                        if value.len() != 12 || !value.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        return None;
                    }
                    _ => region,
                };
                match_parts(rest, after, region)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(region: Option<&str>, bucket: Option<&str>, name: &str) -> Option<AwsHost> {
        Some(AwsHost {
            name: name.into(),
            region: region.map(str::to_string),
            s3: true,
            bucket: bucket.map(str::to_string),
        })
    }

    #[test]
    fn s3_hosts_take_the_bucket_from_the_right() {
        let cases = [
            ("s3.amazonaws.com", None, None),
            ("bucket.s3.amazonaws.com", None, Some("bucket")),
            (
                "my.dotted.bucket.s3.eu-west-1.amazonaws.com",
                Some("eu-west-1"),
                Some("my.dotted.bucket"),
            ),
            (
                "bucket.s3-eu-west-1.amazonaws.com",
                Some("eu-west-1"),
                Some("bucket"),
            ),
            (
                "bucket.s3.dualstack.ap-south-1.amazonaws.com",
                Some("ap-south-1"),
                Some("bucket"),
            ),
            (
                "bucket.s3-fips.us-east-2.amazonaws.com",
                Some("us-east-2"),
                Some("bucket"),
            ),
            ("bucket.s3-accelerate.amazonaws.com", None, Some("bucket")),
            ("s3.cn-north-1.amazonaws.com.cn", Some("cn-north-1"), None),
            ("s3-external-1.amazonaws.com", Some("us-east-1"), None),
            // The bucket is everything left of the endpoint: a bucket named like an
            // endpoint does not move it.
            (
                "a.s3.b.s3.us-east-1.amazonaws.com",
                Some("us-east-1"),
                Some("a.s3.b"),
            ),
            ("s3.s3.amazonaws.com", None, Some("s3")),
            (
                "x.s3-global.bucket.s3.us-east-1.amazonaws.com",
                Some("us-east-1"),
                Some("x.s3-global.bucket"),
            ),
        ];
        for (name, region, bucket) in cases {
            assert_eq!(parse(name), Ok(s3(region, bucket, name)), "{name}");
        }
    }

    #[test]
    fn s3_forms_sigward_does_not_understand_are_refused() {
        for name in [
            "ap-111122223333.s3-accesspoint.us-east-1.amazonaws.com",
            "ap-111122223333.s3-accesspoint.dualstack.us-east-1.amazonaws.com",
            "ol-111122223333.s3-object-lambda.us-east-1.amazonaws.com",
            "mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com",
            "op-01.s3-outposts.us-east-1.amazonaws.com",
            "bucket--use1-az4--x-s3.s3express-use1-az4.us-east-1.amazonaws.com",
        ] {
            assert!(
                matches!(parse(name), Err(HostError::S3Form { .. })),
                "{name}: {:?}",
                parse(name)
            );
        }
    }

    #[test]
    fn other_hosts() {
        assert_eq!(parse("127.0.0.1"), Ok(None));
        assert_eq!(parse("localhost"), Ok(None));
        assert_eq!(parse("amazonaws.com.evil.example"), Ok(None));
        assert_eq!(parse("amazonaws.com"), Ok(None));
        assert!(matches!(
            parse("a..b.amazonaws.com"),
            Err(HostError::Invalid(_))
        ));
        assert!(matches!(
            parse("a_b.us-east-1.amazonaws.com"),
            Err(HostError::Invalid(_))
        ));
        let ec2 = parse("EC2.us-east-1.amazonaws.com.")
            .expect("valid")
            .expect("aws");
        assert_eq!(ec2.name, "ec2.us-east-1.amazonaws.com");
        assert!(!ec2.s3);
    }

    #[test]
    fn templates_match_only_their_forms() {
        let ddb = HostTemplate::parse("{account}.ddb.{region}.{dns}");
        assert_eq!(
            ddb.matches("111122223333.ddb.eu-west-1.amazonaws.com"),
            Some(Some("eu-west-1"))
        );
        assert_eq!(ddb.matches("11112222333.ddb.eu-west-1.amazonaws.com"), None);
        assert_eq!(
            ddb.matches("111122223333.ddb.eu-nowhere-1.amazonaws.com"),
            None
        );
        let kinesis = HostTemplate::parse("{account}.{label}-kinesis.{region}.{dns}");
        assert_eq!(
            kinesis.matches("111122223333.data-kinesis.us-west-2.amazonaws.com"),
            Some(Some("us-west-2"))
        );
        let ec2 = HostTemplate::parse("ec2.{region}.{dns}");
        assert_eq!(
            ec2.matches("ec2.us-east-1.api.aws"),
            Some(Some("us-east-1"))
        );
        assert_eq!(ec2.matches("ec2-1-2-3-4.compute-1.amazonaws.com"), None);
        assert_eq!(ec2.matches("evil.ec2.us-east-1.amazonaws.com"), None);
        let iam = HostTemplate::parse("iam.{dns}");
        assert_eq!(iam.matches("iam.amazonaws.com"), Some(None));
        assert_eq!(iam.matches("iam.amazonaws.com.evil"), None);
    }

    #[test]
    fn regions_come_from_aws_endpoint_data() {
        for r in ["us-east-1", "us-gov-west-1", "cn-north-1", "ap-southeast-5"] {
            assert!(is_region(r), "{r}");
        }
        for r in [
            "s3",
            "us-east",
            "us-east-9",
            "evil.com#",
            "US-EAST-1",
            "123456789012",
        ] {
            assert!(!is_region(r), "{r}");
        }
    }
}
