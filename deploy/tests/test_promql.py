from __future__ import annotations

from promql import selectors


def test_selectors_skip_functions_groupings_and_ranges() -> None:
    expr = (
        'sum by (service, job_type) (rate(job_processed_total{status="dead"}[5m]))'
        " / on (service) group_left sum by (service) (rate(job_duration_seconds_count[1h]))"
        " > (14.4 * 0.01) and up == 0"
    )
    assert selectors(expr) == [
        'job_processed_total{status="dead"}',
        "job_duration_seconds_count",
        "up",
    ]


def test_recording_rule_names_are_selectors() -> None:
    assert selectors("job:failure_ratio:rate1h > (6 * 0.01)") == ["job:failure_ratio:rate1h"]
