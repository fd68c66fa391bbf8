"""Compose and Prometheus registration copy what the deploy files do for the archiver."""

import json
from pathlib import Path

import yaml

from scaffold.deploy import add_compose_service, add_target, register

COMPOSE = """\
services:
  redis:
    image: redis:7.0
  archiver-migrate:
    build: {context: ., args: {PACKAGE: archiver}}
    command: ["archiver", "migrate"]

  archiver:
    build: {context: ., args: {PACKAGE: archiver}}
    environment:
      OPS_PORT: "9102"
    ports: ["9102:9102"]
    depends_on: [archiver-migrate]
  grafana:
    image: grafana/grafana
"""


def test_compose_gets_copies_of_the_archivers_services() -> None:
    edited = add_compose_service(COMPOSE, name="thumbnailer", port=9105)

    services = yaml.safe_load(edited)["services"]
    assert list(services) == [
        "redis", "archiver-migrate", "archiver", "thumbnailer-migrate", "thumbnailer", "grafana",
    ]  # fmt: skip
    assert services["thumbnailer"]["environment"] == {"OPS_PORT": "9105"}
    assert services["thumbnailer"]["depends_on"] == ["thumbnailer-migrate"]
    assert services["thumbnailer-migrate"]["command"] == ["thumbnailer", "migrate"]
    assert add_compose_service(edited, name="thumbnailer", port=9105) == edited


def test_prometheus_targets_get_the_archivers_entry_renamed() -> None:
    targets = [{"targets": ["archiver:9102"], "labels": {"service": "archiver"}}]

    as_json = json.loads(add_target(json.dumps(targets), name="thumb", port=9105, as_json=True))
    as_yaml = yaml.safe_load(
        add_target(yaml.safe_dump(targets), name="thumb", port=9105, as_json=False)
    )

    expected = {"targets": ["thumb:9105"], "labels": {"service": "thumb"}}
    assert as_json[-1] == expected
    assert as_yaml[-1] == expected


def test_without_deploy_files_registration_only_says_what_to_add(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text("services:\n  redis:\n    image: redis:7.0\n")

    done = list(register(tmp_path, name="thumbnailer", port=9105))

    assert [path for path, _ in done] == [None, None]
    assert "add thumbnailer by hand" in done[0][1]
    assert "ops port 9105" in done[1][1]
