#!/usr/bin/env bash
# The AWS side of the local stack, created by AWS CLI calls only: the upload bucket, the event
# queue with its dead-letter queue (redrive policy), the results topic, and the bucket's event
# notifications to the queue for songs_to_index/ and songs_to_check/ (songs_to_check/streams/
# included).
#
# LocalStack runs it from /etc/localstack/init/ready.d/ once it is ready (docker-compose.yml);
# tests/deploy runs the same file against moto's server. Everything is taken from the
# environment, with the names docker-compose.yml gives the service:
#   AWS_ENDPOINT_URL (default http://localhost:4566), AWS_REGION, S3_BUCKET, SQS_QUEUE_NAME,
#   SNS_TOPIC_NAME, SQS_VISIBILITY_TIMEOUT_S, SQS_MAX_RECEIVE_COUNT.
# Running it twice is harmless: every call creates or overwrites with the same values.
set -euo pipefail

endpoint=${AWS_ENDPOINT_URL:-http://localhost:4566}
region=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
bucket=${S3_BUCKET:-song-detection}
queue=${SQS_QUEUE_NAME:-song-detection-events}
dlq=${queue}-dlq
topic=${SNS_TOPIC_NAME:-song-detection-results}
visibility_s=${SQS_VISIBILITY_TIMEOUT_S:-120}
max_receive=${SQS_MAX_RECEIVE_COUNT:-5}

# LocalStack wants credentials on every call; any value does.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
export AWS_DEFAULT_REGION=$region
export AWS_PAGER=""

awscli() { aws --endpoint-url "$endpoint" --region "$region" --output text "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- bucket -------------------------------------------------------------------------------
# Outside us-east-1, creating a bucket one already owns is an error: look first.
if awscli s3api head-bucket --bucket "$bucket" >/dev/null 2>&1; then
    :
elif [ "$region" = us-east-1 ]; then
    awscli s3api create-bucket --bucket "$bucket" >/dev/null
else
    awscli s3api create-bucket --bucket "$bucket" \
        --create-bucket-configuration "LocationConstraint=$region" >/dev/null
fi

# --- dead-letter queue, then the queue that redrives into it ------------------------------
dlq_url=$(awscli sqs create-queue --queue-name "$dlq" \
    --attributes MessageRetentionPeriod=1209600 --query QueueUrl)
dlq_arn=$(awscli sqs get-queue-attributes --queue-url "$dlq_url" \
    --attribute-names QueueArn --query Attributes.QueueArn)

cat >"$work/queue-attributes.json" <<JSON
{
  "VisibilityTimeout": "$visibility_s",
  "MessageRetentionPeriod": "345600",
  "ReceiveMessageWaitTimeSeconds": "20",
  "RedrivePolicy": "{\"deadLetterTargetArn\":\"$dlq_arn\",\"maxReceiveCount\":\"$max_receive\"}"
}
JSON
queue_url=$(awscli sqs create-queue --queue-name "$queue" \
    --attributes "file://$work/queue-attributes.json" --query QueueUrl)
queue_arn=$(awscli sqs get-queue-attributes --queue-url "$queue_url" \
    --attribute-names QueueArn --query Attributes.QueueArn)

# Only this bucket may send to the queue (as on AWS; LocalStack does not enforce it).
cat >"$work/queue-policy.json" <<JSON
{
  "Policy": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"BucketEvents\",\"Effect\":\"Allow\",\"Principal\":{\"Service\":\"s3.amazonaws.com\"},\"Action\":\"sqs:SendMessage\",\"Resource\":\"$queue_arn\",\"Condition\":{\"ArnEquals\":{\"aws:SourceArn\":\"arn:aws:s3:::$bucket\"}}}]}"
}
JSON
awscli sqs set-queue-attributes --queue-url "$queue_url" \
    --attributes "file://$work/queue-policy.json"

# --- results topic ------------------------------------------------------------------------
topic_arn=$(awscli sns create-topic --name "$topic" --query TopicArn)

# --- bucket -> queue: one rule per prefix --------------------------------------------------
cat >"$work/notification.json" <<JSON
{
  "QueueConfigurations": [
    {
      "Id": "index-uploads",
      "QueueArn": "$queue_arn",
      "Events": ["s3:ObjectCreated:*"],
      "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "songs_to_index/"}]}}
    },
    {
      "Id": "check-uploads",
      "QueueArn": "$queue_arn",
      "Events": ["s3:ObjectCreated:*"],
      "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "songs_to_check/"}]}}
    }
  ]
}
JSON
awscli s3api put-bucket-notification-configuration --bucket "$bucket" \
    --notification-configuration "file://$work/notification.json"

echo "song-detection: bucket s3://$bucket -> queue $queue_url (DLQ $dlq_url after" \
    "$max_receive receives); results topic $topic_arn"
