"""The deploy artefacts agree with one another and with the code, checked without Docker."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import panels
import pytest
import yaml
from acl_redis import acl_redis
from stack import IMAGES, PROMETHEUS_CONFIG, ROOT, TARGETS, compose_addresses, render
from stack import scrape_config as build_scrape_config

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_compose_runs_every_target_with_its_ops_port_and_service_name() -> None:
    for target in TARGETS:
        service = SERVICES[target.name]
        env = service["environment"]
        assert env["OPS_PORT"] == str(target.ops_port), target.name
        assert env["OTEL_SERVICE_NAME"] == target.name
        assert f"/{target.package}:" in service["image"], target.name
        ops_network = service["networks"][f"ops-{target.name}"]
        assert env["OPS_HOST"].split()[0] == ops_network["ipv4_address"], "ops port on its network"


def test_the_console_is_behind_the_proxy_as_its_own_redis_user_with_its_own_tokens() -> None:
    console = SERVICES["console"]
    env = console["environment"]
    assert env["REDIS_URL"].startswith("redis://console:${CONSOLE_REDIS_PASSWORD}@")
    assert env["CONSOLE_TOKENS"].startswith("${CONSOLE_TOKENS")
    assert "edge" in console["networks"]
    assert not console.get("ports")
    assert "console" in SERVICES["proxy"]["depends_on"]
    nginx = (ROOT / "deploy/proxy/nginx.conf").read_text()
    assert "server console:8090;" in nginx
    assert "proxy_pass http://console;" in nginx
    assert "proxy_set_header Host $http_host;" in nginx  # the console's Origin check needs it


def test_the_console_looks_jobs_up_in_notes_api_with_a_token_only_they_share() -> None:
    console = SERVICES["console"]["environment"]
    assert console["NOTES_API_URL"] == "http://notes-api:8000"
    token = "${NOTES_API_OPERATOR_TOKEN:?set in deploy/.env}"
    assert console["NOTES_API_OPERATOR_TOKEN"] == token
    assert SERVICES["notes-api"]["environment"]["OPERATOR_TOKENS"] == token
    assert "backend" in SERVICES["console"]["networks"]
    nginx = (ROOT / "deploy/proxy/nginx.conf").read_text()
    assert "location /v1/operator/ {\n            return 404;" in nginx  # not from outside


def test_only_the_proxy_and_grafana_publish_ports() -> None:
    published = sorted(name for name, service in SERVICES.items() if service.get("ports"))
    assert published == ["grafana", "proxy"]


def test_ops_networks_are_shared_with_prometheus_alone() -> None:
    for target in TARGETS:
        members = sorted(
            name
            for name, s in SERVICES.items()
            if f"ops-{target.name}" in (s.get("networks") or [])
        )
        assert members == sorted([target.name, "prometheus"]), members


def test_every_image_is_pinned_and_no_secret_is_written_in_the_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for name, service in SERVICES.items():
        image = re.sub(r"\$\{([A-Z_]+)[^}]*\}", r"$\1", service["image"])  # ${X:-d} -> $X
        assert ":" in image.rsplit("/", 1)[-1], name
        assert not image.endswith(":latest"), name
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or "SECRET" in key:
                assert str(value).startswith("${"), f"{name}: {key} is written in the file"
            if "://" in str(value) and "@" in str(value):
                assert "${" in str(value).split("@")[0], f"{name}: {key} has a literal password"
    assert "POSTGRES_HOST_AUTH_METHOD" not in text


def test_services_start_after_their_migrations_and_healthy_data_stores() -> None:
    for target in TARGETS:
        depends = SERVICES[target.name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy"
        if target.needs_postgres:
            assert depends["postgres"]["condition"] == "service_healthy"
            assert depends[f"migrate-{target.package}"]["condition"] == (
                "service_completed_successfully"
            )


def test_scrape_config_is_generated_from_the_targets() -> None:
    assert PROMETHEUS_CONFIG.read_text() == render(build_scrape_config(compose_addresses()))
    jobs = [
        job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    ]
    assert jobs == [t.name for t in TARGETS]


def test_dashboards_parse_and_use_only_provisioned_datasources() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/datasources.yaml").read_text()
    )
    uids = {source["uid"] for source in provisioned["datasources"]}
    assert uids == panels.DATASOURCE_UIDS
    for uid in panels.DASHBOARDS:
        board = json.loads((ROOT / f"deploy/grafana/dashboards/{uid}.json").read_text())
        assert board["uid"] == uid
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] in uids, panel["title"]
            assert panel["targets"], panel["title"]
    overview = panels.DASHBOARDS["service-overview"][1]
    jobs = panels.DASHBOARDS["jobs"][1]
    assert len(overview) >= 11
    assert len(jobs) >= 16


def test_image_workflow_builds_each_package_when_it_or_a_lib_it_uses_changes() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/images.yml").read_text())
    filters = yaml.safe_load(
        next(
            step["with"]["filters"]
            for step in workflow["jobs"]["changes"]["steps"]
            if step.get("id") == "filter"
        )
    )
    assert set(filters) == set(IMAGES)
    libs = {p.parent.name for p in (ROOT / "libs").glob("*/pyproject.toml")}
    for package, folder in IMAGES.items():
        paths = set(filters[package])
        assert {f"{folder}/**", "uv.lock", "deploy/Dockerfile"} <= paths
        pyproject = ROOT / folder / "pyproject.toml"
        if pyproject.exists():  # scheduler and fanout arrive with their issues
            deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
            used = {re.split(r"[<>=\[; ]", dep)[0] for dep in deps} & libs
            assert {f"libs/{lib}/**" for lib in used} <= paths, package


def test_every_target_has_its_redis_password_and_image_tag_everywhere() -> None:
    """A process added to TARGETS (by hand or by `make new-consumer`) needs each of these places."""
    start = (ROOT / "deploy/redis/start.sh").read_text()
    env = (ROOT / "deploy/env.example").read_text()
    acl = (ROOT / "deploy/redis/users.acl.template").read_text()
    redis_env = SERVICES["redis"]["environment"]
    for target in TARGETS:
        variable = f"{target.name.upper().replace('-', '_')}_REDIS_PASSWORD"
        assert redis_env[variable] == f"${{{variable}:?set in deploy/.env}}", target.name
        assert f'-e "s|@{variable}@|${{{variable}}}|" \\\n' in start, target.name
        assert f"\n{variable}=change-me\n" in env, target.name
        assert f"\nuser {target.name} on >@{variable}@ " in acl, target.name
    for package in IMAGES:  # every image has its tag (the console too)
        assert f"\n{package.upper().replace('-', '_')}_TAG=" in env, package


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server binary")
def test_redis_acl_users_load_and_are_confined(tmp_path: Path) -> None:
    """Only the archiver writes the results notes-api's worker trusts; none leaves its keys."""
    allowed = [
        ("archiver", "XREADGROUP", "GROUP", "g", "c", "STREAMS", "{jobs.archive}.low", ">"),
        ("archiver", "XACK", "{jobs.archive}.low", "g", "0-1"),
        ("archiver", "XADD", "{notes.archived.v1}", "*", "f", "v"),
        ("archiver", "XADD", "{jobs.archive}.low.dlq", "*", "f", "v"),
        ("notes-api-worker", "XADD", "{jobs.archive}.default", "*", "f", "v"),
        ("notes-api-worker", "XACK", "{notes.archived.v1}", "g", "0-1"),
        ("notes-api", "EVALSHA", "0123456789012345678901234567890123456789", "1", "ratelimit:k"),
        ("fanout", "XADD", "{jobs.archive}.default", "*", "f", "v"),
        # The console: an operator's grants on the platform's streams (servicekit.operations).
        ("console", "XADD", "{jobs.archive}.default", "*", "f", "v"),  # a redrive
        ("console", "XDEL", "{jobs.archive}.default.dlq", "0-1"),  # a purge
        ("console", "XADD", "{ops.audit.v1}", "*", "f", "v"),  # its audit record
        ("console", "SET", "{notes.created.v1}:paused:archiver", "1"),  # pause
        ("console", "XINFO", "GROUPS", "{notes.created.v1}"),
        ("console", "EVALSHA", "0123456789012345678901234567890123456789", "1", "{jobs.copy}.x"),
    ]  # fmt: skip
    denied = [
        ("notes-api-worker", "XADD", "{notes.archived.v1}", "*", "f", "v"),  # forged result
        ("notes-api-worker", "XADD", "{notes.copy_completed.v1}", "*", "f", "v"),
        ("fanout", "XADD", "{notes.archived.v1}", "*", "f", "v"),
        ("notes-api", "XADD", "{notes.copy_completed.v1}", "*", "f", "v"),
        ("archiver", "XADD", "{jobs.archive}.low", "*", "f", "v"),  # a job for itself
        ("archiver", "XADD", "{notes.created.v1}", "*", "f", "v"),  # only notes-api's relay
        ("archiver", "FLUSHALL"),
        ("notes-api-worker", "CONFIG", "SET", "appendonly", "no"),
        ("notes-api", "XREADGROUP", "GROUP", "g", "c", "STREAMS", "{jobs.archive}.low", ">"),
        ("console", "GET", "ratelimit:k"),  # notes-api's keys are not the operator's
        ("console", "FLUSHALL"),
        ("console", "CONFIG", "SET", "appendonly", "no"),
    ]  # fmt: skip
    with acl_redis(tmp_path) as redis:
        users = set(redis.cli("ACL", "USERS").split())
        assert users == {t.name for t in TARGETS} | {"default", "admin", "console"}
        for user, *command in allowed:
            assert redis.cli("ACL", "DRYRUN", user, *command) == "OK", (user, command)
        for user, *command in denied:
            assert redis.cli("ACL", "DRYRUN", user, *command) != "OK", (user, command)


def _yaml(path: str) -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load((ROOT / path).read_text())
    return loaded


def test_collector_pipelines_use_only_defined_components() -> None:
    """Grafana, Tempo, Loki and the Collector run nowhere here: their configs are parsed and
    cross-checked instead (docs: deploy/README.md)."""
    config = _yaml("deploy/otel/collector.yaml")
    service = config["service"]
    assert isinstance(service, dict)
    for pipeline in service["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            defined = config[kind]
            assert isinstance(defined, dict)
            assert set(pipeline.get(kind, [])) <= set(defined), kind
    assert set(service["extensions"]) <= set(config["extensions"])  # type: ignore[arg-type]
    exporter = config["exporters"]["otlp/tempo"]  # type: ignore[index]
    assert exporter["endpoint"] == "tempo:4317"


def test_every_service_exports_traces_to_the_collector_it_can_reach() -> None:
    collector = SERVICES["otel-collector"]
    for target in TARGETS:
        service = SERVICES[target.name]
        assert service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert set(service["networks"]) & set(collector["networks"]), target.name
    tempo = _yaml("deploy/tempo/tempo.yaml")
    assert "otlp" in tempo["distributor"]["receivers"]  # type: ignore[index]


def test_logs_reach_loki_and_link_to_traces_by_trace_id() -> None:
    promtail = _yaml("deploy/loki/promtail.yaml")
    assert promtail["clients"][0]["url"] == "http://loki:3100/loki/api/v1/push"  # type: ignore[index]
    loki = _yaml("deploy/loki/loki.yaml")
    assert loki["server"]["http_listen_port"] == 3100  # type: ignore[index]
    sources = {
        s["uid"]: s
        for s in _yaml("deploy/grafana/provisioning/datasources/datasources.yaml")["datasources"]  # type: ignore[union-attr]
    }
    derived = sources["loki"]["jsonData"]["derivedFields"][0]
    assert derived["datasourceUid"] == "tempo"
    assert re.search(derived["matcherRegex"], '{"event": "x", "trace_id": "0af7651916cd43dd"}')
    assert sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == (
        "tempo"
    )
    assert sources["tempo"]["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "loki"


def test_redis_is_durable_and_never_evicts() -> None:
    conf = dict(
        line.split(None, 1)
        for line in (ROOT / "deploy/redis/redis.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "always"
    assert conf["maxmemory-policy"] == "noeviction"


def test_proxy_bounds_header_size_request_time_and_connections() -> None:
    text = (ROOT / "deploy/proxy/nginx.conf").read_text()
    for directive in ("large_client_header_buffers", "client_header_timeout",
                      "client_body_timeout", "limit_conn per_client", "proxy_read_timeout",
                      "client_max_body_size"):  # fmt: skip
        assert re.search(rf"^\s*{directive}\s", text, re.MULTILINE), directive
    assert "proxy_pass http://notes_api;" in text
    assert "server notes-api:8000" in text


def test_every_alert_has_a_runbook_section_and_a_unit_test() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/platform.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    runbook = (ROOT / "docs/operations.md").read_text()
    tested = "\n".join(p.read_text() for p in (ROOT / "deploy/prometheus/tests").glob("*.yml"))
    for name, rule in alerts.items():
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert f"\n### {name}\n" in runbook, f"docs/operations.md has no section for {name}"
        assert f"alertname: {name}\n" in tested, f"no promtool unit test for {name}"
