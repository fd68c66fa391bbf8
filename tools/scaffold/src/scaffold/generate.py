"""Generate a consumer service or a job with copier, then register it where the workspace says.

``new_consumer`` renders ``templates/consumer`` (the archiver's shape) into the workspace root and
registers the service: its ``contracts.Service`` member, the root pyproject's import-linter and
mypy lists, the AsyncAPI export, the process table in ARCHITECTURE.md and README's ops ports. It
then adds the service's first job with ``new_job``, which renders ``templates/job`` into a scratch
directory, moves the new files into place, appends the handler to the service's ``handlers.py`` and
registers the job in contracts (``JobType``, its streams, the catalogue, the consumer groups). Only
then is the service registered in the deploy stack (``scaffold.deploy``: target, compose entries,
image filter, and a Redis ACL user derived from the groups just declared). Finally, unless ``sync``
is off, it locks and syncs the workspace, fixes import order and formatting of what it touched, and
rewrites the schemas (``make schemas``), so ``make lint`` and ``make test`` pass right away.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import copier

from scaffold import deploy
from scaffold.edits import (
    ScaffoldError,
    add_mypy_path,
    add_table_row,
    add_to_toml_lists,
    insert_import,
    insert_lines,
    update,
)

MODEL = "archiver"
"""The model service: wherever the workspace lists it, a new consumer is listed too."""

SERVICE_NAME = re.compile(r"^(?=.{1,24}$)[a-z][a-z0-9]*(-[a-z0-9]+)*$")
JOB_NAME = re.compile(r"^(?=.{1,24}$)[a-z][a-z0-9]*(_[a-z0-9]+)*$")
"""Names fit the generated docstrings and lines (ruff's 100 columns) up to 24 characters."""
CONTRACTS = Path("libs/contracts/src/contracts")
MAX_DESCRIPTION = 72
"""Descriptions go into docstrings and the catalogue: one line each, within the line length."""


def _description(description: str | None) -> str | None:
    """A description fit for a docstring's line: a sentence, capitalised, ending in a period."""
    if not description:
        return None
    text = description.strip()
    if len(text) > MAX_DESCRIPTION or "\n" in text:
        raise ScaffoldError(f"a description is one line of at most {MAX_DESCRIPTION} characters")
    if '"' in text or "\\" in text:
        raise ScaffoldError("a description has no double quotes or backslashes (docstrings)")
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


@dataclass
class Report:
    """What a generation did: files created and changed, and notes for the developer."""

    created: list[Path] = field(default_factory=list)
    changed: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def touch(self, root: Path, path: Path, changed: bool) -> None:
        """Count ``path`` as changed (once) if ``changed`` and not created by this run."""
        relative = path.relative_to(root)
        if changed and relative not in self.changed and relative not in self.created:
            self.changed.append(relative)


def _templates(root: Path) -> Path:
    return root / "templates"


def _package(service: str) -> str:
    return service.replace("-", "_")


def used_ops_ports(root: Path) -> set[int]:
    """Ops ports the services' ``[tool.devstack]`` tables and ARCHITECTURE.md's table claim."""
    ports: set[int] = set()
    for pyproject in (root / "services").glob("*/pyproject.toml"):
        table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("devstack", {})
        ports.update(int(p["ops_port"]) for p in table.get("processes", []) if "ops_port" in p)
    architecture = root / "ARCHITECTURE.md"
    if architecture.exists():  # services other branches are adding are listed there first
        ports.update(int(p) for p in re.findall(r"\|\s*(91\d\d)\b", architecture.read_text()))
    stack = root / deploy.STACK
    if stack.exists():  # the deploy stack's targets (a process without a pyproject of its own)
        ports.update(int(p) for p in re.findall(r"Target\([^)]*\), (91\d\d)\b", stack.read_text()))
    return ports


def free_ops_port(root: Path) -> int:
    """The port after the highest claimed one (notes-api's servers count up from 9100)."""
    port = max(used_ops_ports(root), default=9099) + 1
    if port >= 9200:
        raise ScaffoldError("no free ops port in 9100-9199; pick one with ops_port=")
    return port


def service_member(root: Path, service: str) -> str | None:
    """The ``contracts.Service`` member whose value is ``service``, if there is one."""
    source = (root / CONTRACTS / "groups.py").read_text()
    found = re.search(rf'^\s+(\w+) = "{re.escape(service)}"\s*$', source, flags=re.MULTILINE)
    return found.group(1) if found else None


def new_consumer(
    root: Path,
    name: str,
    *,
    job: str | None = None,
    description: str | None = None,
    ops_port: int | None = None,
    sync: bool = True,
) -> Report:
    """Generate ``services/<name>`` with its first job, register both; see the module docstring."""
    if not SERVICE_NAME.match(name):
        raise ScaffoldError(
            f"{name!r}: a service name is lower case letters, digits and dashes (24 at most)"
        )
    description = _description(description)
    package = _package(name)
    target = root / "services" / name
    if target.exists():
        raise ScaffoldError(f"services/{name} exists already")
    if service_member(root, name) is not None:
        raise ScaffoldError(f"contracts.Service already has a member {name!r}")
    port = ops_port or free_ops_port(root)
    if port in used_ops_ports(root):
        raise ScaffoldError(f"ops port {port} is taken")
    member = package.upper()
    class_prefix = "".join(part.capitalize() for part in package.split("_"))
    data: dict[str, object] = {
        "name": name,
        "package": package,
        "member": member,
        "class_prefix": class_prefix,
        "ops_port": port,
        "job": job or package,
    }
    if description:
        data["description"] = description
    copier.run_copy(str(_templates(root) / "consumer"), root, data=data, defaults=True, quiet=True)
    report = Report(created=[p.relative_to(root) for p in sorted(target.rglob("*")) if p.is_file()])
    _register_service(
        root,
        name=name,
        package=package,
        member=member,
        port=port,
        description=description or f"TODO: say what {name} does.",
        report=report,
    )
    job_report = new_job(root, name, job or package, store_class=f"{class_prefix}Store", sync=False)
    report.created += job_report.created
    report.changed += [p for p in job_report.changed if p not in report.changed + report.created]
    report.notes += job_report.notes
    _register_deploy(root, name=name, port=port, report=report)
    _tidy(root, report)
    if sync:
        _lock_and_sync(root, report)
        _export_schemas(root, report)
    return report


def _register_service(
    root: Path,
    *,
    name: str,
    package: str,
    member: str,
    port: int,
    description: str,
    report: Report,
) -> None:
    groups = root / CONTRACTS / "groups.py"
    report.touch(
        root,
        groups,
        update(
            groups,
            insert_lines,
            marker="# scaffold: new services above this line",
            owner="Service",
            lines=[f'    {member} = "{name}"'],
        ),
    )
    pyproject = root / "pyproject.toml"
    report.touch(root, pyproject, update(pyproject, add_to_toml_lists, beside=MODEL, new=package))
    report.touch(
        root,
        pyproject,
        update(
            pyproject, add_mypy_path, beside=f"services/{MODEL}/src", new=f"services/{name}/src"
        ),
    )
    exporter = root / "scripts" / "export_asyncapi.py"
    report.touch(
        root,
        exporter,
        update(
            exporter,
            insert_lines,
            marker="# scaffold: new services above this line",
            owner="SERVICES",
            lines=[f'    "{name}": "{package}.handlers:router",'],
        ),
    )
    architecture = root / "ARCHITECTURE.md"
    if architecture.exists():
        row = f"| `{name}` | — | {port} | {name} | PostgreSQL, Redis |"
        report.touch(
            root,
            architecture,
            update(architecture, add_table_row, heading="## Process conventions", row=row),
        )
    readme = root / "README.md"
    if readme.exists():
        report.touch(root, readme, update(readme, _add_ops_port, name=name, port=port))
        report.touch(root, readme, update(readme, _add_layout_row, name=name, text=description))


def _register_deploy(root: Path, *, name: str, port: int, report: Report) -> None:
    """After the job's groups exist: the ACL user is derived from what the service reads."""
    for path, note in deploy.register(root, name=name, port=port, python=_python(root)):
        if path is not None:
            report.touch(root, root / path, True)
        if note and (path is None or path == deploy.ACL):
            report.notes.append(note)


def _add_layout_row(readme: str, *, name: str, text: str) -> str:
    # README's "Layout" table: a row after the last `services/...` row.
    lines = readme.splitlines(keepends=True)
    rows = [i for i, line in enumerate(lines) if line.startswith("| `services/")]
    if not rows or any(line.startswith(f"| `services/{name}`") for line in lines):
        return readme
    row = f"| `services/{name}` | {text} (generated by `make new-consumer`) |\n"
    return "".join([*lines[: rows[-1] + 1], row, *lines[rows[-1] + 1 :]])


def _add_ops_port(readme: str, *, name: str, port: int) -> str:
    # README's quick reference: "ops ports   archiver :9102, notes-api :9100, ... (/metrics ...)".
    return re.sub(
        r"^(\s*ops ports\s+)(.*?)(\s+\(/metrics)",
        lambda m: f"{m.group(1)}{m.group(2)}, {name} :{port}{m.group(3)}",
        readme,
        count=1,
        flags=re.MULTILINE,
    )


def _store_of(handlers: Path, store_module: Path) -> tuple[str, str | None]:
    """The store type a new handler takes, and the import it needs (None: imported already)."""
    tree = ast.parse(handlers.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef):
            for argument in node.args.args:
                if argument.arg == "store" and isinstance(argument.annotation, ast.Name):
                    return argument.annotation.id, None
    if store_module.exists():
        for node in ast.parse(store_module.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Store"):
                module = f"{handlers.parent.name}.{store_module.stem}"
                return node.name, f"from {module} import {node.name}"
    raise ScaffoldError(f"{handlers}: no handler takes a `store`, and store.py defines none")


def new_job(
    root: Path,
    service: str,
    job: str,
    *,
    handler: str | None = None,
    description: str | None = None,
    store_class: str | None = None,
    sync: bool = True,
) -> Report:
    """Add job ``job`` to ``service``: contracts payload and registrations, handler and test."""
    if not JOB_NAME.match(job):
        raise ScaffoldError(
            f"{job!r}: a job name is lower case letters, digits and underscores (24 at most)"
        )
    description = _description(description)
    package = _package(service)
    handlers = root / "services" / service / "src" / package / "handlers.py"
    if not handlers.exists():
        raise ScaffoldError(f"services/{service} has no src/{package}/handlers.py")
    member = service_member(root, service)
    if member is None:
        raise ScaffoldError(f"contracts.Service has no member for {service!r}")
    status = root / CONTRACTS / "status.py"
    if re.search(rf'^\s+\w+ = "{job}"\s*$', status.read_text(), flags=re.MULTILINE):
        raise ScaffoldError(f"contracts.JobType already has {job!r}")
    store_import = None
    if store_class is None:
        store_class, store_import = _store_of(handlers, handlers.parent / "store.py")
    elif store_class not in handlers.read_text():
        store_import = f"from {package}.store import {store_class}"
    data: dict[str, object] = {
        "service": service,
        "package": package,
        "member": member,
        "job": job,
        "store_class": store_class,
    }
    if handler:
        data["handler"] = handler
    if description:
        data["description"] = description
    report = Report()
    with tempfile.TemporaryDirectory(prefix="scaffold-job-") as scratch:
        rendered = Path(scratch)
        worker = copier.run_copy(
            str(_templates(root) / "job"), rendered, data=data, defaults=True, quiet=True
        )
        answers = worker.answers.combined
        snippets = rendered / "_snippets"
        for path in sorted(p for p in rendered.rglob("*") if p.is_file()):
            relative = path.relative_to(rendered)
            if relative.parts[0] == "_snippets":
                continue
            if (root / relative).exists():
                raise ScaffoldError(f"{relative} exists already")
        for path in sorted(p for p in rendered.rglob("*") if p.is_file()):
            relative = path.relative_to(rendered)
            if relative.parts[0] != "_snippets":
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, root / relative)
                report.created.append(relative)
        imports = (snippets / "imports.py").read_text().splitlines()
        body = (snippets / "handler.py").read_text()
    source = handlers.read_text()
    for line in [*imports, *([store_import] if store_import else [])]:
        source = insert_import(source, line)
    handlers.write_text(source.rstrip("\n") + "\n" + body)
    report.touch(root, handlers, True)
    _register_job(
        root,
        job=job,
        member=member,
        handler=str(answers["handler"]),
        request_class=str(answers["request_class"]),
        purpose=str(answers["description"]),
        report=report,
    )
    for widened, _ in deploy.refresh(
        root, service=service, job=job
    ):  # its ACL user reads the new streams
        if widened is not None:
            report.touch(root, root / widened, True)
    _tidy(root, report)
    if sync:
        _export_schemas(root, report)
    return report


def _register_job(
    root: Path,
    *,
    job: str,
    member: str,
    handler: str,
    request_class: str,
    purpose: str,
    report: Report,
) -> None:
    kind = job.upper()
    status = root / CONTRACTS / "status.py"
    report.touch(
        root,
        status,
        update(
            status,
            insert_lines,
            marker="# scaffold: new job types above this line",
            owner="JobType",
            lines=[f'    {kind} = "{job}"'],
        ),
    )
    streams = root / CONTRACTS / "streams.py"
    report.touch(
        root,
        streams,
        update(
            streams,
            insert_lines,
            marker="# scaffold: new queued job types above this line",
            owner="QUEUED_JOB_TYPES",
            lines=[f"    JobType.{kind},"],
        ),
    )
    catalogue = root / CONTRACTS / "catalogue.py"
    report.touch(
        root,
        catalogue,
        update(catalogue, insert_import, f"from contracts.job_{job} import {request_class}"),
    )
    report.touch(
        root,
        catalogue,
        update(
            catalogue,
            insert_lines,
            marker="# scaffold: new catalogue rows above this line",
            owner="CATALOGUE",
            lines=[
                "    EventSpec(",
                f"        {request_class}, job_streams(JobType.{kind}), (),",
                f"        {json.dumps(purpose, ensure_ascii=False)},",
                "    ),",
            ],
        ),
    )
    if member not in _runtime_members(catalogue.read_text()):
        report.touch(
            root,
            catalogue,
            update(
                catalogue,
                insert_lines,
                marker="# scaffold: new job runtimes above this line",
                owner="_RUNTIME",
                lines=[f"    Service.{member},"],
            ),
        )
    groups = root / CONTRACTS / "groups.py"
    report.touch(
        root,
        groups,
        update(
            groups,
            insert_lines,
            marker="# scaffold: new groups above this line",
            owner="CONSUMER_GROUPS",
            lines=[f'    *_reads(Service.{member}, "{handler}", *job_streams(JobType.{kind})),'],
        ),
    )
    report.notes.append(
        f"{request_class} has no producer in the catalogue yet: add the services that enqueue it "
        f"to its row in {CONTRACTS / 'catalogue.py'} (then `make schemas`)."
    )


def _runtime_members(source: str) -> set[str]:
    """The ``Service`` members in ``_RUNTIME`` (services whose runtime emits attempt events)."""
    aliases: dict[str, str] = {}
    runtime: ast.Tuple | None = None
    for node in ast.parse(source).body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        names = target.elts if isinstance(target, ast.Tuple) else [target]
        values = value.elts if isinstance(value, ast.Tuple) else [value]
        for name, item in zip(names, values, strict=False):
            if isinstance(name, ast.Name) and isinstance(item, ast.Attribute):
                aliases[name.id] = item.attr
        if isinstance(target, ast.Name) and target.id == "_RUNTIME":
            runtime = value if isinstance(value, ast.Tuple) else None
    if runtime is None:
        raise ScaffoldError("catalogue.py has no `_RUNTIME = (...)` tuple")
    return {
        aliases.get(e.id, "") if isinstance(e, ast.Name) else getattr(e, "attr", "")
        for e in runtime.elts
    }


def _run(root: Path, report: Report, *command: str) -> None:
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise ScaffoldError(f"`{' '.join(command)}` failed:\n{done.stdout}{done.stderr}")


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        raise ScaffoldError("uv is not on PATH (run `make bootstrap`)")
    return uv


def _lock_and_sync(root: Path, report: Report) -> None:
    """A new workspace member changes uv.lock; sync installs it (make sync does the same)."""
    _run(root, report, _uv(), "lock", "--quiet")
    _run(root, report, _uv(), "sync", "--locked", "--all-packages", "--quiet")


def _python(root: Path) -> str:
    """The workspace's interpreter (uv's project environment), else the one running scaffold."""
    venv = root / os.environ.get("UV_PROJECT_ENVIRONMENT", ".venv") / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _tidy(root: Path, report: Report) -> None:
    """Sort the imports the edits added and format what was written, with the workspace's ruff."""
    files = [str(p) for p in report.created + report.changed if p.suffix == ".py"]
    if not files:
        return
    _run(
        root,
        report,
        _python(root),
        "-m",
        "ruff",
        "check",
        "--quiet",
        "--fix",
        "--select",
        "I",
        *files,
    )
    _run(root, report, _python(root), "-m", "ruff", "format", "--quiet", *files)


def _export_schemas(root: Path, report: Report) -> None:
    """``make schemas``: event JSON Schemas, docs/events.md's table, the AsyncAPI documents."""
    _run(root, report, _python(root), "scripts/export_schemas.py")
    _run(root, report, _python(root), "scripts/export_asyncapi.py")
    report.notes.append("wrote docs/events/, docs/events.md and docs/asyncapi/ (make schemas)")
