"""The console's pages and actions: every figure and every change is a servicekit.operations call.

Queues (the declared (stream, group) pairs with their status, pause/resume), dead letters (filter,
inspect, redrive with a dry run first, purge with a typed confirmation), and what every page
shares (the operator, forms with their CSRF proof, rendering, masking). Actions are audited in
the stream `jobsctl` writes, as the operator logged in. A stream's page, a redrive's progress and
the job page are `stream_pages`, `redrive_pages` and `job_pages`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from redis.exceptions import RedisError

from console.auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    Authenticator,
    NotAuthenticatedError,
    bearer,
    same_origin,
)
from console.redrives import Redrives
from contracts import CONSUMER_GROUPS
from servicekit import RedisClient, StreamKeys, get_logger, redis_check
from servicekit.logs import SecretRedactor
from servicekit.operations import (
    AUDIT_STREAM,
    DeadLetter,
    DeadLetterFilter,
    GroupStatus,
    find_dead_letters,
    group_status,
    inspect_dead_letter,
    pause_group,
    purge,
    record_audit,
    redrive,
    resume_group,
)

router = APIRouter()
log = get_logger("console")
LIST_LIMIT = 200
"""Dead letters shown per stream (the filters narrow it)."""


def declared_pairs() -> list[tuple[str, str]]:
    """Every (stream, group) the platform declares (contracts), sorted."""
    return sorted({(g.stream, g.group) for g in CONSUMER_GROUPS})


def declared_streams() -> list[str]:
    """Every stream some group reads: those can have dead letters."""
    return sorted({stream for stream, _ in declared_pairs()})


def _auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def redis_and_keys(request: Request) -> tuple[RedisClient, StreamKeys]:
    """The console's Redis client and key layout."""
    return request.app.state.redis, request.app.state.keys


def operator(request: Request) -> str:
    """The operator of the session cookie or the bearer token; 401 (the login form) without."""
    auth = _auth(request)
    name = auth.operator_for_session(request.cookies.get(SESSION_COOKIE))
    name = name or auth.operator_for_token(bearer(request.headers.get("authorization")))
    if name is None:
        raise NotAuthenticatedError
    return name


Operator = Annotated[str, Depends(operator)]


@dataclass(frozen=True)
class Posted:
    """A state-changing form, its CSRF proof checked, and who sent it."""

    operator: str
    fields: dict[str, list[str]]

    def one(self, name: str) -> str | None:
        """The field's first non-empty value."""
        value = (self.fields.get(name) or [""])[0].strip()
        return value or None

    def many(self, name: str) -> list[str]:
        """Every non-empty value of a repeated field."""
        return [v.strip() for v in self.fields.get(name, []) if v.strip()]


async def posted(request: Request, who: Operator) -> Posted:
    """The form of a POST from the console's own page: same origin, session cookie, CSRF token."""
    if not same_origin(request.headers.get("origin"), request.headers.get("host")):
        raise HTTPException(403, "cross-site request refused")
    fields = parse_qs((await request.body()).decode(errors="replace"), keep_blank_values=True)
    token = (fields.get("csrf") or [""])[0]
    if not _auth(request).csrf_ok(request.cookies.get(SESSION_COOKIE), token):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return Posted(who, fields)


Form = Annotated[Posted, Depends(posted)]


def render(request: Request, name: str, who: str | None, status_code: int = 200,
           **context: Any) -> HTMLResponse:  # fmt: skip
    """A page, with the operator and (for a session) the CSRF token its forms carry."""
    cookie = request.cookies.get(SESSION_COOKIE)
    csrf = _auth(request).csrf_token(cookie) if cookie and who else None
    return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
        request, name, {"operator": who, "csrf": csrf, **context}, status_code=status_code
    )


def login_page(request: Request, *, status_code: int = 200, error: str | None = None
               ) -> HTMLResponse:  # fmt: skip
    """The login form (also the body of every 401)."""
    response = render(request, "login.html", None, status_code, error=error)
    if status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="console"'
    return response


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    """Liveness for the container's healthcheck (no operator needed, nothing shown): Redis PING."""
    try:
        await redis_check(request.app.state.redis)()
    except (RedisError, OSError):
        return Response("redis unreachable\n", status_code=503, media_type="text/plain")
    return Response("ok\n", media_type="text/plain")


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    """The login form."""
    return login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    """A console token for a session cookie (HttpOnly, SameSite=Strict); 401 for any other."""
    if not same_origin(request.headers.get("origin"), request.headers.get("host")):
        raise HTTPException(403, "cross-site request refused")
    fields = parse_qs((await request.body()).decode(errors="replace"))
    who = _auth(request).operator_for_token((fields.get("token") or [""])[0])
    if who is None:
        log.warning("console.login_refused")
        return login_page(request, status_code=401, error="not a console token")
    log.info("console.logged_in", operator=who)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE, _auth(request).new_session(who), max_age=SESSION_SECONDS, httponly=True,
        samesite="strict", secure=request.app.state.settings.console_cookie_secure, path="/",
    )  # fmt: skip
    return response


@router.post("/logout")
async def logout(form: Form) -> Response:
    """End the session (a POST with its CSRF token, like every change)."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


SORT_KEYS = {
    "stream": lambda s: (s.stream, s.group),
    "group": lambda s: (s.group, s.stream),
    "length": lambda s: s.length,
    "lag": lambda s: -1 if s.lag is None else s.lag,
    "pending": lambda s: s.pending,
    "oldest": lambda s: s.oldest_pending_age_seconds or -1.0,
    "consumers": lambda s: len(s.consumers),
    "dead_letters": lambda s: s.dead_letters,
    "paused": lambda s: s.paused,
}


async def _statuses(request: Request, sort: str, order: str) -> list[GroupStatus]:
    redis, keys = redis_and_keys(request)
    rows = [await group_status(redis, keys, s, g) for s, g in declared_pairs()]
    return sorted(rows, key=SORT_KEYS.get(sort, SORT_KEYS["stream"]), reverse=order == "desc")


@router.get("/", response_class=HTMLResponse)
async def queues(request: Request, who: Operator, sort: str = "stream", order: str = "asc"
                 ) -> HTMLResponse:  # fmt: skip
    """Every declared (stream, group) with its status, sortable by any column."""
    rows = await _statuses(request, sort, order)
    return render(request, "queues.html", who, rows=rows, sort=sort, order=order)


@router.get("/queues/rows", response_class=HTMLResponse)
async def queue_rows(request: Request, who: Operator, sort: str = "stream", order: str = "asc"
                     ) -> HTMLResponse:  # fmt: skip
    """The table body alone, for the page's refresh every few seconds."""
    rows = await _statuses(request, sort, order)
    return render(request, "_rows.html", who, rows=rows)


def require_declared(stream: str | None, group: str | None = None) -> tuple[str, str | None]:
    """``(stream, group)`` if the platform declares them (a group: reading that stream); 404."""
    if stream not in declared_streams():
        raise HTTPException(404, f"unknown stream {stream!r}")
    if group is not None and (stream, group) not in declared_pairs():
        raise HTTPException(404, f"group {group!r} does not read {stream!r}")
    return stream, group


@router.post("/groups/{action}")
async def pause_or_resume(request: Request, action: str, form: Form) -> Response:
    """Pause or resume a declared group (the kill switch), audited as the operator."""
    if action not in ("pause", "resume"):
        raise HTTPException(404, "no such action")
    stream, group = require_declared(form.one("stream"), form.one("group") or "")
    assert group is not None
    redis, keys = redis_and_keys(request)
    await (pause_group if action == "pause" else resume_group)(redis, keys, stream, group)
    await record_audit(redis, keys, operator=form.operator, action=f"group.{action}",
                       stream=stream, count=1, detail={"group": group})  # fmt: skip
    log.info(f"console.group_{action}d", operator=form.operator, stream=stream, group=group)
    return RedirectResponse("/", status_code=303)


_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time (UTC without an offset) or an age before now (``30m``, ``2h``, ``1d``)."""
    if not text:
        return None
    age = _AGE.fullmatch(text.strip())
    if age:
        return datetime.now(UTC) - timedelta(seconds=float(age[1]) * _UNIT[age[2]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"not a time: {text!r} (ISO 8601 or 30m, 2h, 1d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _filter(get: Any, ids: list[str] | None = None) -> DeadLetterFilter:
    return DeadLetterFilter(
        group=get("group"), error_class=get("error_class"), since=parse_time(get("since")),
        until=parse_time(get("until")), ids=frozenset(ids) if ids else None,
    )  # fmt: skip


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters(request: Request, who: Operator) -> HTMLResponse:
    """Dead letters of one stream or all, filtered by group, error class and time window."""
    query = {k: v.strip() for k, v in request.query_params.items() if v.strip()}
    if "stream" in query:
        require_declared(query["stream"])
    where = _filter(query.get)
    redis, keys = redis_and_keys(request)
    found: dict[str, list[DeadLetter]] = {}
    for stream in [query["stream"]] if "stream" in query else declared_streams():
        found[stream] = await find_dead_letters(redis, keys, stream, where, limit=LIST_LIMIT)
    return render(request, "dead_letters.html", who, found=found, query=query,
                  streams=declared_streams(), limit=LIST_LIMIT)  # fmt: skip


def trace_link(tempo_url: str | None, trace_id: str | None) -> str | None:
    """The trace's page: ``TEMPO_URL`` with ``{trace_id}`` filled in, or Tempo's trace API."""
    if not (tempo_url and trace_id):
        return None
    if "{trace_id}" in tempo_url:
        return tempo_url.replace("{trace_id}", trace_id)
    return f"{tempo_url.rstrip('/')}/api/traces/{trace_id}"


def shown(request: Request, value: Any) -> str:
    """``value`` pretty-printed, with secrets masked as in the logs.

    Sensitive keys, URL passwords, bearer tokens and every configured secret: a payload may
    carry one by mistake, and the page must not show it.
    """
    redactor: SecretRedactor = request.app.state.redactor
    if isinstance(value, str):
        return redactor.scrub_text(value)
    scrubbed = redactor(None, "", {"value": value})["value"]
    return json.dumps(scrubbed, indent=2, sort_keys=True, default=str)


def _job_id(letter: DeadLetter) -> str | None:
    """The job a dead letter is a request of (its body's ``job_id``), if it is one."""
    try:
        body = json.loads(letter.body)
    except ValueError:
        return None
    job_id = body.get("job_id") if isinstance(body, dict) else None
    return str(job_id) if job_id else None


def _payload(request: Request, letter: DeadLetter) -> str:
    text = letter.body.decode(errors="replace")
    try:
        return shown(request, json.loads(text))
    except ValueError:
        return shown(request, text)


@router.get("/dead-letters/{stream}/{letter_id}", response_class=HTMLResponse)
async def dead_letter(request: Request, who: Operator, stream: str, letter_id: str
                      ) -> HTMLResponse:  # fmt: skip
    """One dead letter: its error, attempts, trace link, payload and headers."""
    require_declared(stream)
    redis, keys = redis_and_keys(request)
    letter = await inspect_dead_letter(redis, keys, stream, letter_id)
    if letter is None:
        raise HTTPException(404, f"no dead letter {letter_id} on {stream} (redriven or purged?)")
    link = trace_link(request.app.state.settings.tempo_url, letter.meta.get("trace_id"))
    return render(request, "dead_letter.html", who, letter=letter, job_id=_job_id(letter),
                  payload=_payload(request, letter), headers=shown(request, letter.headers),
                  trace_link=link)  # fmt: skip


def _rate(form: Posted) -> float | None:
    text = form.one("per_second")
    try:
        rate = float(text) if text else None
    except ValueError:
        raise HTTPException(400, "rate: letters a second, a number") from None
    if rate is not None and rate < 0.1:
        raise HTTPException(400, "rate: at least 0.1 a second")
    return rate


@router.post("/dead-letters/redrive", response_class=HTMLResponse)
async def redrive_letters(request: Request, form: Form) -> Response:
    """Dry run (the default: what would move), or start the redrive and go to its progress page.

    The real one runs in the background (`console.redrives`): paced at a few a second it can
    take minutes; its page shows how far it is and what it moved, and it is audited when done.
    """
    stream, _ = require_declared(form.one("stream"))
    where, rate = _filter(form.one, form.many("id")), _rate(form)
    redis, keys = redis_and_keys(request)
    if form.one("mode") == "redrive":
        redrives: Redrives = request.app.state.redrives
        run = redrives.start(redis, stream, where, operator=form.operator, per_second=rate)
        return RedirectResponse(f"/redrives/{run.id}", status_code=303)
    result = await redrive(redis, keys, stream, where, operator=form.operator, dry_run=True)
    fields = {k: form.one(k) for k in ("group", "error_class", "since", "until", "per_second")}
    return render(request, "redrive.html", form.operator, result=result, fields=fields)


@router.post("/dead-letters/purge", response_class=HTMLResponse)
async def purge_letters(request: Request, form: Form) -> HTMLResponse:
    """Delete dead letters for good: only with ``confirm=purge``; audited."""
    stream, _ = require_declared(form.one("stream"))
    if form.one("confirm") != "purge":
        raise HTTPException(400, "purge deletes dead letters for good: type purge to confirm")
    redis, keys = redis_and_keys(request)
    removed = await purge(redis, keys, stream, _filter(form.one, form.many("id")),
                          operator=form.operator)  # fmt: skip
    log.info("console.purged", operator=form.operator, stream=stream, removed=removed)
    return render(request, "purged.html", form.operator, stream=stream, removed=removed,
                  audit_stream=AUDIT_STREAM)  # fmt: skip
