#!/usr/bin/env bash
# The client scenario in the AWS CLI ($SCENARIO_AWS: Debian's awscli 2.x, or the PyPI v1
# CLI). The same steps and environment as tests/clients/go/scenario.go; prints the same
# JSON lines, which host/tests/integration/clients.rs judges.
#
# The CLI reads HTTPS_PROXY and AWS_CA_BUNDLE itself. It presigns only GETs (`aws s3
# presign`), so its presign step uploads with `s3 cp` and fetches the presigned GET with
# curl through the same proxy and CA. CLI v2 before 2.13 ignores AWS_ENDPOINT_URL: the
# direct listener is given with --endpoint-url.
set -uo pipefail
aws="${SCENARIO_AWS:-aws}"
name="${SCENARIO_NAME}-cli"
failed=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# emit KEY VALUE…: one JSON line; "true"/"false" become JSON's own, sizes and statuses
# numbers (account ids stay strings).
emit() {
    python3 -c 'import json, sys
a = sys.argv[1:]
def v(k, x):
    if k in ("size", "get_status", "put_status") and x.isdigit():
        return int(x)
    return {"true": True, "false": False}.get(x, x)
print(json.dumps({k: v(k, x) for k, x in zip(a[::2], a[1::2])}))' "$@"
}
fail() { failed=1; emit step "$1" fail "$2"; }

# cli PROFILE ARGS…: the CLI with the profile ("" = the default chain) and the endpoint.
cli() {
    local profile="$1"; shift
    local args=(--output json)
    [ -n "$profile" ] && args+=(--profile "$profile")
    [ -n "${SCENARIO_ENDPOINT:-}" ] && args+=(--endpoint-url "$SCENARIO_ENDPOINT")
    "$aws" "${args[@]}" "$@"
}

# refusal STEP ARGS…: the call must fail; report the code and message the CLI printed.
refusal() {
    local step="$1" profile="$2"; shift 2
    if cli "$profile" "$@" >"$work/out" 2>"$work/err"; then
        fail "$step" "the call succeeded: $(cat "$work/out")"
        return
    fi
    local said code message
    said="$(tr '\n' ' ' <"$work/err")"
    code="$(sed -n 's/.*An error occurred (\([^)]*\)).*/\1/p' <<<"$said")"
    message="$(sed -n 's/.*operation: \(.*\)/\1/p' <<<"$said")"
    emit step "$step" code "$code" message "${message:-$said}"
}

content() { # content SIZE FILE: deterministic bytes, as the other scenarios make them
    python3 -c 'import sys
n, x, out = int(sys.argv[1]), 0x12345678, bytearray()
for _ in range(n):
    x ^= (x << 13) & 0xFFFFFFFF; x ^= x >> 17; x ^= (x << 5) & 0xFFFFFFFF
    out.append(x & 0xFF)
open(sys.argv[2], "wb").write(out)' "$1" "$2"
}

profile="${SCENARIO_PROFILES%%,*}"
IFS=',' read -r -a steps <<<"${SCENARIO_STEPS:-}"
for step in "${steps[@]}"; do
    case "$step" in
    sts)
        IFS=',' read -r -a profiles <<<"${SCENARIO_PROFILES:-}"
        [ "${#profiles[@]}" -eq 0 ] && profiles=("")
        for p in "${profiles[@]}"; do
            if who="$(cli "$p" sts get-caller-identity 2>"$work/err")"; then
                emit step sts profile "$p" \
                    account "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Account"])' <<<"$who")" \
                    arn "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Arn"])' <<<"$who")"
            else
                fail sts "$(cat "$work/err")"
            fi
        done
        ;;
    s3)
        cli "$profile" s3 mb "s3://$name" >/dev/null 2>"$work/err" || { fail s3 "mb: $(cat "$work/err")"; continue; }
        for size in 1000 20971520; do
            content "$size" "$work/up-$size"
            if cli "$profile" s3 cp "$work/up-$size" "s3://$name/object-$size" >/dev/null 2>"$work/err" \
                && cli "$profile" s3 cp "s3://$name/object-$size" "$work/down-$size" >/dev/null 2>>"$work/err"; then
                same=false; cmp -s "$work/up-$size" "$work/down-$size" && same=true
                multipart=false; [ "$size" -gt 8388608 ] && multipart=true
                emit step s3 size "$size" identical "$same" multipart "$multipart"
            else
                fail s3 "$size bytes: $(cat "$work/err")"
            fi
        done
        ;;
    presign)
        content 1000 "$work/presigned"
        cli "$profile" s3 cp "$work/presigned" "s3://$name/presigned-put" >/dev/null 2>"$work/err" \
            || { fail presign "$(cat "$work/err")"; continue; }
        url="$(cli "$profile" s3 presign "s3://$name/presigned-put" --expires-in 300 2>"$work/err")" \
            || { fail presign "$(cat "$work/err")"; continue; }
        curl_args=(-sS -o "$work/fetched" -w '%{http_code}' --cacert "$AWS_CA_BUNDLE")
        [ -z "${SCENARIO_ENDPOINT:-}" ] && curl_args+=(--proxy "$HTTPS_PROXY")
        status="$(curl "${curl_args[@]}" "$url" 2>"$work/err")" || { fail presign "curl: $(cat "$work/err")"; continue; }
        same=false; cmp -s "$work/presigned" "$work/fetched" && same=true
        emit step presign get_status "$status" identical "$same" \
            get_url_signed "$(grep -q 'X-Amz-Signature=' <<<"$url" && echo true || echo false)"
        ;;
    dynamodb)
        cli "$profile" dynamodb create-table --table-name "$name" \
            --attribute-definitions AttributeName=id,AttributeType=S \
            --key-schema AttributeName=id,KeyType=HASH --billing-mode PAY_PER_REQUEST >/dev/null 2>"$work/err" \
            && cli "$profile" dynamodb put-item --table-name "$name" \
                --item '{"id": {"S": "k1"}, "v": {"S": "from cli"}}' >/dev/null 2>>"$work/err" \
            && got="$(cli "$profile" dynamodb get-item --table-name "$name" --key '{"id": {"S": "k1"}}' 2>>"$work/err")" \
            && emit step dynamodb value "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Item"]["v"]["S"])' <<<"$got")" \
            || fail dynamodb "$(cat "$work/err")"
        ;;
    sqs)
        url="$(cli "$profile" sqs create-queue --queue-name "$name" --query QueueUrl --output text 2>"$work/err")" \
            && cli "$profile" sqs send-message --queue-url "$url" --message-body "hello from cli" >/dev/null 2>>"$work/err" \
            && got="$(cli "$profile" sqs receive-message --queue-url "$url" --wait-time-seconds 1 2>>"$work/err")" \
            && emit step sqs body "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Messages"][0]["Body"])' <<<"$got")" \
            || fail sqs "$(cat "$work/err")"
        ;;
    deny) refusal deny "$profile" secretsmanager get-secret-value --secret-id db-password ;;
    wrong) refusal wrong "${SCENARIO_WRONG:-}" sts get-caller-identity ;;
    "") ;;
    *) fail "$step" "unknown step" ;;
    esac
done
exit "$failed"
