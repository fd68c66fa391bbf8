"""Register a new service in the deploy stack: ``deploy/``, ``docker-compose.yml``, image workflow.

Every entry is derived from what the stack already does for the model service, the archiver, so
the generator needs no template of its own and follows the stack when its conventions change:

- ``deploy/stack.py``: a ``Target`` in ``TARGETS`` (the one list of processes), then
  ``python deploy/stack.py`` rewrites the Prometheus scrape config from it;
- ``docker-compose.yml``: copies of ``migrate-archiver``, ``archiver`` and its ``ops-archiver``
  network, renamed, with the new ops port and the next free subnet and address; Prometheus joins
  the new network; Redis gets the new password variable;
- ``deploy/env.example``: ``<NAME>_TAG`` and ``<NAME>_REDIS_PASSWORD``; ``deploy/redis/start.sh``
  substitutes the password into the ACL file;
- ``deploy/redis/users.acl.template``: an ACL user whose key patterns come from contracts (the
  streams its groups read, their dead letters, the streams the catalogue names it a producer of),
  in the ``StreamKeys`` forms the archiver's line uses; its other rules are the archiver's;
- ``.github/workflows/images.yml``: a path filter for the package and the libs it depends on.

Each insertion point carries a marker comment (``scaffold: ... above this line``) where the file's
syntax allows one; without it the entry goes after the archiver's and the marker comes back. A
workspace without the deploy files gets notes saying what to add by hand instead.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from scaffold.edits import ScaffoldError, insert_lines

MODEL, MODEL_PORT = "archiver", 9102
STACK = Path("deploy/stack.py")
COMPOSE = Path("docker-compose.yml")
ENV_EXAMPLE = Path("deploy/env.example")
ACL = Path("deploy/redis/users.acl.template")
START = Path("deploy/redis/start.sh")
WORKFLOW = Path(".github/workflows/images.yml")

Note = tuple[Path | None, str]
"""A changed file (or None) and what to tell the developer."""


def env_name(service: str) -> str:
    """A service's prefix in environment variables: ``image-thumbnailer``, ``IMAGE_THUMBNAILER``."""
    return service.upper().replace("-", "_")


def insert_at_marker(
    text: str, *, marker: str, lines: list[str], after: Callable[[list[str]], int | None]
) -> str:
    """Return ``text`` with ``lines`` above the ``marker`` line, else after line ``after(...)``.

    The marker is a whole line, indentation included. Without it, ``after`` finds the line the new
    ones follow (the archiver's entry), and the marker is put back below them.
    """
    current = text.splitlines()
    for index, line in enumerate(current):
        if line.strip() == marker.strip():
            return "\n".join(current[:index] + lines + current[index:]) + "\n"
    anchor = after(current)
    if anchor is None:
        raise ScaffoldError(f"found neither {marker.strip()!r} nor the archiver's entry")
    return "\n".join(current[: anchor + 1] + lines + [marker] + current[anchor + 1 :]) + "\n"


def block(lines: list[str], key: str) -> tuple[int, int] | None:
    """First and last line of the YAML mapping entry ``key`` (a line ``<indent>key:``)."""
    for start, line in enumerate(lines):
        if line.strip() == f"{key}:" and not line.lstrip().startswith("#"):
            indent = len(line) - len(line.lstrip())
            end = start
            for index in range(start + 1, len(lines)):
                inner = lines[index]
                if inner.strip() and len(inner) - len(inner.lstrip()) <= indent:
                    break
                if inner.strip():
                    end = index
            return start, end
    return None


def _line_with(fragment: str) -> Callable[[list[str]], int | None]:
    def find(lines: list[str]) -> int | None:
        return next((i for i in reversed(range(len(lines))) if fragment in lines[i]), None)

    return find


def _end_of(key: str) -> Callable[[list[str]], int | None]:
    def find(lines: list[str]) -> int | None:
        found = block(lines, key)
        return found[1] if found else None

    return find


def renamed(text: str, name: str) -> str:
    """``text`` with the archiver's name, and its prefix in variables, replaced by ``name``'s."""
    text = re.sub(rf"\b{MODEL}\b", name, text)
    return re.sub(rf"\b{env_name(MODEL)}_", f"{env_name(name)}_", text)


@dataclass(frozen=True)
class Renaming:
    """The archiver's names, port and ops address, and the new service's."""

    name: str
    port: int
    subnet: tuple[str, str]
    address: tuple[str, str]

    def __call__(self, text: str) -> str:
        """``text`` (an archiver entry) with every name, port and address made the new one's."""
        text = renamed(text, self.name)
        text = re.sub(rf"\b{MODEL_PORT}\b", str(self.port), text)
        for old, new in (self.subnet, self.address):
            text = re.sub(rf"(?<![\d.]){re.escape(old)}(?![\d.])", new, text)
        return text


def free_ops_network(compose: dict[str, object], name: str) -> tuple[str, str]:
    """The archiver's ops subnet and the next one no network in ``compose`` uses, in its /16."""
    networks = compose.get("networks") or {}
    assert isinstance(networks, dict)
    used = [
        ipaddress.ip_network(config["subnet"])
        for network in networks.values()
        for config in ((network or {}).get("ipam") or {}).get("config", [])
        if "subnet" in config
    ]
    model = ((networks.get(f"ops-{MODEL}") or {}).get("ipam") or {}).get("config", [{}])[0]
    if "subnet" not in model:
        raise ScaffoldError(f"docker-compose.yml: ops-{MODEL} has no ipam subnet to copy")
    subnet = ipaddress.ip_network(model["subnet"])
    for candidate in subnet.supernet(new_prefix=16).subnets(new_prefix=subnet.prefixlen):
        if not any(candidate.overlaps(other) for other in used):
            return str(subnet), str(candidate)
    raise ScaffoldError(f"no free /{subnet.prefixlen} for ops-{name} in {subnet.supernet(16)}")


def _ops_address(compose: dict[str, object]) -> str:
    services = compose.get("services") or {}
    assert isinstance(services, dict)
    networks = services[MODEL].get("networks") or {}
    return str(networks[f"ops-{MODEL}"]["ipv4_address"])


def renaming_for(compose_text: str, name: str, port: int) -> Renaming:
    """How the archiver's compose entries become ``name``'s: its port, a free subnet and address."""
    compose = yaml.safe_load(compose_text) or {}
    old_subnet, new_subnet = free_ops_network(compose, name)
    old_address = _ops_address(compose)
    offset = int(ipaddress.ip_address(old_address)) - int(
        ipaddress.ip_network(old_subnet).network_address
    )
    new_address = str(ipaddress.ip_network(new_subnet).network_address + offset)
    return Renaming(name, port, (old_subnet, new_subnet), (old_address, new_address))


def _copied(text: str, key: str, rename: Renaming) -> list[str]:
    lines = text.splitlines()
    found = block(lines, key)
    if found is None:
        raise ScaffoldError(f"docker-compose.yml has no {key!r} to copy")
    return [rename(line) for line in lines[found[0] : found[1] + 1]]


def add_compose_service(text: str, *, name: str, port: int) -> str:
    """Return compose ``text`` with ``name``'s migration, service, ops network, Redis password."""
    services = (yaml.safe_load(text) or {}).get("services") or {}
    if name in services or MODEL not in services:
        return text
    rename = renaming_for(text, name, port)
    password = next(
        (line for line in text.splitlines() if f"{env_name(MODEL)}_REDIS_PASSWORD:" in line), None
    )
    if password is not None:
        text = insert_at_marker(
            text,
            marker="      # scaffold: new Redis passwords above this line",
            lines=[rename(password)],
            after=_line_with(password.strip()),
        )
    if f"migrate-{MODEL}" in services:
        text = insert_at_marker(
            text,
            marker="  # scaffold: new migrations above this line",
            lines=["", *_copied(text, f"migrate-{MODEL}", rename)],
            after=_end_of(f"migrate-{MODEL}"),
        )
    text = insert_at_marker(
        text,
        marker="  # scaffold: new services above this line",
        lines=["", *_copied(text, MODEL, rename)],
        after=_end_of(MODEL),
    )
    text = insert_at_marker(
        text,
        marker="      # scaffold: new ops networks above this line",
        lines=[f"      - ops-{name}"],
        after=_line_with(f"- ops-{MODEL}"),
    )
    return insert_at_marker(
        text,
        marker="  # scaffold: new ops network definitions above this line",
        lines=_copied(text, f"ops-{MODEL}", rename),
        after=_end_of(f"ops-{MODEL}"),
    )


def add_target(text: str, *, name: str, port: int) -> str:
    """Return deploy/stack.py with a ``Target`` for ``name`` in ``TARGETS``."""
    if re.search(rf'Target\(\s*"{re.escape(name)}"', text):
        return text
    return insert_lines(
        text,
        marker="# scaffold: new targets above this line",
        owner="TARGETS",
        lines=[f'    Target("{name}", "{name}", ("{name}",), {port}),'],
    )


def add_env_example(text: str, *, name: str) -> str:
    """Return deploy/env.example with ``name``'s image tag and Redis password, as the archiver's."""
    for suffix, marker in (
        ("_TAG=", "# scaffold: new image tags above this line"),
        ("_REDIS_PASSWORD=", "# scaffold: new Redis passwords above this line"),
    ):
        model = f"{env_name(MODEL)}{suffix}"
        line = next((x for x in text.splitlines() if x.startswith(model)), None)
        if line is None or f"\n{env_name(name)}{suffix}" in text:
            continue
        new = f"{env_name(name)}{suffix}{line[len(model) :]}"
        text = insert_at_marker(text, marker=marker, lines=[new], after=_line_with(model))
    return text


def add_start_password(text: str, *, name: str) -> str:
    """Return the Redis start script substituting ``name``'s password into the ACL file.

    The lines are one backslash-continued ``sed`` command, where no comment may go: the new line
    follows the last password line.
    """
    if f"@{env_name(name)}_REDIS_PASSWORD@" in text:
        return text
    lines = text.splitlines()
    model = next((x for x in lines if f"@{env_name(MODEL)}_REDIS_PASSWORD@" in x), None)
    last = _line_with("_REDIS_PASSWORD}|")(lines)
    if model is None or last is None:
        raise ScaffoldError(f"{START} substitutes no password of the archiver's to copy")
    new = model.replace(env_name(MODEL), env_name(name))
    return "\n".join([*lines[: last + 1], new, *lines[last + 1 :]]) + "\n"


@dataclass(frozen=True)
class Access:
    """The Redis key patterns a service needs, from contracts, in the ACL file's forms."""

    reads: tuple[str, ...]
    """``~{tag}*`` per family it reads (the stream, its companions, its dead letters)."""
    writes: tuple[str, ...]
    """``%W~...`` for what it may XADD: its streams' dead letters and the catalogue's streams."""
    job_families: tuple[str, ...] = ()
    """``~{jobs.<type>}*`` of every queued job type (any service's): see ``add_job_family``."""


_CONTRACTS_SAY = """
import json, sys
from contracts import CATALOGUE, QUEUED_JOB_TYPES, Service, groups_for, job_streams
from servicekit.keys import StreamKeys, family
service, keys = Service(sys.argv[1]), StreamKeys()
def pattern(stream):
    return keys.tag(stream) + (".*" if family(stream) != stream else "")
reads = [g.stream for g in groups_for(service)]
produced = [s for spec in CATALOGUE if service in spec.producers for s in spec.streams]
print(json.dumps({
    "reads": list(dict.fromkeys("~" + keys.tag(s) + "*" for s in reads)),
    "writes": list(dict.fromkeys(
        ["%W~" + pattern(s) for s in produced] + ["%W~" + pattern(s) + ".dlq" for s in reads]
    )),
    "job_families": ["~" + keys.tag(job_streams(t)[0]) + "*" for t in QUEUED_JOB_TYPES],
}))
"""


def access(root: Path, service: str) -> Access:
    """What ``service`` reads and writes by the workspace's contracts (not the installed ones).

    It runs in a subprocess with the workspace's ``contracts`` and ``servicekit`` first on the
    path: the generator has just added the service's member and groups there.
    """
    paths = [str(root / "libs" / lib / "src") for lib in ("contracts", "servicekit")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", _CONTRACTS_SAY, service],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ScaffoldError(f"reading {service}'s streams from contracts failed:\n{done.stderr}")
    said = json.loads(done.stdout)
    return Access(tuple(said["reads"]), tuple(said["writes"]), tuple(said["job_families"]))


def _acl_parts(line: str) -> tuple[list[str], list[str]]:
    """A user line's tokens outside its selector, and inside (without the parentheses)."""
    head, _, rest = line.partition("(")
    return head.split(), rest.rpartition(")")[0].split()


def acl_line(model_line: str, *, model: Access, new: Access, name: str) -> str:
    """The archiver's ACL line for ``name``: the archiver's own patterns replaced by ``new``'s.

    Rules and the patterns every consumer shares (the earlier key layout, ``schedules.fired.v1``)
    stay; ``dedupe:archiver:*`` is renamed.
    """
    head, selector = _acl_parts(model_line)
    first_read = next((i for i, t in enumerate(head) if t in model.reads), len(head))
    kept = [renamed(t, name) for t in head[:first_read]]
    kept += list(new.reads)
    kept += [renamed(t, name) for t in head[first_read:] if t not in model.reads]
    kept = list(dict.fromkeys(kept))
    rules = [t for t in selector if not t.startswith("%")]
    writes = [t for t in selector if t.startswith("%") and t not in model.writes]
    return " ".join([*kept, f"({' '.join([*rules, *new.writes, *writes])})"])


def acl_comment(name: str) -> list[str]:
    """What the generated ACL line cannot know, for the developer (start.sh drops ``#`` lines)."""
    return [
        f"# {name}: generated by `make new-consumer` from contracts: it reads the streams of its",
        "# groups (groups_for) and may append their dead letters, jobs.lifecycle.v1 and the",
        "# streams the catalogue names it a producer of. Add by hand: streams its handlers emit to",
        "# that the catalogue does not list yet, and any Redis key it uses beyond its streams.",
    ]


def add_acl_user(text: str, *, root: Path, name: str) -> str:
    """Return the ACL template with a user for ``name`` derived from the archiver's line."""
    lines = text.splitlines()
    if any(line.startswith(f"user {name} ") for line in lines):
        return text
    model_line = next((x for x in lines if x.startswith(f"user {MODEL} ")), None)
    if model_line is None:
        raise ScaffoldError(f"{ACL} has no user {MODEL} to copy")
    line = acl_line(model_line, model=access(root, MODEL), new=access(root, name), name=name)
    return text.rstrip("\n") + "\n" + "\n".join([*acl_comment(name), line]) + "\n"


def refresh_acl_user(text: str, *, root: Path, name: str) -> str:
    """Return the ACL template with patterns ``name`` now needs (a new job) added to its line.

    Only additions: a pattern written by hand stays. A line without a selector gets the read
    patterns only (they allow appending too).
    """
    lines = text.splitlines()
    index = next((i for i, x in enumerate(lines) if x.startswith(f"user {name} ")), None)
    if index is None:
        return text
    needed = access(root, name)
    head, selector = _acl_parts(lines[index])
    reads = [t for t in needed.reads if t not in head]
    writes = [t for t in needed.writes if t not in selector]
    if not reads and not (writes and "(" in lines[index]):
        return text
    known = [i for i, t in enumerate(head) if t in needed.reads] or [
        i for i, t in enumerate(head) if t.startswith("~{")
    ]
    last_read = max(known, default=len(head) - 1)  # beside the streams it read already
    head = head[: last_read + 1] + reads + head[last_read + 1 :]
    line = " ".join(head)
    if "(" in lines[index]:
        line += f" ({' '.join([*selector, *writes])})"
    lines[index] = line
    return "\n".join(lines) + "\n"


def add_image_filter(text: str, *, root: Path, name: str) -> str:
    """Return the image workflow with a path filter for ``name`` like the archiver's.

    The filter names the package, the workspace libs its pyproject depends on, and the archiver's
    other paths (the lock, the Dockerfile).
    """
    lines = text.splitlines()
    if any(line.strip() == f"{name}:" for line in lines):
        return text
    found = block(lines, MODEL)
    if found is None:
        raise ScaffoldError(f"{WORKFLOW} has no path filter for {MODEL} to copy")
    key, *items = lines[found[0] : found[1] + 1]
    item = items[0][: items[0].index("-")]
    libs = {p.parent.name for p in (root / "libs").glob("*/pyproject.toml")}
    project = tomllib.loads((root / "services" / name / "pyproject.toml").read_text())["project"]
    used = [lib for d in project["dependencies"] if (lib := re.split(r"[<>=\[; ]", d)[0]) in libs]
    new = [key.replace(MODEL, name), f"{item}- services/{name}/**"]
    new += [f"{item}- libs/{lib}/**" for lib in used]
    new += [x for x in items if "services/" not in x and "libs/" not in x]
    indent = key[: len(key) - len(key.lstrip())]
    return insert_at_marker(
        text,
        marker=f"{indent}# scaffold: new packages above this line",
        lines=new,
        after=_end_of(MODEL),
    )


def _edit(root: Path, relative: Path, change: Callable[[str], str]) -> bool:
    path = root / relative
    before = path.read_text()
    after = change(before)
    if after != before:
        path.write_text(after)
    return after != before


def regenerate_scrape_config(root: Path, python: str) -> None:
    """``python deploy/stack.py``: the scrape config follows TARGETS (as ``make dashboards``)."""
    done = subprocess.run(  # noqa: S603
        [python, str(STACK)], cwd=root, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ScaffoldError(f"`python {STACK}` failed:\n{done.stdout}{done.stderr}")


def register(root: Path, *, name: str, port: int, python: str = sys.executable) -> Iterator[Note]:
    """Add ``name`` to the deploy stack; yield (changed file or None, note) per step."""
    if not (root / STACK).is_file() or not (root / COMPOSE).is_file():
        yield (
            None,
            f"deploy: no {STACK} and {COMPOSE}; add {name} to the stack by hand (run "
            f"`{name} migrate`, then `{name}` with OPS_PORT={port}; scrape /metrics there)",
        )
        return
    env = env_name(name)
    steps: list[tuple[Path, Callable[[str], str], str]] = [
        (STACK, lambda t: add_target(t, name=name, port=port), f"Target {name} (ops port {port})"),
        (COMPOSE, lambda t: add_compose_service(t, name=name, port=port),
         f"migrate-{name}, {name}, ops-{name} (Prometheus joins it), from the archiver's"),
        (ENV_EXAMPLE, lambda t: add_env_example(t, name=name),
         f"{env}_TAG and {env}_REDIS_PASSWORD"),
        (START, lambda t: add_start_password(t, name=name), f"{env}_REDIS_PASSWORD"),
        (ACL, lambda t: add_acl_user(t, root=root, name=name),
         f"ACL user {name} from contracts: review the comment above it"),
        (WORKFLOW, lambda t: add_image_filter(t, root=root, name=name), f"image filter {name}"),
    ]  # fmt: skip
    for relative, change, what in steps:
        if not (root / relative).is_file():
            yield None, f"{relative} is missing: add {what} by hand"
        elif _edit(root, relative, change):
            yield relative, f"{relative}: {what}"
    regenerate_scrape_config(root, python)
    yield Path("deploy/prometheus/prometheus.yml"), ""


def add_job_family(text: str, *, families: tuple[str, ...], new: str) -> str:
    """Return the ACL template with ``new`` (``~{jobs.<type>}*``) for users of every job type.

    A user whose patterns name every other queued job type's family handles jobs of any type: the
    scheduler, whose release script moves a delayed job of whatever type to its stream (through
    ``{jobs.<type>}:delayed``). It needs the new type too. A user that reads or writes some job
    types only (the archiver, notes-api's worker) is left alone.
    """
    others = [f for f in families if f != new]
    lines = text.splitlines()
    for index, line in enumerate(lines):
        head, _ = _acl_parts(line)
        if not line.startswith("user ") or not others or new in head:
            continue
        if all(family in head for family in others):
            at = max(head.index(family) for family in others) + 1
            lines[index] = line.replace(" ".join(head), " ".join([*head[:at], new, *head[at:]]), 1)
    return "\n".join(lines) + "\n"


def refresh(root: Path, *, service: str, job: str) -> Iterator[Note]:
    """After a new job: ACL users get what the new job type needs of them.

    The service's user (if it has one) its streams' patterns; the users that handle every job
    type (the scheduler) the new type's family.
    """
    if not (root / ACL).is_file():
        return
    families = access(root, service).job_families
    new = f"~{{jobs.{job}}}*"
    if new in families and _edit(
        root, ACL, lambda t: add_job_family(t, families=families, new=new)
    ):
        yield ACL, f"{ACL}: users that handle every job type may touch jobs.{job}'s keys"
    if _edit(root, ACL, lambda t: refresh_acl_user(t, root=root, name=service)):
        yield ACL, f"{ACL}: {service}'s ACL user reads the new job's streams"
