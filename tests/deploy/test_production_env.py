"""The image started with exactly the environment each ECS task definition gives it.

The environment is read from infra/cloudformation/song-detection.yaml itself, so the template
and this test cannot drift apart: every `Environment` entry and every `Secrets` entry of the
container, its `Command`, and its `HealthCheck`. The intrinsic functions are resolved to what
stands in for AWS here:

- the Aurora endpoints (`DbCluster.Endpoint.*`, `DbCluster.ReadEndpoint.*`) -> the machine's
  PostgreSQL (`--network host`);
- conditions -> evaluated with the parameters' defaults (so no reader: DB_READ_HOST empty);
- the bucket, queue and topic (`Ref`) -> the same resources on moto's server;
- Secrets Manager -> test values (`DB_USER` postgres, a password, an API key);
- parameters -> their defaults, `AWS::Region` -> us-east-1.

Changed, and only these, because containers here share the host's network and database
server: `DB_NAME` (a fresh database per task, not `songs`), `PORT` and `WORKER_HEALTH_PORT`
(free ports; the health-check command is run with the same substitution), and `DB_SSLMODE`
(`require` becomes `prefer` when the local server has no TLS; the URL with `require` is checked
in test_cloudformation.py). Added, because ECS provides them outside the task definition:
AWS credentials (the task role's, here moto's test keys) and `AWS_ENDPOINT_URL` (moto).

A template resolving to something this test cannot stand in for fails it, on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import httpx
import pytest
from cfnlint.decode import decode
from moto.server import ThreadedMotoServer

from service.store.postgres import MIGRATION_LOCK_KEY
from tests.audio_fixtures import encode, excerpt, synth_song
from tests.db_fixtures import DEFAULT_ADMIN_DSN, PgDatabases
from tests.deploy.docker_helpers import docker, free_port
from tests.deploy.wiring import ROOT

pytestmark = pytest.mark.docker

TEMPLATE = ROOT / "infra" / "cloudformation" / "song-detection.yaml"
REGION = "us-east-1"
BUCKET = "song-detection-uploads-test"
API_KEY = "test-api-key-0123456789abcdef0123456789"
SECRETS = {
    "${DbSecret}:username::": "postgres",
    "${DbSecret}:password::": "test-password",
    "ApiKeySecret": API_KEY,
}


# --- the template, resolved ---------------------------------------------------------------


def load_template() -> dict[str, Any]:
    template, errors = decode(str(TEMPLATE))
    assert not errors, errors
    return template


def container(template: dict[str, Any], task: str) -> dict[str, Any]:
    (definition,) = template["Resources"][task]["Properties"]["ContainerDefinitions"]
    return definition


class Resolver:
    """Resolves the intrinsic functions a container definition uses to local stand-ins."""

    def __init__(self, template: dict[str, Any], refs: dict[str, str], atts: dict[str, str]):
        self.parameters = {
            name: str(p["Default"]) for name, p in template["Parameters"].items() if "Default" in p
        }
        self.refs = {"AWS::Region": REGION, **refs}
        self.conditions = template.get("Conditions", {})
        self.atts = atts

    def __call__(self, value: Any) -> str:
        if isinstance(value, str | int | float):
            return str(value)
        ((function, argument),) = value.items()
        if function == "Ref":
            found = self.refs.get(argument, self.parameters.get(argument))
        elif function == "Fn::GetAtt":
            found = self.atts.get(".".join(argument))
        elif function == "Fn::If":
            condition, if_true, if_false = argument
            return self(if_true if self.condition(condition) else if_false)
        else:
            found = None
        assert found is not None, f"nothing here stands in for {value}: extend this test"
        return found

    def condition(self, name: str) -> bool:
        """A template condition of the form Fn::Equals [Ref parameter, literal], with the
        parameters at their defaults."""
        ((function, (left, right)),) = self.conditions[name].items()
        assert function == "Fn::Equals" and set(left) == {"Ref"}, (
            f"this test cannot evaluate the condition {name}: extend it"
        )
        return self.parameters.get(left["Ref"]) == str(right)


def secret_value(value_from: Any) -> str:
    key = value_from.get("Fn::Sub") or value_from.get("Ref")
    assert key in SECRETS, f"no test value for the secret {value_from}: extend this test"
    return SECRETS[key]


def task_environment(
    template: dict[str, Any], task: str, resolve: Resolver
) -> tuple[dict[str, str], list[str]]:
    """The container's environment and command, as ECS would start it."""
    c = container(template, task)
    env = {e["Name"]: resolve(e["Value"]) for e in c["Environment"]}
    env.update({s["Name"]: secret_value(s["ValueFrom"]) for s in c["Secrets"]})
    return env, list(c["Command"])


# --- the stand-ins --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PgDatabases]:
    """Fresh databases, never migrated: the tasks migrate them themselves."""
    databases = PgDatabases(os.environ.get("TEST_PG_ADMIN_DSN") or DEFAULT_ADMIN_DSN)
    databases.check_reachable()
    try:
        yield databases
    finally:
        databases.drop_all()


def server_has_tls(admin_dsn: str) -> bool:
    async def ssl() -> str:
        conn = await asyncpg.connect(admin_dsn)
        try:
            return await conn.fetchval("SHOW ssl")
        finally:
            await conn.close()

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(ssl()) == "on"


class Moto:
    """moto's server with the stack's bucket (notifying the queue for both prefixes), queue
    with its dead-letter queue, topic, and an inbox queue subscribed to the topic."""

    def __init__(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        kwargs = {
            "endpoint_url": self.endpoint,
            "region_name": REGION,
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
        }
        self.s3 = boto3.client("s3", **kwargs)
        self.sqs = boto3.client("sqs", **kwargs)
        self.sns = boto3.client("sns", **kwargs)
        self.s3.create_bucket(Bucket=BUCKET)
        dlq = self.sqs.create_queue(QueueName="events-dlq")["QueueUrl"]
        self.queue_url = self.sqs.create_queue(
            QueueName="events",
            Attributes={
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": self.arn(dlq), "maxReceiveCount": "5"}
                )
            },
        )["QueueUrl"]
        self.topic_arn = self.sns.create_topic(Name="results")["TopicArn"]
        self.inbox_url = self.sqs.create_queue(QueueName="inbox")["QueueUrl"]
        self.sns.subscribe(
            TopicArn=self.topic_arn, Protocol="sqs", Endpoint=self.arn(self.inbox_url)
        )
        rules = [
            {
                "QueueArn": self.arn(self.queue_url),
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
            }
            for prefix in ("songs_to_index/", "songs_to_check/")
        ]
        self.s3.put_bucket_notification_configuration(
            Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": rules}
        )

    def arn(self, queue_url: str) -> str:
        attributes = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        return attributes["Attributes"]["QueueArn"]

    def inbox(self) -> list[dict[str, Any]]:
        got = self.sqs.receive_message(
            QueueUrl=self.inbox_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        return [json.loads(json.loads(m["Body"])["Message"]) for m in got.get("Messages", [])]


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    world = Moto()
    try:
        yield world
    finally:
        # moto's state is per process, shared by every server in it: leave none behind.
        httpx.post(f"{world.endpoint}/moto-api/reset", timeout=10)
        world.server.stop()


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def resolver(template: dict[str, Any], moto: Moto) -> Resolver:
    return Resolver(
        template,
        refs={
            "UploadsBucket": BUCKET,
            "EventsQueue": moto.queue_url,  # Ref of a queue is its URL
            "ResultsTopic": moto.topic_arn,
        },
        atts={
            "DbCluster.Endpoint.Address": "127.0.0.1",
            "DbCluster.Endpoint.Port": "5432",
            "DbCluster.ReadEndpoint.Address": "127.0.0.1",
        },
    )


def here(env: dict[str, str], pg: PgDatabases, database: str, moto: Moto) -> dict[str, str]:
    """The substitutions and additions listed in the module docstring, and no others."""
    changed = dict(env)
    changed["DB_NAME"] = database
    if "PORT" in changed:
        changed["PORT"] = str(free_port())
    if "WORKER_HEALTH_PORT" in changed:
        changed["WORKER_HEALTH_PORT"] = str(free_port())
    if changed.get("DB_SSLMODE") == "require" and not server_has_tls(pg.admin_dsn):
        changed["DB_SSLMODE"] = "prefer"
    changed.update(
        AWS_ENDPOINT_URL=moto.endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test"
    )
    return changed


class Container:
    def __init__(self, image: str, env: dict[str, str], command: list[str]) -> None:
        self.name = f"song-detection-prod-{uuid.uuid4().hex[:8]}"
        flags = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
        docker("run", "-d", "--name", self.name, "--network", "host", *flags, image, *command)

    def logs(self) -> str:
        out = docker("logs", self.name, check=False)
        return (out.stdout + out.stderr)[-4000:]

    def running(self) -> bool:
        state = docker("inspect", "-f", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout_s: float = 120) -> Any:
        deadline = time.monotonic() + timeout_s
        while not (result := predicate()):
            assert self.running(), f"exited before {what}:\n{self.logs()}"
            assert time.monotonic() < deadline, f"no {what}:\n{self.logs()}"
            time.sleep(0.5)
        return result

    def run_health_check(self, command: list[str], port_from: str, port_to: str) -> None:
        """The task definition's HealthCheck command, inside the container."""
        assert command[0] == "CMD"
        argv = [arg.replace(f":{port_from}/", f":{port_to}/") for arg in command[1:]]
        result = docker("exec", self.name, *argv, check=False)
        assert result.returncode == 0, (result.stderr, self.logs())

    def stop(self) -> None:
        started = time.monotonic()
        docker("stop", "--time", "30", self.name, timeout=60)
        assert time.monotonic() - started < 25, f"slow to stop:\n{self.logs()}"

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


def get_json(url: str, **kwargs: Any) -> Any:
    try:
        response = httpx.get(url, timeout=3, **kwargs)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


# --- the tasks ------------------------------------------------------------------------------


def test_migrate_task(
    image: str, template: dict, resolver: Resolver, pg: PgDatabases, moto: Moto
) -> None:
    """The README's one-off migrate: the worker task definition with command ["migrate"]."""
    env, _ = task_environment(template, "WorkerTaskDefinition", resolver)
    database = pg.empty()
    env = here(env, pg, database, moto)
    name = f"song-detection-migrate-{uuid.uuid4().hex[:8]}"
    flags = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
    first = docker(
        "run",
        "--name",
        name,
        "--network",
        "host",
        *flags,
        image,
        "migrate",
        check=False,
        timeout=180,
    )
    docker("rm", "-f", name, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    applied = re.search(r"applied (\d+) migration", first.stdout)
    assert applied and int(applied.group(1)) >= 1, first.stdout
    again = docker("run", "--rm", "--network", "host", *flags, image, "migrate", timeout=180)
    assert "none pending" in again.stdout


def test_api_task_migrates_indexes_and_identifies(
    image: str, template: dict, resolver: Resolver, pg: PgDatabases, moto: Moto, tmp_path: Path
) -> None:
    env, command = task_environment(template, "ApiTaskDefinition", resolver)
    assert env["ENVIRONMENT"] == "production" and env["MIGRATE_ON_START"] == "true"
    env = here(env, pg, pg.empty(), moto)
    port = env["PORT"]
    base = f"http://127.0.0.1:{port}"
    song = synth_song(seed=6161, duration_s=30.0)
    song_file = encode(song, tmp_path / "song", "mp3", tags={"title": "Production"})
    clip_file = encode(excerpt(song, 12.0, 8.0), tmp_path / "clip", "aac_m4a")
    box = Container(image, env, command)
    try:
        box.wait_for(lambda: get_json(f"{base}/readyz"), "/readyz 200")
        health = container(template, "ApiTaskDefinition")["HealthCheck"]["Command"]
        box.run_health_check(health, "8000", port)
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.get("/songs").status_code == 401  # production: the key is required
            key = {"X-API-Key": API_KEY}
            with song_file.open("rb") as f:
                indexed = http.post("/songs", headers=key, files={"file": ("song.mp3", f)})
            assert indexed.status_code == 201, indexed.text
            with clip_file.open("rb") as f:
                found = http.post("/identify", headers=key, files={"file": ("clip.m4a", f)})
            assert found.status_code == 200, found.text
            (match,) = found.json()["matches"]
            assert match["song"]["id"] == indexed.json()["id"]
            assert abs(match["song_offset_s"] - 12.0) < 0.2
        box.stop()
    finally:
        box.remove()


def test_worker_task_indexes_and_identifies_uploads(
    image: str, template: dict, resolver: Resolver, pg: PgDatabases, moto: Moto, tmp_path: Path
) -> None:
    env, command = task_environment(template, "WorkerTaskDefinition", resolver)
    assert env["SQS_QUEUE_URL"] == moto.queue_url
    env = here(env, pg, pg.empty(), moto)
    health_port = env["WORKER_HEALTH_PORT"]
    song = synth_song(seed=7171, duration_s=30.0)
    song_file = encode(song, tmp_path / "song", "mp3")
    clip_file = encode(excerpt(song, 7.0, 8.0), tmp_path / "clip", "aac_m4a")
    box = Container(image, env, command)
    try:
        health_url = f"http://127.0.0.1:{health_port}/healthz"
        box.wait_for(lambda: (h := get_json(health_url)) and h["status"] == "ok", "polling")
        health = container(template, "WorkerTaskDefinition")["HealthCheck"]["Command"]
        box.run_health_check(health, "8001", health_port)
        moto.s3.upload_file(str(song_file), BUCKET, "songs_to_index/Worker Song.mp3")
        box.wait_for(lambda: (get_json(health_url) or {}).get("processed", 0) >= 1, "indexing")
        moto.s3.upload_file(str(clip_file), BUCKET, "songs_to_check/clip.m4a")

        def report() -> dict | None:
            try:
                body = moto.s3.get_object(Bucket=BUCKET, Key="songs_to_check/clip.json")["Body"]
            except moto.s3.exceptions.NoSuchKey:
                return None
            return json.loads(body.read())

        (match,) = box.wait_for(report, "report")["matches"]
        assert match["song"]["title"] == "Worker Song"
        assert abs(match["song_offset_s"] - 7.0) < 0.2
        messages: list[dict] = []
        box.wait_for(lambda: messages.extend(moto.inbox()) or len(messages) >= 2, "SNS")
        assert {m["event_type"] for m in messages} == {"index.result", "identify.result"}
        box.stop()
    finally:
        box.remove()


def test_api_task_waiting_for_another_replicas_migrations_is_live_and_stops_at_once(
    image: str, template: dict, resolver: Resolver, pg: PgDatabases, moto: Moto
) -> None:
    """A replica that starts while another holds the migration lock answers its health check,
    is not ready, and stops on `docker stop` (SIGTERM) at once, not at SIGKILL."""
    env, command = task_environment(template, "ApiTaskDefinition", resolver)
    database = pg.empty()
    env = here(env, pg, database, moto)
    base = f"http://127.0.0.1:{env['PORT']}"
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        conn = runner.run(asyncpg.connect(pg.url(database)))
        try:
            runner.run(conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY))
            box = Container(image, env, command)
            try:
                health = box.wait_for(lambda: get_json(f"{base}/healthz"), "/healthz 200", 60)
                assert health == {"status": "ok"}
                time.sleep(1.0)
                ready = httpx.get(f"{base}/readyz", timeout=5)
                assert ready.status_code == 503, ready.text
                assert ready.json()["error"]["code"] == "not_ready"
                started = time.monotonic()
                docker("stop", "--time", "30", box.name, timeout=60)
                assert time.monotonic() - started < 10, f"slow to stop:\n{box.logs()}"
                assert "stopping during start-up" in box.logs()
            finally:
                box.remove()
        finally:
            runner.run(conn.close())
