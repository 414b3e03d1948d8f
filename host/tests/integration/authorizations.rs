//! Everything a call touches is judged, end to end: boto3 through sigward to moto, with a
//! resource-scoped `builtin:iam` document written the way security teams write them —
//! "allow everything except reading or deleting the vault".

use crate::e2e::{AGENT_SECRET, Agent, Moto, Sigward, config, venv};

/// Allow everything; never read or delete `vault/*`, never read the `vault` table.
const ALL_BUT_VAULT: &str = r#"{ module = "builtin:iam", settings = { documents = [ { Statement = [ { Effect = "Allow", Action = "*", Resource = "*" }, { Sid = "Vault", Effect = "Deny", Action = ["s3:GetObject*", "s3:DeleteObject*"], Resource = "arn:aws:s3:::vault/*" }, { Sid = "VaultTable", Effect = "Deny", Action = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:PartiQL*"], Resource = "arn:aws:dynamodb:*:*:table/vault*" } ] } ] } }"#;

/// The boto3 script: each line it prints is `name: ok` or `name: <error code> <message>`.
const SCRIPT: &str = r#"
import boto3, botocore
s3 = boto3.client("s3")
ddb = boto3.client("dynamodb")
def attempt(name, call):
    try:
        call()
        print(f"{name}: ok")
    except botocore.exceptions.ClientError as e:
        print(f"{name}: {e.response['Error']['Code']} {e.response['Error']['Message']}")

for bucket in ["vault", "open"]:
    s3.create_bucket(Bucket=bucket)
s3.put_object(Bucket="vault", Key="secret", Body=b"the vault's secret")
s3.put_object(Bucket="open", Key="a", Body=b"harmless")
attempt("copy-from-vault", lambda: s3.copy_object(Bucket="open", Key="stolen", CopySource={"Bucket": "vault", "Key": "secret"}))
attempt("copy-within-open", lambda: s3.copy_object(Bucket="open", Key="copy", CopySource={"Bucket": "open", "Key": "a"}))
attempt("delete-objects-vault", lambda: s3.delete_objects(Bucket="vault", Delete={"Objects": [{"Key": "secret"}]}))
attempt("delete-objects-open", lambda: s3.delete_objects(Bucket="open", Delete={"Objects": [{"Key": "copy"}]}))
attempt("list-buckets", lambda: s3.list_buckets())
print("vault-keys:", sorted(o["Key"] for o in s3.list_objects_v2(Bucket="vault").get("Contents", [])))
print("open-keys:", sorted(o["Key"] for o in s3.list_objects_v2(Bucket="open").get("Contents", [])))

for table in ["vault", "open"]:
    ddb.create_table(TableName=table, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    ddb.put_item(TableName=table, Item={"id": {"S": "1"}, "value": {"S": table}})
key = {"id": {"S": "1"}}
attempt("transact-get-vault", lambda: ddb.transact_get_items(TransactItems=[{"Get": {"TableName": "open", "Key": key}}, {"Get": {"TableName": "vault", "Key": key}}]))
attempt("transact-get-open", lambda: ddb.transact_get_items(TransactItems=[{"Get": {"TableName": "open", "Key": key}}]))
attempt("partiql-vault", lambda: ddb.execute_statement(Statement="SELECT * FROM \"vault\" WHERE id = '1'"))
attempt("partiql-open", lambda: ddb.execute_statement(Statement="SELECT * FROM \"open\" WHERE id = '1'"))
attempt("batch-get-vault", lambda: ddb.batch_get_item(RequestItems={"vault": {"Keys": [key]}}))
"#;

#[test]
fn a_resource_scoped_iam_document_judges_everything_a_call_touches() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, dir.path(), &["111111111111"]);
    let sigward = Sigward::start(
        dir.path(),
        &config(dir.path(), &moto.base_key, &moto.url, ALL_BUT_VAULT),
    );
    let agent = Agent::new(&venv, dir.path(), &sigward, AGENT_SECRET);
    let output = agent.python("prod", SCRIPT);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        sigward.log()
    );
    let line = |name: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} line in {stdout}"))
            .to_string()
    };
    let denied = |name: &str, wanted: &str| {
        let got = line(name);
        assert!(
            got.starts_with("AccessDenied") && got.contains(wanted),
            "{name}: {got}"
        );
    };
    // Each refusal names the pair and the statement that refused it.
    denied(
        "copy-from-vault",
        "s3:GetObject on arn:aws:s3:::vault/secret is explicitly denied by statement Vault",
    );
    denied(
        "delete-objects-vault",
        "s3:DeleteObject on arn:aws:s3:::vault/secret is explicitly denied by statement Vault",
    );
    denied(
        "transact-get-vault",
        "dynamodb:GetItem on arn:aws:dynamodb:us-east-1:111111111111:table/vault is explicitly denied by statement VaultTable",
    );
    denied(
        "partiql-vault",
        "dynamodb:PartiQLSelect on arn:aws:dynamodb:us-east-1:111111111111:table/vault is explicitly denied by statement VaultTable",
    );
    denied("batch-get-vault", "statement VaultTable");
    // The same calls away from the vault go through, and so does a call on no resource.
    for name in [
        "copy-within-open",
        "delete-objects-open",
        "list-buckets",
        "transact-get-open",
        "partiql-open",
    ] {
        assert_eq!(line(name), "ok", "{name}");
    }
    // What AWS did: the vault's object is still there and nothing was copied out of it.
    assert_eq!(line("vault-keys"), "['secret']");
    assert_eq!(line("open-keys"), "['a']");
}
