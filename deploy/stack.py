"""The platform's processes as the deploy stack sees them: one list, every artefact derived from it.

``TARGETS`` names each process once: its compose service (also the Prometheus job and container
host), the workspace package its image is built from, its console script and ops port. From it come
the compose stack's scrape config (``deploy/prometheus/prometheus.yml``, written by
``python deploy/stack.py``, drift-checked by ``--check``), the image matrix of the GitHub workflow
(checked by ``deploy/tests``) and the scrape config of the real-Prometheus test (same function,
local addresses instead of container hosts).

``PENDING_SERVICES`` names the metrics of services that are declared here but built elsewhere
(issues 13 and 14). Panels and rules that read them are checked against a real Prometheus only
where the service's console script is installed; the test names what it skipped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SCRAPE_INTERVAL = "15s"


@dataclass(frozen=True)
class Target:
    """One process of the platform."""

    name: str
    """Compose service, container host, Prometheus ``job`` label and ``OTEL_SERVICE_NAME``."""
    package: str
    """Workspace package (``services/<package>``) its image is built from."""
    command: tuple[str, ...]
    """Console script and arguments that start it."""
    ops_port: int
    public_port: int | None = None
    needs_postgres: bool = True

    @property
    def script(self) -> str:
        """The console script (what the real-Prometheus test looks for before starting it)."""
        return self.command[0]


TARGETS: tuple[Target, ...] = (
    Target("notes-api", "notes-api", ("notes-api", "serve"), 9100, public_port=8000),
    Target("notes-api-worker", "notes-api", ("notes-api-worker",), 9101),
    Target("archiver", "archiver", ("archiver",), 9102),
    Target("scheduler", "scheduler", ("scheduler",), 9103, needs_postgres=False),
    Target("fanout", "fanout", ("fanout",), 9104),
    # scaffold: new targets above this line
)
"""Every process; ports from the process table in DESIGN.md."""

PACKAGES: tuple[str, ...] = tuple(dict.fromkeys(t.package for t in TARGETS))
"""One image per package (notes-api's image runs both its processes)."""

OPERATOR_IMAGES: Mapping[str, str] = {"console": "tools/console"}
"""Images of operator tools in the stack (package to folder): not scraped, no ops port, no
PostgreSQL; the operations console sits behind the proxy on its own port, as its own Redis user."""

IMAGES: Mapping[str, str] = {**{p: f"services/{p}" for p in PACKAGES}, **OPERATOR_IMAGES}
"""Every image the workflow builds: package to the folder it is built from."""

PENDING_SERVICES: Mapping[str, tuple[str, ...]] = {
    # issue 13: fires by schedule and outcome, punctuality, next fire time.
    "scheduler": (
        "scheduler_fires_total",
        "scheduler_punctuality_seconds",
        "scheduler_next_fire_timestamp_seconds",
        "scheduler_delayed_jobs_released_total",
    ),
    # issue 14 adds no metric of its own: its chunks show in the runtime's metrics (below).
    "fanout": (),
}
"""Metrics of services built outside this tree, by service: a query that reads one is checked
against real series only where that service runs (its console script is installed)."""

PENDING_SELECTORS: Mapping[str, tuple[str, ...]] = {
    # The job runtime's metrics of a pending service's own consumer group.
    "scheduler": ('service="scheduler"', 'group="scheduler"', 'job="scheduler"'),
    "fanout": (
        'service="fanout"',
        'group="fanout"',
        'job="fanout"',
        'group="fanout.audit"',
        'group="fanout.activity"',
    ),
}
"""Label matchers that only a pending service's series satisfy."""


def pending_service_of(query: str) -> str | None:
    """Return the pending service whose metrics or labels ``query`` reads, if any."""
    for service, metrics in PENDING_SERVICES.items():
        names = {m.removesuffix("_total") for m in metrics}
        if any(name in query for name in names):
            return service
        if any(matcher in query for matcher in PENDING_SELECTORS[service]):
            return service
    return None


def scrape_config(
    addresses: Mapping[str, str],
    *,
    interval: str = SCRAPE_INTERVAL,
    rule_files: tuple[str, ...] = ("/etc/prometheus/rules/*.yml",),
) -> dict[str, object]:
    """Prometheus configuration scraping ``addresses`` (target name to ``host:port``).

    One job per process, named like the compose service, so ``job`` in a query is the process.
    """
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": list(rule_files),
        "scrape_configs": [
            {
                "job_name": name,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [address]}],
            }
            for name, address in addresses.items()
        ],
    }


def compose_addresses() -> dict[str, str]:
    """Container host and ops port of every target, as the compose network names them."""
    return {t.name: f"{t.name}:{t.ops_port}" for t in TARGETS}


def render(config: Mapping[str, object]) -> str:
    """YAML text of a Prometheus configuration, with a header saying where it comes from."""
    header = (
        "# Generated by `python deploy/stack.py` from deploy/stack.py's TARGETS: do not edit.\n"
    )
    return header + yaml.safe_dump(dict(config), sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    """Write the compose stack's scrape config, or with ``--check`` fail if it is stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    text = render(scrape_config(compose_addresses()))
    if args.check:
        if not PROMETHEUS_CONFIG.exists() or PROMETHEUS_CONFIG.read_text() != text:
            print(f"{PROMETHEUS_CONFIG.relative_to(ROOT)} is stale: run `make dashboards`")
            return 1
        return 0
    PROMETHEUS_CONFIG.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
