"""docker-compose.yml parses with a real Compose parser and matches the settings and the CLI.

`compose_spec` (the Rust compose_spec crate) parses the file strictly against the Compose
specification: an unknown key, a bad port or an unknown depends_on condition fails the parse.
"""

from __future__ import annotations

import re
import shlex
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from compose_spec import PyOptions

from service.settings import Settings
from tests.deploy.wiring import OTHER_APP_VARIABLES, ROOT, cli_commands, settings_variables

COMPOSE = ROOT / "docker-compose.yml"
INIT_SCRIPT = ROOT / "infra" / "localstack" / "ready.d" / "10-song-detection.sh"
APP_SERVICES = {"migrate": "migrate", "api": "serve", "worker": "worker"}


def interpolated(text: str) -> str:
    """`${NAME:-default}` replaced by its default, as Compose does with NAME unset (`$$` is an
    escaped dollar and stays); the parser below does not interpolate."""
    return re.sub(r"(?<!\$)\$\{(\w+):?-([^}]*)\}", lambda m: m.group(2), text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed = PyOptions(apply_merge=True).from_yaml(interpolated(COMPOSE.read_text()))
    parsed.validate()
    return parsed.to_dict()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def test_the_parser_is_strict() -> None:
    """Guards the guard: a misspelt key must fail, or the parse proves nothing."""
    broken = interpolated(COMPOSE.read_text()).replace(
        "stop_grace_period:", "stop_grace_periood:", 1
    )
    with pytest.raises(ValueError):
        PyOptions(apply_merge=True).from_yaml(broken)


def test_services(services: dict[str, Any], compose: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "localstack", *APP_SERVICES}
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"


def test_postgres_has_a_readiness_check_and_a_volume(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert "pg_isready" in healthcheck_text(postgres)
    assert any("/var/lib/postgresql/data" in str(v) for v in postgres["volumes"])


def test_localstack_is_pinned_and_runs_the_init_script(services: dict[str, Any]) -> None:
    localstack = services["localstack"]
    assert localstack["image"] == "localstack/localstack:4.14.0"
    mounts = [
        v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in localstack["volumes"]
    ]
    (mount,) = [m for m in mounts if "/etc/localstack/init/ready.d" in m]
    source = mount.split(":")[0]
    assert (ROOT / source / INIT_SCRIPT.name).resolve() == INIT_SCRIPT.resolve()
    assert "/_localstack/init/ready" in healthcheck_text(localstack)
    assert INIT_SCRIPT.stat().st_mode & 0o111, "LocalStack runs only executable scripts"
    assert INIT_SCRIPT.read_text().startswith("#!")


@pytest.mark.parametrize(("name", "command"), APP_SERVICES.items())
def test_app_services_run_cli_commands(services: dict[str, Any], name: str, command: str) -> None:
    service = services[name]
    assert service["command"] == [command]
    assert service["image"] == "song-detection:local"
    assert service["build"]["context"] == "."
    if command not in cli_commands():
        pytest.skip(f"`song-detection {command}` is not in the CLI yet")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_environment_is_what_the_service_reads(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(services[name])
    unknown = set(env) - settings_variables() - OTHER_APP_VARIABLES
    assert not unknown, f"{name} sets variables nothing reads: {unknown}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert not s.is_sqlite
    assert urlsplit(s.database_url).hostname == "postgres"
    assert s.aws_endpoint_url == "http://localstack:4566"
    # Migrations run once, in the one-shot service, before api and worker start.
    assert s.migrate_on_start is False
    assert s.run_worker_in_api is False


def test_dependencies_wait_for_health_and_migrations(services: dict[str, Any]) -> None:
    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert conditions("api") == {
        "postgres": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    assert conditions("worker") == {
        "postgres": "service_healthy",
        "localstack": "service_healthy",
        "migrate": "service_completed_successfully",
    }


def test_api_publishes_port_8000_and_worker_checks_its_health_port(
    services: dict[str, Any],
) -> None:
    assert any(
        str(p).endswith("8000:8000") or p == {"target": 8000} for p in services["api"]["ports"]
    )
    port = environment(services["worker"])["WORKER_HEALTH_PORT"]
    assert f"127.0.0.1:{port}/healthz" in healthcheck_text(services["worker"])


def test_localstack_creates_the_resources_the_app_is_given(services: dict[str, Any]) -> None:
    """The init script's names (from the localstack service's env) match the app's settings."""
    made = environment(services["localstack"])
    app = environment(services["worker"])
    assert made["S3_BUCKET"] == app["S3_BUCKET"]
    assert made["AWS_REGION"] == app["AWS_REGION"]
    assert urlsplit(app["SQS_QUEUE_URL"]).path.rsplit("/", 1)[-1] == made["SQS_QUEUE_NAME"]
    assert app["SNS_TOPIC_ARN"].split(":")[3] == made["AWS_REGION"]
    assert app["SNS_TOPIC_ARN"].rsplit(":", 1)[-1] == made["SNS_TOPIC_NAME"]
    visibility = Settings.model_fields["sqs_visibility_timeout_s"].default
    assert made["SQS_VISIBILITY_TIMEOUT_S"] == str(visibility)
    # Every variable given to LocalStack for the script is one the script reads.
    script_reads = set(re.findall(r"\$\{(\w+)", INIT_SCRIPT.read_text()))
    assert set(made) - {"SERVICES"} <= script_reads


def test_raw_yaml_has_no_shell_quoting_surprises() -> None:
    """The localstack healthcheck is one shell line with `$$` escapes Compose turns into `$`."""
    raw = yaml.safe_load(COMPOSE.read_text())
    kind, line = raw["services"]["localstack"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    shell = line.replace("$$", "$")
    assert shlex.split(shell)  # balanced quotes
    assert "$(" in shell and "$$" not in shell
