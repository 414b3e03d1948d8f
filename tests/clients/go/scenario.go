// The client scenario in the AWS SDK for Go v2 (Debian's golang-github-aws-aws-sdk-go-v2-dev,
// built offline in GOPATH mode). The same steps as tests/clients/js/scenario.mjs and
// tests/clients/cli/scenario.sh; host/tests/integration/clients.rs runs them and judges the
// JSON lines they print: one per step, `{"step": …, …}`, or `{"step": …, "fail": …}`.
//
// Environment (all set by the test):
//
//	SCENARIO_STEPS     comma-separated: sts,s3,presign,dynamodb,sqs,deny,wrong
//	SCENARIO_PROFILES  profiles for the sts step ("" = the default chain only)
//	SCENARIO_WRONG     the profile whose secret is wrong (for the wrong step)
//	SCENARIO_ENDPOINT  sigward's direct listener (else HTTPS_PROXY carries everything)
//	SCENARIO_NAME      a prefix for buckets, tables and queues
//
// The SDK reads HTTPS_PROXY and AWS_CA_BUNDLE itself; the presigned URLs are fetched with
// an http.Client using the same proxy and CA.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

var failed = false

func report(fields map[string]interface{}) {
	line, _ := json.Marshal(fields)
	fmt.Println(string(line))
}

func fail(step string, err error) {
	failed = true
	report(map[string]interface{}{"step": step, "fail": err.Error()})
}

// content is len deterministic bytes (xorshift, so corruption shows).
func content(n int) []byte {
	x := uint32(0x12345678)
	out := make([]byte, n)
	for i := range out {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		out[i] = byte(x)
	}
	return out
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func load(ctx context.Context, profile string) (aws.Config, error) {
	opts := []func(*config.LoadOptions) error{config.WithRetryMaxAttempts(1)}
	if profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(profile))
	}
	if endpoint := os.Getenv("SCENARIO_ENDPOINT"); endpoint != "" {
		resolver := aws.EndpointResolverWithOptionsFunc(
			func(service, region string, options ...interface{}) (aws.Endpoint, error) {
				return aws.Endpoint{URL: endpoint, SigningRegion: region, HostnameImmutable: true}, nil
			})
		opts = append(opts, config.WithEndpointResolverWithOptions(resolver))
	}
	return config.LoadDefaultConfig(ctx, opts...)
}

// apiError names the code and message of an AWS error, as the SDK decoded them.
func apiError(err error) (string, string) {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode(), api.ErrorMessage()
	}
	return "", err.Error()
}

// httpClient fetches presigned URLs the way the SDK reaches sigward: HTTPS_PROXY and
// sigward's CA.
func httpClient() *http.Client {
	pool := x509.NewCertPool()
	if pem, err := os.ReadFile(os.Getenv("AWS_CA_BUNDLE")); err == nil {
		pool.AppendCertsFromPEM(pem)
	}
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			Proxy:           http.ProxyFromEnvironment,
			TLSClientConfig: &tls.Config{RootCAs: pool},
		},
	}
}

func main() {
	ctx := context.Background()
	name := os.Getenv("SCENARIO_NAME")
	cfg, err := load(ctx, firstProfile())
	if err != nil {
		fail("config", err)
		os.Exit(1)
	}
	s3c := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = os.Getenv("SCENARIO_ENDPOINT") != ""
	})
	bucket := name + "-go"
	for _, step := range strings.Split(os.Getenv("SCENARIO_STEPS"), ",") {
		switch step {
		case "sts":
			profiles := strings.Split(os.Getenv("SCENARIO_PROFILES"), ",")
			for _, profile := range profiles {
				c, err := load(ctx, profile)
				if err != nil {
					fail("sts", err)
					continue
				}
				who, err := sts.NewFromConfig(c).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
				if err != nil {
					fail("sts", err)
					continue
				}
				report(map[string]interface{}{"step": "sts", "profile": profile,
					"account": aws.ToString(who.Account), "arn": aws.ToString(who.Arn)})
			}
		case "s3":
			stepS3(ctx, s3c, bucket)
		case "presign":
			stepPresign(ctx, s3c, bucket)
		case "dynamodb":
			stepDynamo(ctx, dynamodb.NewFromConfig(cfg), name+"-go")
		case "sqs":
			stepSqs(ctx, sqs.NewFromConfig(cfg), name+"-go")
		case "deny":
			_, err := secretsmanager.NewFromConfig(cfg).GetSecretValue(ctx,
				&secretsmanager.GetSecretValueInput{SecretId: aws.String("db-password")})
			if err == nil {
				fail("deny", errors.New("GetSecretValue succeeded"))
				continue
			}
			code, message := apiError(err)
			report(map[string]interface{}{"step": "deny", "code": code, "message": message})
		case "wrong":
			c, err := load(ctx, os.Getenv("SCENARIO_WRONG"))
			if err != nil {
				fail("wrong", err)
				continue
			}
			_, err = sts.NewFromConfig(c).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
			if err == nil {
				fail("wrong", errors.New("a wrong secret was accepted"))
				continue
			}
			code, message := apiError(err)
			report(map[string]interface{}{"step": "wrong", "code": code, "message": message})
		case "":
		default:
			fail(step, errors.New("unknown step"))
		}
	}
	if failed {
		os.Exit(1)
	}
}

func firstProfile() string {
	return strings.Split(os.Getenv("SCENARIO_PROFILES"), ",")[0]
}

func stepS3(ctx context.Context, c *s3.Client, bucket string) {
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		fail("s3", fmt.Errorf("CreateBucket: %w", err))
		return
	}
	for _, size := range []int{1000, 20 << 20} {
		body := content(size)
		key := fmt.Sprintf("object-%d", size)
		uploader := manager.NewUploader(c, func(u *manager.Uploader) { u.PartSize = 5 << 20 })
		if _, err := uploader.Upload(ctx, &s3.PutObjectInput{
			Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body),
		}); err != nil {
			fail("s3", fmt.Errorf("upload %d bytes: %w", size, err))
			continue
		}
		got, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err != nil {
			fail("s3", fmt.Errorf("GetObject %d bytes: %w", size, err))
			continue
		}
		down, err := io.ReadAll(got.Body)
		got.Body.Close()
		if err != nil {
			fail("s3", err)
			continue
		}
		report(map[string]interface{}{"step": "s3", "size": size,
			"identical": digest(down) == digest(body), "multipart": size > 5<<20})
	}
}

func stepPresign(ctx context.Context, c *s3.Client, bucket string) {
	presigner := s3.NewPresignClient(c)
	client := httpClient()
	body := content(1000)
	put, err := presigner.PresignPutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String("presigned-put")})
	if err != nil {
		fail("presign", err)
		return
	}
	request, _ := http.NewRequest("PUT", put.URL, bytes.NewReader(body))
	response, err := client.Do(request)
	if err != nil {
		fail("presign", fmt.Errorf("presigned PUT: %w", err))
		return
	}
	io.Copy(io.Discard, response.Body)
	response.Body.Close()
	get, err := presigner.PresignGetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(bucket), Key: aws.String("presigned-put")})
	if err != nil {
		fail("presign", err)
		return
	}
	fetched, err := client.Get(get.URL)
	if err != nil {
		fail("presign", fmt.Errorf("presigned GET: %w", err))
		return
	}
	down, _ := io.ReadAll(fetched.Body)
	fetched.Body.Close()
	report(map[string]interface{}{"step": "presign", "put_status": response.StatusCode,
		"get_status": fetched.StatusCode, "identical": digest(down) == digest(body),
		"put_url_signed": strings.Contains(put.URL, "X-Amz-Signature=")})
}

func stepDynamo(ctx context.Context, c *dynamodb.Client, table string) {
	_, err := c.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: ddbtypes.KeyTypeHash}},
		BillingMode:          ddbtypes.BillingModePayPerRequest,
	})
	if err != nil {
		fail("dynamodb", fmt.Errorf("CreateTable: %w", err))
		return
	}
	item := map[string]ddbtypes.AttributeValue{
		"id": &ddbtypes.AttributeValueMemberS{Value: "k1"}, "v": &ddbtypes.AttributeValueMemberS{Value: "from go"}}
	if _, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
		fail("dynamodb", fmt.Errorf("PutItem: %w", err))
		return
	}
	got, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table),
		Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "k1"}}})
	if err != nil {
		fail("dynamodb", fmt.Errorf("GetItem: %w", err))
		return
	}
	value := ""
	if v, ok := got.Item["v"].(*ddbtypes.AttributeValueMemberS); ok {
		value = v.Value
	}
	report(map[string]interface{}{"step": "dynamodb", "value": value})
}

func stepSqs(ctx context.Context, c *sqs.Client, queue string) {
	created, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(queue)})
	if err != nil {
		fail("sqs", fmt.Errorf("CreateQueue: %w", err))
		return
	}
	if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: created.QueueUrl,
		MessageBody: aws.String("hello from go")}); err != nil {
		fail("sqs", fmt.Errorf("SendMessage: %w", err))
		return
	}
	got, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: created.QueueUrl, WaitTimeSeconds: 1})
	if err != nil {
		fail("sqs", fmt.Errorf("ReceiveMessage: %w", err))
		return
	}
	body := ""
	if len(got.Messages) > 0 {
		body = aws.ToString(got.Messages[0].Body)
	}
	report(map[string]interface{}{"step": "sqs", "body": body})
}
