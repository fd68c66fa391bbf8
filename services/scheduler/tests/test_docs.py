"""docs/async-jobs.md's scheduler section names every policy value, setting and default schedule."""

from pathlib import Path

from scheduler.schedules import CatchUp, Overlap, load_schedules
from scheduler.settings import SchedulerSettings
from servicekit import ServiceSettings

DOC = Path(__file__).parents[3] / "docs" / "async-jobs.md"
SECTION = "## Scheduled jobs: cron schedules and delayed jobs"


def _section() -> str:
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def test_the_section_names_every_policy_value() -> None:
    section = _section()
    for value in [*CatchUp, *Overlap]:
        assert f"`{value}`" in section, value


def test_the_section_names_every_setting_of_the_scheduler() -> None:
    own = set(SchedulerSettings.model_fields) - set(ServiceSettings.model_fields)
    section = _section()
    for name in own:
        assert f"`{name.upper()}`" in section, name


def test_the_section_describes_the_default_schedules() -> None:
    section = _section()
    for schedule in load_schedules(None):
        assert schedule.event.type_name() in section or schedule.name in section
