"""The archiver's sections of docs/async-jobs.md show the code the other tests exercise."""

import re
from pathlib import Path

from archiver import handlers

DOCS = Path(__file__).parents[3] / "docs"
SECTIONS = ("## Fire-and-forget: archive a note", "## Document copy")


def test_async_jobs_page_shows_the_archivers_real_handlers() -> None:
    page = (DOCS / "async-jobs.md").read_text()
    source = Path(handlers.__file__).read_text()
    start = min(page.index(title) for title in SECTIONS)
    blocks = re.findall(r"```python\n(.*?)```", page[start:], flags=re.DOTALL)

    assert len(blocks) == 3
    for block in blocks:
        assert block in source
