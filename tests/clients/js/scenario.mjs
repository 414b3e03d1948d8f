// The client scenario in the AWS SDK for JavaScript v3 (npm, pinned in package.json). The
// same steps as tests/clients/go/scenario.go; see there for the environment it reads and
// the JSON lines it prints, which host/tests/integration/clients.rs judges.
//
// The SDK reads neither HTTPS_PROXY nor AWS_CA_BUNDLE: the proxy is an HttpsProxyAgent in
// a NodeHttpHandler, and sigward's CA reaches Node through NODE_EXTRA_CA_CERTS.
import { createHash } from "node:crypto";
import https from "node:https";
import { Readable } from "node:stream";

import { CreateTableCommand, DynamoDBClient, GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { CreateQueueCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";
import { fromIni, fromNodeProviderChain } from "@aws-sdk/credential-providers";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { HttpsProxyAgent } from "https-proxy-agent";

const env = process.env;
const endpoint = env.SCENARIO_ENDPOINT || undefined;
const agent = endpoint ? undefined : new HttpsProxyAgent(env.HTTPS_PROXY);
let failed = false;

const report = (fields) => console.log(JSON.stringify(fields));
const fail = (step, error) => {
  failed = true;
  report({ step, fail: `${error?.name ?? ""}: ${error?.message ?? error}` });
};

function clientConfig(profile) {
  return {
    region: env.AWS_DEFAULT_REGION,
    endpoint,
    maxAttempts: 1,
    credentials: profile ? fromIni({ profile }) : fromNodeProviderChain(),
    requestHandler: new NodeHttpHandler(agent ? { httpsAgent: agent } : {}),
  };
}

function content(n) {
  let x = 0x12345678;
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

const digest = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** An HTTPS request for a presigned URL, through the same proxy (or to the direct listener). */
function fetchUrl(method, url, body) {
  return new Promise((resolve, reject) => {
    const request = https.request(url, { method, agent, headers: body ? { "content-length": body.length } : {} }, (response) => {
      const chunks = [];
      response.on("data", (c) => chunks.push(c));
      response.on("end", () => resolve({ status: response.statusCode, body: Buffer.concat(chunks) }));
    });
    request.on("error", reject);
    request.setTimeout(60000, () => request.destroy(new Error("timeout")));
    request.end(body);
  });
}

const profiles = (env.SCENARIO_PROFILES ?? "").split(",");
const config = clientConfig(profiles[0]);
const s3 = new S3Client({ ...config, forcePathStyle: Boolean(endpoint) });
const name = `${env.SCENARIO_NAME}-js`;

async function stepS3() {
  await s3.send(new CreateBucketCommand({ Bucket: name }));
  for (const size of [1000, 20 << 20]) {
    const body = content(size);
    const key = `object-${size}`;
    // lib-storage: one PutObject below the part size, a multipart upload above it.
    await new Upload({ client: s3, params: { Bucket: name, Key: key, Body: body }, partSize: 5 << 20 }).done();
    const got = await s3.send(new GetObjectCommand({ Bucket: name, Key: key }));
    const down = Buffer.from(await got.Body.transformToByteArray());
    report({ step: "s3", size, identical: digest(down) === digest(body), multipart: size > 5 << 20 });
  }
  // A stream of known length: sent aws-chunked with a CRC32 trailer
  // (STREAMING-UNSIGNED-PAYLOAD-TRAILER), as the SDK sends every stream over HTTPS.
  const body = content(300 << 10);
  await s3.send(new PutObjectCommand({
    Bucket: name, Key: "streamed", Body: Readable.from([body]), ContentLength: body.length,
  }));
  const got = await s3.send(new GetObjectCommand({ Bucket: name, Key: "streamed" }));
  const down = Buffer.from(await got.Body.transformToByteArray());
  report({ step: "s3", size: body.length, identical: digest(down) === digest(body), streamed: true });
}

async function stepPresign() {
  const body = content(1000);
  const put = await getSignedUrl(s3, new PutObjectCommand({ Bucket: name, Key: "presigned-put" }), { expiresIn: 300 });
  const putAnswer = await fetchUrl("PUT", put, body);
  const get = await getSignedUrl(s3, new GetObjectCommand({ Bucket: name, Key: "presigned-put" }), { expiresIn: 300 });
  const getAnswer = await fetchUrl("GET", get);
  report({
    step: "presign",
    put_status: putAnswer.status,
    get_status: getAnswer.status,
    identical: digest(getAnswer.body) === digest(body),
    put_url_signed: put.includes("X-Amz-Signature="),
  });
}

async function stepDynamo() {
  const ddb = new DynamoDBClient(config);
  await ddb.send(new CreateTableCommand({
    TableName: name,
    AttributeDefinitions: [{ AttributeName: "id", AttributeType: "S" }],
    KeySchema: [{ AttributeName: "id", KeyType: "HASH" }],
    BillingMode: "PAY_PER_REQUEST",
  }));
  await ddb.send(new PutItemCommand({ TableName: name, Item: { id: { S: "k1" }, v: { S: "from js" } } }));
  const got = await ddb.send(new GetItemCommand({ TableName: name, Key: { id: { S: "k1" } } }));
  report({ step: "dynamodb", value: got.Item?.v?.S ?? "" });
}

async function stepSqs() {
  const sqs = new SQSClient(config);
  const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: name }));
  await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: "hello from js" }));
  const got = await sqs.send(new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 1 }));
  report({ step: "sqs", body: got.Messages?.[0]?.Body ?? "" });
}

async function refusal(step, call) {
  try {
    await call();
    fail(step, new Error("the call succeeded"));
  } catch (error) {
    report({ step, code: error.name ?? "", message: error.message ?? "" });
  }
}

const steps = {
  async sts() {
    for (const profile of profiles) {
      const who = await new STSClient(clientConfig(profile)).send(new GetCallerIdentityCommand({}));
      report({ step: "sts", profile, account: who.Account, arn: who.Arn });
    }
  },
  s3: stepS3,
  presign: stepPresign,
  dynamodb: stepDynamo,
  sqs: stepSqs,
  deny: () => refusal("deny", () =>
    new SecretsManagerClient(config).send(new GetSecretValueCommand({ SecretId: "db-password" }))),
  wrong: () => refusal("wrong", () =>
    new STSClient(clientConfig(env.SCENARIO_WRONG)).send(new GetCallerIdentityCommand({}))),
};

for (const step of (env.SCENARIO_STEPS ?? "").split(",").filter(Boolean)) {
  try {
    if (!steps[step]) throw new Error("unknown step");
    await steps[step]();
  } catch (error) {
    fail(step, error);
  }
}
process.exit(failed ? 1 : 0);
