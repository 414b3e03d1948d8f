//! ARNs a call touches, where the request determines them. Generic rule: any parameter
//! whose value is an ARN. Service rules for the names that are not ARNs: S3 buckets and
//! keys (CopyObject's source is added by [`super::authorizations`]), DynamoDB tables, SQS queue URLs, Lambda functions,
//! Secrets Manager secrets, SSM parameters, KMS keys, IAM users and roles, EC2 instances.

pub struct Context<'a> {
    pub service: &'a str,
    pub partition: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    /// URI labels the operation's template captured (`Bucket`, `Key`, `FunctionName`).
    pub labels: &'a [(String, String)],
    pub params: &'a [(String, String)],
    /// Table names from a batch request body (`RequestItems`).
    pub batch_tables: &'a [String],
}

pub fn resources(cx: &Context<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |arn: String| {
        if !out.contains(&arn) {
            out.push(arn);
        }
    };
    let label = |name: &str| {
        cx.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let params = |name: &'static str| {
        cx.params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let param = |name: &'static str| params(name).next();
    let (p, r, a) = (cx.partition, cx.region, cx.account);

    match cx.service {
        "s3" => {
            if let Some(bucket) = label("Bucket") {
                match label("Key") {
                    Some(key) => push(format!("arn:{p}:s3:::{bucket}/{key}")),
                    None => push(format!("arn:{p}:s3:::{bucket}")),
                }
            }
        }
        "dynamodb" => {
            for table in param("TableName")
                .into_iter()
                .chain(cx.batch_tables.iter().map(String::as_str))
            {
                if !table.starts_with("arn:") {
                    push(format!("arn:{p}:dynamodb:{r}:{a}:table/{table}"));
                }
            }
        }
        "sqs" => {
            if let Some(url) = param("QueueUrl") {
                // https://sqs.<region>.amazonaws.com/<account>/<name>
                let parts: Vec<&str> = url.trim_end_matches('/').rsplitn(3, '/').collect();
                if let [name, account, _] = parts.as_slice()
                    && account.len() == 12
                    && account.bytes().all(|b| b.is_ascii_digit())
                {
                    push(format!("arn:{p}:sqs:{r}:{account}:{name}"));
                }
            } else if let Some(name) = param("QueueName") {
                push(format!("arn:{p}:sqs:{r}:{a}:{name}"));
            }
        }
        "lambda" => {
            if let Some(name) = label("FunctionName").or_else(|| param("FunctionName"))
                && !name.starts_with("arn:")
            {
                let name = name.split(':').next().unwrap_or(name);
                push(format!("arn:{p}:lambda:{r}:{a}:function:{name}"));
            }
        }
        "secretsmanager" => {
            if let Some(id) = param("SecretId").or_else(|| param("Name"))
                && !id.starts_with("arn:")
            {
                push(format!("arn:{p}:secretsmanager:{r}:{a}:secret:{id}"));
            }
        }
        "ssm" => {
            for name in params("Name").chain(params("Names")) {
                if !name.starts_with("arn:") {
                    push(format!(
                        "arn:{p}:ssm:{r}:{a}:parameter/{}",
                        name.trim_start_matches('/')
                    ));
                }
            }
        }
        "kms" => {
            if let Some(key) = param("KeyId")
                && !key.starts_with("arn:")
            {
                if key.starts_with("alias/") {
                    push(format!("arn:{p}:kms:{r}:{a}:{key}"));
                } else {
                    push(format!("arn:{p}:kms:{r}:{a}:key/{key}"));
                }
            }
        }
        "iam" => {
            if let Some(user) = param("UserName") {
                push(format!("arn:{p}:iam::{a}:user/{user}"));
            }
            if let Some(role) = param("RoleName") {
                push(format!("arn:{p}:iam::{a}:role/{role}"));
            }
        }
        "ec2" => {
            for (k, v) in cx.params {
                let is_instance_param = k == "InstanceId"
                    || (k.starts_with("InstanceId.")
                        && k[11..].bytes().all(|b| b.is_ascii_digit()));
                if is_instance_param && v.starts_with("i-") {
                    push(format!("arn:{p}:ec2:{r}:{a}:instance/{v}"));
                }
            }
        }
        _ => {}
    }
    // Any parameter that is itself an ARN (TopicArn, ResourceArn, RoleArn, a SecretId ARN …).
    for (_, v) in cx.params {
        if v.starts_with("arn:") && v.len() <= 2048 && v.split(':').count() >= 6 {
            push(v.clone());
        }
    }
    out
}
