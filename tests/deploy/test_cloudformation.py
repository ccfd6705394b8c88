"""The CloudFormation templates lint clean and wire what the code expects.

cfn-lint checks each template against the resource schemas; the tests below check what no
linter knows: that the containers get the variables Settings reads, run commands the CLI has,
stop within the ECS timeout, and that the task roles grant exactly what the worker does.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import decode

from service import cli
from service.settings import Settings
from tests.deploy.wiring import ROOT, cli_commands, settings_variables

TEMPLATES = sorted((ROOT / "infra" / "cloudformation").glob("*.yaml"))
MAIN = ROOT / "infra" / "cloudformation" / "song-detection.yaml"


def load(path: Path) -> dict[str, Any]:
    template, errors = decode(str(path))
    assert not errors, errors
    return template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load(MAIN)


def resource(template: dict[str, Any], name: str) -> dict[str, Any]:
    return template["Resources"][name]["Properties"]


def container(template: dict[str, Any], task: str) -> dict[str, Any]:
    (definition,) = resource(template, task)["ContainerDefinitions"]
    return definition


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_there_are_templates() -> None:
    assert MAIN in TEMPLATES and len(TEMPLATES) >= 2


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_passes(path: Path) -> None:
    config = ManualArgs(include_checks=["I"], regions=["us-east-1", "eu-west-1"])
    matches = lint_file(path, config=config)
    assert not matches, "\n".join(str(m) for m in matches)


@pytest.mark.parametrize("task", ["ApiTaskDefinition", "WorkerTaskDefinition"])
def test_containers_get_only_variables_the_service_reads(
    template: dict[str, Any], task: str
) -> None:
    known = settings_variables()
    c = container(template, task)
    names = [e["Name"] for e in c["Environment"]] + [s["Name"] for s in c["Secrets"]]
    assert len(names) == len(set(names)), "a variable is set twice"
    unknown = set(names) - known
    assert not unknown, f"{task} sets variables Settings does not read: {unknown}"


@pytest.mark.parametrize("task", ["ApiTaskDefinition", "WorkerTaskDefinition"])
def test_database_arrives_in_parts_with_credentials_from_secrets_manager(
    template: dict[str, Any], task: str
) -> None:
    c = container(template, task)
    env = {e["Name"]: e["Value"] for e in c["Environment"]}
    secrets = {s["Name"]: s["ValueFrom"] for s in c["Secrets"]}
    assert "DATABASE_URL" not in env
    assert env["DB_HOST"] == {"Fn::GetAtt": ["DbCluster", "Endpoint.Address"]}
    assert env["DB_PORT"] == {"Fn::GetAtt": ["DbCluster", "Endpoint.Port"]}
    # Lookups on the reader endpoint when the stack has a reader instance; otherwise the
    # variable is empty (unset) and everything goes to the writer.
    assert env["DB_READ_HOST"] == {
        "Fn::If": ["HasDbReader", {"Fn::GetAtt": ["DbCluster", "ReadEndpoint.Address"]}, ""]
    }
    assert "DATABASE_READ_URL" not in env
    assert env["DB_NAME"] == resource(template, "DbCluster")["DatabaseName"]
    assert secrets["DB_USER"] == {"Fn::Sub": "${DbSecret}:username::"}
    assert secrets["DB_PASSWORD"] == {"Fn::Sub": "${DbSecret}:password::"}
    # Production refuses to start without an API key.
    assert env["ENVIRONMENT"] == "production"
    assert secrets["API_KEY"] == {"Ref": "ApiKeySecret"}
    # The execution role, which injects secrets, may read exactly these two.
    (read,) = statements(resource(template, "TaskExecutionRole"))
    assert read["Action"] == "secretsmanager:GetSecretValue"
    assert read["Resource"] == [{"Ref": "DbSecret"}, {"Ref": "ApiKeySecret"}]


def test_container_settings_validate(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The literal values the template sets are valid for Settings (placeholders for the rest)."""
    for task in ("ApiTaskDefinition", "WorkerTaskDefinition"):
        c = container(template, task)
        for variable in [*c["Environment"], *c["Secrets"]]:
            value = variable.get("Value")
            if not isinstance(value, str):
                value = {"DB_PORT": "5432", "WORKER_CONCURRENCY": "4"}.get(
                    variable["Name"], "placeholder"
                )
            monkeypatch.setenv(variable["Name"], value)
        s = Settings(_env_file=None)  # type: ignore[call-arg]
        assert s.environment == "production" and not s.is_sqlite
        assert s.database_url.endswith("/songs?sslmode=require")
        # The reader, when the stack has one, shares the writer's name, login and sslmode.
        assert s.database_read_url is not None
        assert s.database_read_url.endswith("/songs?sslmode=require")


@pytest.mark.parametrize(
    ("task", "command"), [("ApiTaskDefinition", "serve"), ("WorkerTaskDefinition", "worker")]
)
def test_containers_run_cli_commands(template: dict[str, Any], task: str, command: str) -> None:
    assert container(template, task)["Command"] == [command]
    if command not in cli_commands():
        pytest.skip(f"`song-detection {command}` is not in the CLI yet")


def test_stop_timeout_covers_graceful_shutdown(template: dict[str, Any]) -> None:
    """ECS sends SIGKILL StopTimeout seconds after SIGTERM: both roles must be done by then."""
    graceful = re.search(r"timeout_graceful_shutdown=(\d+)", inspect.getsource(cli.cmd_serve))
    assert graceful, "cmd_serve no longer sets uvicorn's graceful shutdown timeout"
    api_stop = container(template, "ApiTaskDefinition")["StopTimeout"]
    assert int(graceful.group(1)) < api_stop <= 120
    worker = container(template, "WorkerTaskDefinition")
    grace = {e["Name"]: e["Value"] for e in worker["Environment"]}["WORKER_SHUTDOWN_GRACE_S"]
    assert float(grace) < worker["StopTimeout"] <= 120


def test_worker_gets_its_bucket_queue_and_topic(template: dict[str, Any]) -> None:
    env = {
        e["Name"]: e["Value"] for e in container(template, "WorkerTaskDefinition")["Environment"]
    }
    assert env["S3_BUCKET"] == {"Ref": "UploadsBucket"}
    assert env["SQS_QUEUE_URL"] == {"Ref": "EventsQueue"}  # Ref of a queue is its URL
    assert env["SNS_TOPIC_ARN"] == {"Ref": "ResultsTopic"}
    assert env["WORKER_HEALTH_PORT"] == str(Settings.model_fields["worker_health_port"].default)
    api_env = {
        e["Name"]: e["Value"] for e in container(template, "ApiTaskDefinition")["Environment"]
    }
    # The API does not poll: the worker service does, and the API role has no SQS rights.
    assert api_env["RUN_WORKER_IN_API"] == "false"
    assert "SQS_QUEUE_URL" not in api_env


def test_worker_role_grants_what_the_worker_does_and_no_more(template: dict[str, Any]) -> None:
    granted: dict[str, list[Any]] = {}
    for statement in statements(resource(template, "WorkerTaskRole")):
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"wildcard action {action}"
            granted.setdefault(action, []).extend(as_list(statement["Resource"]))
    for resources in granted.values():
        assert "*" not in resources
    queue = {"Fn::GetAtt": ["EventsQueue", "Arn"]}
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"):
        assert granted[action] == [queue]
    assert granted["sns:Publish"] == [{"Ref": "ResultsTopic"}]
    assert granted["s3:GetObject"] == [
        {"Fn::Sub": "${UploadsBucket.Arn}/songs_to_index/*"},
        {"Fn::Sub": "${UploadsBucket.Arn}/songs_to_check/*"},
    ]
    # Reports are written next to the checked file, never into the catalogue's folder.
    assert granted["s3:PutObject"] == [{"Fn::Sub": "${UploadsBucket.Arn}/songs_to_check/*"}]
    # Sending only to the dead-letter queue: messages given up on, with their reason.
    assert granted["sqs:SendMessage"] == [{"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}]
    assert not {
        a for a in granted if a.startswith(("sqs:SendMessageBatch", "s3:Delete", "sns:Sub"))
    }
    assert "Policies" not in resource(template, "ApiTaskRole")


def test_bucket_notifies_the_queue_for_both_prefixes(template: dict[str, Any]) -> None:
    bucket = resource(template, "UploadsBucket")
    rules = bucket["NotificationConfiguration"]["QueueConfigurations"]
    prefixes = {}
    for rule in rules:
        assert rule["Queue"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]}
        assert rule["Event"] == "s3:ObjectCreated:*"
        ((name, prefix),) = [(r["Name"], r["Value"]) for r in rule["Filter"]["S3Key"]["Rules"]]
        prefixes[prefix] = name
    assert prefixes == {"songs_to_index/": "prefix", "songs_to_check/": "prefix"}
    sse = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4


def test_queue_policy_names_the_bucket_without_referencing_it(template: dict[str, Any]) -> None:
    """The bucket's notification needs the queue policy first; a Ref back would be a cycle."""
    policy = template["Resources"]["EventsQueuePolicy"]
    assert "UploadsBucket" not in repr(policy)
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    source, source_values = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    bucket_name, name_values = resource(template, "UploadsBucket")["BucketName"]["Fn::Sub"]
    assert source == f"arn:${{AWS::Partition}}:s3:::{bucket_name}"
    assert source_values == name_values
    assert "EventsQueuePolicy" in as_list(template["Resources"]["UploadsBucket"]["DependsOn"])


def test_queue_redrives_into_the_dead_letter_queue(template: dict[str, Any]) -> None:
    queue = resource(template, "EventsQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["DeadLetterQueue", "Arn"]
    }
    assert queue["VisibilityTimeout"] == Settings.model_fields["sqs_visibility_timeout_s"].default
    assert queue["ReceiveMessageWaitTimeSeconds"] == Settings.model_fields["sqs_wait_s"].default


def test_database_is_serverless_v2_encrypted_and_reachable_only_from_tasks(
    template: dict[str, Any],
) -> None:
    cluster = resource(template, "DbCluster")
    assert cluster["Engine"] == "aurora-postgresql"
    assert cluster["StorageEncrypted"] is True
    assert cluster["ServerlessV2ScalingConfiguration"] == {
        "MinCapacity": {"Ref": "DbMinCapacity"},
        "MaxCapacity": {"Ref": "DbMaxCapacity"},
    }
    assert resource(template, "DbWriter")["DBInstanceClass"] == "db.serverless"
    ingress = resource(template, "DatabaseSecurityGroup")["SecurityGroupIngress"]
    assert {i["SourceSecurityGroupId"]["Ref"] for i in ingress} == {
        "ApiSecurityGroup",
        "WorkerSecurityGroup",
    }
    assert not any("CidrIp" in i for i in ingress)
    api_ingress = resource(template, "ApiSecurityGroup")["SecurityGroupIngress"]
    assert [i["SourceSecurityGroupId"] for i in api_ingress] == [
        {"Ref": "LoadBalancerSecurityGroup"}
    ]


def test_load_balancer_checks_readiness_on_the_api_port(template: dict[str, Any]) -> None:
    group = resource(template, "ApiTargetGroup")
    assert group["HealthCheckPath"] == "/readyz"
    (mapping,) = container(template, "ApiTaskDefinition")["PortMappings"]
    assert group["Port"] == mapping["ContainerPort"] == Settings.model_fields["port"].default
    from service.api.routes_health import router

    assert {"/readyz", "/healthz"} <= {route.path for route in router.routes}


def test_autoscaling_api_on_cpu_and_requests_worker_on_backlog_per_task(
    template: dict[str, Any],
) -> None:
    policies = {
        name: r["Properties"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"
    }
    by_target: dict[str, list[dict[str, Any]]] = {}
    for p in policies.values():
        by_target.setdefault(p["ScalingTargetId"]["Ref"], []).append(
            p["TargetTrackingScalingPolicyConfiguration"]
        )
    api_metrics = {
        c["PredefinedMetricSpecification"]["PredefinedMetricType"]
        for c in by_target["ApiScalableTarget"]
    }
    assert api_metrics == {"ECSServiceAverageCPUUtilization", "ALBRequestCountPerTarget"}
    (worker,) = by_target["WorkerScalableTarget"]
    metrics = {m["Id"]: m for m in worker["CustomizedMetricSpecification"]["Metrics"]}
    visible = metrics["visible"]["MetricStat"]["Metric"]
    assert visible["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert visible["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["EventsQueue", "QueueName"]}
    assert metrics["tasks"]["MetricStat"]["Metric"]["MetricName"] == "RunningTaskCount"
    returned = [m for m in metrics.values() if m["ReturnData"]]
    assert [m["Expression"] for m in returned] == ["visible / tasks"]


def test_medialive_archives_12_s_aac_segments_under_streams() -> None:
    template = load(ROOT / "infra" / "cloudformation" / "medialive.yaml")
    channel = resource(template, "Channel")
    (destination,) = channel["Destinations"]
    url = destination["Settings"][0]["Url"]["Fn::Sub"]
    assert url.startswith("s3ssl://${BucketName}/songs_to_check/streams/${StreamName}/")
    (group,) = channel["EncoderSettings"]["OutputGroups"]
    archive = group["OutputGroupSettings"]["ArchiveGroupSettings"]
    assert archive["Destination"]["DestinationRefId"] == destination["Id"]
    assert archive["RolloverInterval"] == {"Ref": "SegmentSeconds"}
    assert template["Parameters"]["SegmentSeconds"]["Default"] == 12
    (audio,) = channel["EncoderSettings"]["AudioDescriptions"]
    aac = audio["CodecSettings"]["AacSettings"]
    assert aac["SampleRate"] == 44100
    # An archive output holds exactly one video encode (MediaLive User Guide): the smallest.
    (video,) = channel["EncoderSettings"]["VideoDescriptions"]
    assert video["Width"] * video["Height"] <= 320 * 180
    assert video["CodecSettings"]["H264Settings"]["Bitrate"] <= 200_000
    for output in group["Outputs"]:
        assert output["VideoDescriptionName"] == video["Name"]
        assert output["AudioDescriptionNames"] == [audio["Name"]]
        assert output["OutputSettings"]["ArchiveOutputSettings"]["Extension"] == "ts"


def test_medialive_role_writes_its_segments_and_logs() -> None:
    template = load(ROOT / "infra" / "cloudformation" / "medialive.yaml")
    assert resource(template, "Channel")["LogLevel"] != "DISABLED"
    granted = {
        action: statement["Resource"]
        for statement in statements(resource(template, "ChannelRole"))
        for action in as_list(statement["Action"])
    }
    assert granted["s3:PutObject"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${BucketName}/songs_to_check/streams/${StreamName}/*"
    }
    for action in ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"):
        (group, streams) = granted[action]
        assert group["Fn::Sub"].endswith(":log-group:ElementalMediaLive")
        assert streams["Fn::Sub"].endswith(":log-group:ElementalMediaLive:*")


#: Fargate's CPU units and the memory (MiB) each accepts (AWS Fargate task size table), within
#: the sizes the template offers.
FARGATE_MEMORY_MIB = {
    512: range(1024, 4096 + 1, 1024),
    1024: range(2048, 8192 + 1, 1024),
    2048: range(4096, 16384 + 1, 1024),
    4096: range(8192, 30720 + 1, 1024),
}


def rule_for(template: dict[str, Any], parameter: str, value: str) -> dict[str, Any]:
    (rule,) = [
        r
        for r in template["Rules"].values()
        if r.get("RuleCondition") == {"Fn::Equals": [{"Ref": parameter}, value]}
    ]
    return rule


@pytest.mark.parametrize("service", ["Api", "Worker"])
def test_only_valid_fargate_cpu_memory_pairs(template: dict[str, Any], service: str) -> None:
    cpus = template["Parameters"][f"{service}Cpu"]["AllowedValues"]
    memories = {int(m) for m in template["Parameters"][f"{service}Memory"]["AllowedValues"]}
    assert set(cpus) <= set(FARGATE_MEMORY_MIB)
    for cpu in cpus:
        (assertion,) = rule_for(template, f"{service}Cpu", str(cpu))["Assertions"]
        allowed, ref = assertion["Assert"]["Fn::Contains"]
        assert ref == {"Ref": f"{service}Memory"}
        valid = {m for m in memories if m in FARGATE_MEMORY_MIB[cpu]}
        assert {int(m) for m in allowed} == valid, f"{cpu} CPU units"


def test_https_by_default_plain_http_only_by_explicit_opt_in(template: dict[str, Any]) -> None:
    assert template["Parameters"]["AllowPlainHttp"]["Default"] == "false"
    rule = template["Rules"]["HttpsOrExplicitPlainHttp"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "CertificateArn"}, ""]}
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "AllowPlainHttp"}, "true"]}
    # With a certificate, port 80 redirects to 443 and only the HTTPS listener forwards.
    when_cert, without = resource(template, "HttpListener")["DefaultActions"]["Fn::If"][1:]
    assert when_cert == [
        {
            "Type": "redirect",
            "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"},
        }
    ]
    assert without[0]["Type"] == "forward"
    https = template["Resources"]["HttpsListener"]
    assert https["Condition"] == "HasCertificate"
    assert https["Properties"]["Protocol"] == "HTTPS"
    # The API service waits for whichever listener forwards to its target group.
    depends = as_list(template["Resources"]["ApiService"]["DependsOn"])
    assert "ForwardingListenerReady" in depends
    handle = template["Resources"]["ForwardingListenerReady"]
    assert handle["Metadata"]["Listener"] == {
        "Fn::If": ["HasCertificate", {"Ref": "HttpsListener"}, {"Ref": "HttpListener"}]
    }


def test_autoscaled_services_set_no_desired_count(template: dict[str, Any]) -> None:
    scaled = {
        r["Properties"]["ResourceId"]["Fn::Sub"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::ApplicationAutoScaling::ScalableTarget"
    }
    for name in ("ApiService", "WorkerService"):
        assert any(f"${{{name}.Name}}" in target for target in scaled)
        assert "DesiredCount" not in resource(template, name)


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: r
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def alarm_metrics(alarm: dict[str, Any]) -> set[str]:
    props = alarm["Properties"]
    if "MetricName" in props:
        return {props["MetricName"]}
    return {m["MetricStat"]["Metric"]["MetricName"] for m in props["Metrics"] if "MetricStat" in m}


def test_alarms_cover_failures_and_notify_the_optional_targets(template: dict[str, Any]) -> None:
    found = alarms(template)
    assert {name: alarm_metrics(a) for name, a in found.items()} == {
        "DeadLetterAlarm": {"ApproximateNumberOfMessagesVisible"},
        "WorkerQueueAgeAlarm": {"ApproximateAgeOfOldestMessage"},
        "Api5xxRateAlarm": {"HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count", "RequestCount"},
        "UnhealthyTargetsAlarm": {"UnHealthyHostCount"},
        "StreamSilenceAlarm": {"PutRequests"},
    }
    dlq = found["DeadLetterAlarm"]["Properties"]
    assert dlq["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}
    ]
    assert dlq["Threshold"] == 0 and dlq["ComparisonOperator"] == "GreaterThanThreshold"
    targets = [
        {"Fn::If": ["HasAlarmEmail", {"Ref": "AlarmTopic"}, {"Ref": "AWS::NoValue"}]},
        {"Fn::If": ["HasAlarmTopicArn", {"Ref": "AlarmTopicArn"}, {"Ref": "AWS::NoValue"}]},
    ]
    for name, alarm in found.items():
        assert alarm["Properties"]["AlarmActions"] == targets, name
        assert alarm["Properties"]["OKActions"] == targets, name
    topic = template["Resources"]["AlarmTopic"]
    assert topic["Condition"] == "HasAlarmEmail"
    assert topic["Properties"]["Subscription"] == [
        {"Protocol": "email", "Endpoint": {"Ref": "AlarmEmail"}}
    ]
    # Stream silence reads the bucket's request metrics for the streams' prefix.
    silence = found["StreamSilenceAlarm"]
    assert silence["Condition"] == "WatchesStreams"
    filter_id = {d["Name"]: d["Value"] for d in silence["Properties"]["Dimensions"]}["FilterId"]
    configs = resource(template, "UploadsBucket")["MetricsConfigurations"]["Fn::If"][1]
    assert configs == [{"Id": filter_id, "Prefix": "songs_to_check/streams/"}]
    assert silence["Properties"]["TreatMissingData"] == "breaching"


def test_database_reader_and_deletion_protection_are_parameters(
    template: dict[str, Any],
) -> None:
    assert resource(template, "DbCluster")["DeletionProtection"] == {"Ref": "DbDeletionProtection"}
    assert template["Parameters"]["DbDeletionProtection"]["Default"] == "true"
    reader = template["Resources"]["DbReaderInstance"]
    assert reader["Condition"] == "HasDbReader"
    assert template["Parameters"]["DbReader"]["Default"] == "false"
    props = reader["Properties"]
    assert props["DBClusterIdentifier"] == {"Ref": "DbCluster"}
    assert props["DBInstanceClass"] == "db.serverless"
    assert props["AvailabilityZone"]["Fn::If"][0] == "HasDbReaderAz"


def test_load_balancer_access_logs_are_optional(template: dict[str, Any]) -> None:
    attributes = resource(template, "LoadBalancer")["LoadBalancerAttributes"]
    (enabled,) = [a for a in attributes if a.get("Key") == "access_logs.s3.enabled"]
    assert enabled["Value"] == {"Fn::If": ["HasAccessLogs", "true", "false"]}
    conditional = [a["Fn::If"] for a in attributes if "Fn::If" in a]
    assert {c[1]["Key"] for c in conditional} == {"access_logs.s3.bucket", "access_logs.s3.prefix"}
    assert all(c[0] == "HasAccessLogs" for c in conditional)


def test_bucket_name_is_new_for_every_stack(template: dict[str, Any]) -> None:
    """The bucket is retained when the stack is deleted; a name made only of the stack's name,
    account and region would make creating the same stack again fail."""
    bucket = template["Resources"]["UploadsBucket"]
    assert bucket["DeletionPolicy"] == "Retain"
    name, values = bucket["Properties"]["BucketName"]["Fn::Sub"]
    assert "${StackId}" in name
    assert "AWS::StackId" in repr(values["StackId"])


@pytest.mark.parametrize(
    ("task", "group"),
    [("ApiTaskDefinition", "ApiLogGroup"), ("WorkerTaskDefinition", "WorkerLogGroup")],
)
def test_json_logs_go_to_the_stacks_log_groups(
    template: dict[str, Any], task: str, group: str
) -> None:
    c = container(template, task)
    assert {e["Name"]: e["Value"] for e in c["Environment"]}["LOG_FORMAT"] == "json"
    logging = c["LogConfiguration"]
    assert logging["LogDriver"] == "awslogs"
    assert logging["Options"]["awslogs-group"] == {"Ref": group}
    assert "LogGroupName" in resource(template, group)
