"""FastStream stays off the start-up path, and only its public API is used."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]
OUR_CODE = [
    *ROOT.glob("libs/*/src/**/*.py"),
    *ROOT.glob("services/*/src/**/*.py"),
    *ROOT.glob("bench/*.py"),
    *ROOT.glob("scripts/*.py"),
]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_imports_faststream_internals() -> None:
    # FastStream's private API may change in any release; ours uses only the public one.
    offenders = {
        str(path.relative_to(ROOT)): sorted(private)
        for path in OUR_CODE
        if (private := {m for m in imported_modules(path) if m.startswith("faststream._internal")})
    }
    assert offenders == {}


def test_importing_what_a_service_starts_with_does_not_load_faststream() -> None:
    code = (
        "import sys, servicekit, servicekit.jobs, servicekit.runner, servicekit.outbox, "
        "servicekit.asyncapi, servicekit.headers, servicekit.ops; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'faststream'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
