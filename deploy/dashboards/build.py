"""Generate the Grafana dashboards (deploy/grafana/dashboards/*.json) from panels.py.

Written with grafana-foundation-sdk, Grafana's own typed builders generated from its schemas.
The other candidate, grafanalib, is community-kept, last released in January 2024 and behind
Grafana 11's panel model. ``--check`` fails when a JSON file differs from what the code generates
(`make lint`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import logs, loki, prometheus, stat, table, tempo, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panels import DASHBOARDS, LOKI_UID, TEMPO_UID, Panel

OUT = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
WIDTH, HEIGHT = 12, 8


def _panel(spec: Panel) -> object:
    kinds = {LOKI_UID: "loki", TEMPO_UID: "tempo"}
    source = DataSourceRef(type_val=kinds.get(spec.datasource, "prometheus"), uid=spec.datasource)
    builder: timeseries.Panel | stat.Panel | logs.Panel | table.Panel
    if spec.kind == "traces":
        builder = table.Panel()
        for i, query in enumerate(spec.queries):
            builder.with_target(
                tempo.TempoQuery().query_type("traceql").query(query.expr).limit(20)
                .ref_id(chr(65 + i))
            )  # fmt: skip
    elif spec.kind == "logs":
        builder = logs.Panel().show_time(True).wrap_log_message(True)
        for i, query in enumerate(spec.queries):
            builder.with_target(loki.Dataquery().expr(query.expr).ref_id(chr(65 + i)))
    else:
        builder = (stat.Panel() if spec.kind == "stat" else timeseries.Panel()).unit(spec.unit)
        for i, query in enumerate(spec.queries):
            target = (
                prometheus.Dataquery()
                .expr(query.expr)
                .legend_format(query.legend or "__auto")
                .ref_id(chr(65 + i))
                .exemplar(spec.exemplars)
            )
            builder.with_target(target)
    builder.title(spec.title).datasource(source).height(HEIGHT).span(WIDTH)
    if spec.description:
        builder.description(spec.description)
    return builder


def build(uid: str) -> dict[str, object]:
    """The dashboard ``uid`` as Grafana JSON (a plain dict)."""
    title, panels = DASHBOARDS[uid]
    board = (
        gdash.Dashboard(title)
        .uid(uid)
        .tags(["notes-platform", "generated"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("utc")
        .readonly()
    )
    for spec in panels:
        board.with_panel(_panel(spec))  # type: ignore[arg-type]
    encoded: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def render(uid: str) -> str:
    """The dashboard's file text (sorted keys, so a diff shows only real changes)."""
    return json.dumps(build(uid), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write every dashboard, or with ``--check`` list the stale ones and fail."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for uid in DASHBOARDS:
        path, text = OUT / f"{uid}.json", render(uid)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        print("stale dashboards (run `make dashboards`):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
