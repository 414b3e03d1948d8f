//! What an AWS host name says: the region, the endpoint prefix, and for S3 the bucket
//! of a virtual-hosted request. The credential scope is the truth; the host must agree.

/// An AWS host, split into what matters. Non-AWS hosts (a custom endpoint such as
/// 127.0.0.1) parse to `None` and the request is understood from its scope alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsHost {
    /// The region the host names, if any (`bucket.s3.amazonaws.com` and `iam.amazonaws.com` name none).
    pub region: Option<String>,
    /// The labels before the region and domain, without the S3 bucket: "streams.dynamodb".
    pub service_labels: String,
    /// Whether this is an S3 data-plane host (`s3`, `s3-<region>`, `s3-accelerate`, dual-stack, FIPS).
    pub s3: bool,
    /// The bucket of a virtual-hosted S3 request (`my.bucket.s3.eu-west-1.amazonaws.com`).
    pub bucket: Option<String>,
}

const DOMAINS: &[&str] = &[".amazonaws.com", ".amazonaws.com.cn", ".api.aws"];

/// Whether `label` looks like a region: `us-east-1`, `us-gov-west-1`, `cn-north-1`.
pub fn is_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

pub fn parse(host: &str) -> Option<AwsHost> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let core = DOMAINS.iter().find_map(|d| host.strip_suffix(d))?;
    let labels: Vec<&str> = core.split('.').collect();

    // S3: find the label that names the S3 endpoint; labels before it are the bucket.
    let s3_at = labels.iter().position(|l| {
        *l == "s3"
            || *l == "s3-accelerate"
            || *l == "s3-fips"
            || *l == "s3-external-1"
            || l.strip_prefix("s3-").is_some_and(is_region)
    });
    if let Some(at) = s3_at {
        let mut region = labels[at]
            .strip_prefix("s3-")
            .filter(|r| is_region(r))
            .map(str::to_string);
        if labels[at] == "s3-external-1" {
            region = Some("us-east-1".into());
        }
        for label in &labels[at + 1..] {
            if is_region(label) {
                region = Some((*label).to_string());
            }
        }
        let bucket = (at > 0).then(|| labels[..at].join("."));
        return Some(AwsHost {
            region,
            service_labels: "s3".into(),
            s3: true,
            bucket,
        });
    }

    let region = labels
        .iter()
        .find(|l| is_region(l))
        .map(|l| (*l).to_string());
    let service_labels = labels
        .iter()
        .filter(|l| !is_region(l) && **l != "dualstack" && **l != "fips")
        .copied()
        .collect::<Vec<_>>()
        .join(".");
    Some(AwsHost {
        region,
        service_labels,
        s3: false,
        bucket: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(region: Option<&str>, labels: &str, s3: bool, bucket: Option<&str>) -> Option<AwsHost> {
        Some(AwsHost {
            region: region.map(str::to_string),
            service_labels: labels.into(),
            s3,
            bucket: bucket.map(str::to_string),
        })
    }

    #[test]
    fn hosts() {
        let cases = [
            (
                "ec2.us-east-1.amazonaws.com",
                host(Some("us-east-1"), "ec2", false, None),
            ),
            ("sts.amazonaws.com", host(None, "sts", false, None)),
            (
                "eu-west-1.queue.amazonaws.com",
                host(Some("eu-west-1"), "queue", false, None),
            ),
            (
                "streams.dynamodb.eu-west-2.amazonaws.com",
                host(Some("eu-west-2"), "streams.dynamodb", false, None),
            ),
            (
                "123456789012.data-kinesis.us-west-2.amazonaws.com",
                host(Some("us-west-2"), "123456789012.data-kinesis", false, None),
            ),
            (
                "dynamodb-fips.us-gov-west-1.amazonaws.com",
                host(Some("us-gov-west-1"), "dynamodb-fips", false, None),
            ),
            ("s3.amazonaws.com", host(None, "s3", true, None)),
            (
                "bucket.s3.amazonaws.com",
                host(None, "s3", true, Some("bucket")),
            ),
            (
                "my.dotted.bucket.s3.eu-west-1.amazonaws.com",
                host(Some("eu-west-1"), "s3", true, Some("my.dotted.bucket")),
            ),
            (
                "bucket.s3-eu-west-1.amazonaws.com",
                host(Some("eu-west-1"), "s3", true, Some("bucket")),
            ),
            (
                "bucket.s3.dualstack.ap-south-1.amazonaws.com",
                host(Some("ap-south-1"), "s3", true, Some("bucket")),
            ),
            (
                "bucket.s3-fips.us-east-2.amazonaws.com",
                host(Some("us-east-2"), "s3", true, Some("bucket")),
            ),
            (
                "bucket.s3-accelerate.amazonaws.com",
                host(None, "s3", true, Some("bucket")),
            ),
            (
                "s3.cn-north-1.amazonaws.com.cn",
                host(Some("cn-north-1"), "s3", true, None),
            ),
            (
                "111122223333.s3-control.us-east-1.amazonaws.com",
                host(Some("us-east-1"), "111122223333.s3-control", false, None),
            ),
            ("127.0.0.1", None),
            ("localhost", None),
            ("amazonaws.com.evil.example", None),
        ];
        for (name, want) in cases {
            assert_eq!(parse(name), want, "{name}");
        }
    }

    #[test]
    fn regions() {
        for r in [
            "us-east-1",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-5",
            "us-isob-east-1",
        ] {
            assert!(is_region(r), "{r}");
        }
        for r in [
            "s3",
            "us-east",
            "dualstack",
            "east-1",
            "US-EAST-1",
            "us--1",
            "123456789012",
        ] {
            assert!(!is_region(r), "{r}");
        }
    }
}
