"""`make run` starts what each service declares; a service that declares nothing would be missed."""

from pathlib import Path

from devstack.workspace import find_root, services

ROOT = find_root(Path(__file__).parent)


def test_every_service_declares_what_make_run_starts() -> None:
    declared = {s.package for s in services(ROOT)}
    on_disk = {p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml")}
    assert declared == on_disk


def test_the_declared_processes_are_the_services_console_scripts() -> None:
    processes = {p.name: p for s in services(ROOT) for p in s.processes}
    assert processes["notes-api"].command == ("notes-api", "serve")
    assert processes["notes-api"].port == 8000
    assert {name: p.ops_port for name, p in processes.items()} == {
        "notes-api": 9100,
        "notes-api-worker": 9101,
        "archiver": 9102,
    }
    migrations = {s.package: s.migrate for s in services(ROOT)}
    assert migrations == {
        "notes-api": ("notes-api", "migrate"),
        "archiver": ("archiver", "migrate"),
    }


def test_a_port_offset_moves_every_port() -> None:
    api = next(p for s in services(ROOT) for p in s.processes if p.name == "notes-api")
    moved = api.shifted(1000)
    assert (moved.port, moved.ops_port) == (9000, 10100)
