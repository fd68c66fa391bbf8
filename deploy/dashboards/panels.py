"""What the dashboards show: every panel as data (title, queries, unit), written once.

``build.py`` turns these into Grafana JSON with grafana-foundation-sdk; the real-Prometheus test
(``deploy/tests/test_real_prometheus.py``) evaluates every Prometheus query here against the
metrics the running services export. Queries use only label values the services emit (the job
runtime's ``status``: succeeded, skipped, retrying, dead) and ``$__rate_interval``, which the test
replaces with a window that fits its scrape interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROMETHEUS_UID = "prometheus"
TEMPO_UID = "tempo"
LOKI_UID = "loki"
DATASOURCE_UIDS = frozenset({PROMETHEUS_UID, TEMPO_UID, LOKI_UID})
"""The uids deploy/grafana/provisioning/datasources/datasources.yaml provisions."""

RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    """One query of a panel: PromQL (or LogQL for a logs panel) and its legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """One panel; ``kind``: timeseries, stat, logs (Loki) or traces (a Tempo TraceQL table)."""

    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    exemplars: bool = False
    datasource: str = PROMETHEUS_UID
    links: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def quantiles(metric: str, by: str, unit: str = "s") -> tuple[Query, ...]:
    """p50, p95 and p99 of a histogram, by ``by``."""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[{RATE}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    )


SERVICE_OVERVIEW: tuple[Panel, ...] = (
    Panel(
        "Targets up",
        (Query("up", "{{job}}"),),
        description="1 while Prometheus scrapes the ops port.",
    ),
    Panel(
        "HTTP request rate by route",
        (Query(f"sum by (route) (rate(http_requests_total[{RATE}]))", "{{route}}"),),
        "reqps",
    ),
    Panel(
        "HTTP errors by status (4xx, 5xx)",
        (
            Query(
                f'sum by (status) (rate(http_requests_total{{status=~"4..|5.."}}[{RATE}]))',
                "{{status}}",
            ),
        ),
        "reqps",
    ),
    Panel(
        "HTTP duration p50/p95/p99",
        quantiles("http_request_duration_seconds", "route"),
        "s",
        exemplars=True,
    ),
    Panel(
        "Job rate by service",
        (Query(f"sum by (service) (rate(job_processed_total[{RATE}]))", "{{service}}"),),
        "ops",
    ),
    Panel(
        "Job errors by service (retrying, dead)",
        (
            Query(
                f'sum by (service, status) (rate(job_processed_total{{status=~"retrying|dead"}}[{RATE}]))',
                "{{service}} {{status}}",
            ),
        ),
        "ops",
    ),
    Panel(
        "Job duration p50/p95/p99 by service",
        quantiles("job_duration_seconds", "service"),
        "s",
        exemplars=True,
        description="Exemplars carry the handler span's trace id: click one to open the trace.",
    ),
    Panel(
        "In flight: pending entries by group",
        (Query("sum by (group) (max by (stream, group) (stream_group_pending))", "{{group}}"),),
    ),
    Panel(
        "DB pool usage (checked out / size)",
        (Query("max by (job) (db_pool_checked_out / db_pool_size)", "{{job}}"),),
        "percentunit",
    ),
    Panel(
        "DB pool wait p99",
        (
            Query(
                f"histogram_quantile(0.99, sum by (le, job) (rate(db_pool_wait_seconds_bucket[{RATE}])))",
                "{{job}}",
            ),
        ),
        "s",
    ),
    Panel(
        "Process CPU",
        (Query(f"sum by (job) (rate(process_cpu_seconds_total[{RATE}]))", "{{job}}"),),
        "percentunit",
    ),
    Panel(
        "Process memory (RSS)",
        (Query("max by (job) (process_resident_memory_bytes)", "{{job}}"),),
        "bytes",
    ),
    Panel(
        "Restarts (1h)",
        (Query("sum by (job) (changes(process_start_time_seconds[1h]))", "{{job}}"),),
        description="A process start time that changes is a restart.",
    ),
    Panel(
        "Open file descriptors (share of limit)",
        (Query("max by (job) (process_open_fds / process_max_fds)", "{{job}}"),),
        "percentunit",
    ),
)

JOB_STREAMS = 'stream=~"jobs\\\\.[a-z_]+\\\\.(critical|default|low)"'

JOBS: tuple[Panel, ...] = (
    Panel(
        "Queue depth per job stream",
        (Query(f"max by (stream) (stream_length{{{JOB_STREAMS}}})", "{{stream}}"),),
        description="XLEN of each job stream (acknowledged entries stay until trimmed); see lag for undelivered work.",
    ),
    Panel(
        "Queue depth by priority",
        (
            Query(
                f'sum by (priority) (label_replace(max by (stream) (stream_group_lag{{{JOB_STREAMS}}}), "priority", "$1", "stream", "jobs\\\\.[a-z_]+\\\\.(.*)"))',
                "{{priority}}",
            ),
        ),
        description="Entries not yet delivered, summed over job types, per priority.",
    ),
    Panel(
        "Group lag (undelivered)",
        (Query("max by (stream, group) (stream_group_lag)", "{{group}} {{stream}}"),),
    ),
    Panel(
        "Pending entries (delivered, not acknowledged)",
        (Query("max by (stream, group) (stream_group_pending)", "{{group}} {{stream}}"),),
    ),
    Panel(
        "Oldest pending age",
        (
            Query(
                "max by (stream, group) (stream_group_oldest_pending_age_seconds)",
                "{{group}} {{stream}}",
            ),
        ),
        "s",
        description="Grows while a consumer holds an entry without finishing it (stuck consumer).",
    ),
    Panel("Dead-letter depth", (Query("max by (stream) (stream_dead_letters)", "{{stream}}.dlq"),)),
    Panel(
        "Throughput by status",
        (Query(f"sum by (status) (rate(job_processed_total[{RATE}]))", "{{status}}"),),
        "ops",
    ),
    Panel(
        "Succeeded by job type",
        (
            Query(
                f'sum by (service, job_type) (rate(job_processed_total{{status="succeeded"}}[{RATE}]))',
                "{{service}} {{job_type}}",
            ),
        ),
        "ops",
    ),
    Panel(
        "Retries",
        (
            Query(
                f'sum by (service, job_type) (rate(job_processed_total{{status="retrying"}}[{RATE}]))',
                "{{service}} {{job_type}}",
            ),
        ),
        "ops",
    ),
    Panel(
        "Dead-lettered",
        (
            Query(
                f'sum by (service, job_type) (rate(job_processed_total{{status="dead"}}[{RATE}]))',
                "{{service}} {{job_type}}",
            ),
        ),
        "ops",
    ),
    Panel(
        "Failure ratio (dead / finished)",
        (
            Query(
                f'sum by (service, job_type) (rate(job_processed_total{{status="dead"}}[{RATE}])) / sum by (service, job_type) (rate(job_processed_total{{status=~"succeeded|skipped|dead"}}[{RATE}]))',
                "{{service}} {{job_type}}",
            ),
        ),
        "percentunit",
    ),
    Panel(
        "Job duration p50/p95/p99 by job type",
        quantiles("job_duration_seconds", "job_type"),
        "s",
        exemplars=True,
        description="Exemplars carry the handler span's trace id: click one to open the trace.",
    ),
    Panel(
        "Queue wait p50/p95/p99 by job type", quantiles("job_queue_wait_seconds", "job_type"), "s"
    ),
    Panel(
        "Consumer idle time",
        (
            Query(
                "max by (stream, group, consumer) (stream_consumer_idle_seconds)",
                "{{consumer}} {{group}}",
            ),
        ),
        "s",
    ),
    Panel(
        "Paused groups",
        (Query("max by (stream, group) (stream_group_paused)", "{{group}} {{stream}}"),),
    ),
    Panel(
        "Scheduler punctuality p50/p95/p99",
        quantiles("scheduler_punctuality_seconds", "schedule"),
        "s",
        description="Actual minus scheduled time of each fired tick.",
    ),
    Panel(
        "Scheduler fires by outcome (missed, late, …)",
        (
            Query(
                "sum by (schedule, outcome) (increase(scheduler_fires_total[1h]))",
                "{{schedule}} {{outcome}}",
            ),
        ),
    ),
    Panel(
        "Scheduler: time to next fire",
        (
            Query(
                "max by (schedule) (scheduler_next_fire_timestamp_seconds) - time()", "{{schedule}}"
            ),
        ),
        "s",
    ),
    Panel(
        "Fanout progress: chunks waiting and in flight",
        (
            Query('sum(max by (stream) (stream_group_lag{group="fanout"}))', "waiting"),
            Query('sum(max by (stream) (stream_group_pending{group="fanout"}))', "in flight"),
        ),
        description="Bulk archive chunks not yet expanded into child archive jobs.",
    ),
    Panel(
        "Fanout: chunks expanded by outcome",
        (
            Query(
                f'sum by (status) (rate(job_processed_total{{service="fanout", group="fanout"}}[{RATE}]))',
                "{{status}}",
            ),
        ),
        "ops",
        description="Each succeeded chunk wrote one child archive job per item (≤ 1,000).",
    ),
    Panel(
        "Failed job runs (traces)",
        (Query('{ span.job.id != "" && status = error }'),),
        kind="traces",
        datasource=TEMPO_UID,
        description="Consumer spans that ended in an error (a retry or a dead letter): open one.",
    ),
    Panel(
        "Dead letters → trace",
        (Query('{service=~".+"} | json | event="job.dead_lettered"'),),
        kind="logs",
        datasource=LOKI_UID,
        description="Each dead-lettered entry's log line carries trace_id: open it to jump to the trace in Tempo.",
    ),
)

DASHBOARDS: dict[str, tuple[str, tuple[Panel, ...]]] = {
    "service-overview": ("Service overview (golden signals)", SERVICE_OVERVIEW),
    "jobs": ("Jobs", JOBS),
}
"""Dashboard uid to (title, panels)."""
