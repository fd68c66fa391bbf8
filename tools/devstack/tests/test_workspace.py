"""`make run` starts what each service declares; a service that declares nothing would be missed."""

import tomllib
from pathlib import Path

from contracts import Service as ContractsService
from devstack.workspace import find_root, services

ROOT = find_root(Path(__file__).parent)


def test_every_service_declares_what_make_run_starts() -> None:
    declared = {s.package for s in services(ROOT)}
    on_disk = {p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml")}
    assert declared == on_disk


def test_the_declared_processes_are_the_services_console_scripts() -> None:
    # Holds for any service added later, so adding one needs no edit here.
    declared = services(ROOT)
    processes = [p for s in declared for p in s.processes]
    ops_ports = [p.ops_port for p in processes]
    assert len(set(ops_ports)) == len(ops_ports), f"two processes share an ops port: {ops_ports}"
    assert all(9100 <= port < 9200 for port in ops_ports)
    assert {p.name for p in processes} <= {str(member) for member in ContractsService}
    for service in declared:
        pyproject = ROOT / "services" / service.package / "pyproject.toml"
        scripts = set(tomllib.loads(pyproject.read_text())["project"]["scripts"])
        assert {p.command[0] for p in service.processes} <= scripts, service.package
        if service.migrate is not None:
            assert service.migrate[0] in scripts
            assert service.migrate[1:] == ("migrate",)
    api = next(p for p in processes if p.name == "notes-api")
    assert (api.command, api.port, api.ops_port) == (("notes-api", "serve"), 8000, 9100)


def test_a_port_offset_moves_every_port() -> None:
    api = next(p for s in services(ROOT) for p in s.processes if p.name == "notes-api")
    moved = api.shifted(1000)
    assert (moved.port, moved.ops_port) == (9000, 10100)
