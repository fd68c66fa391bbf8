"""The scheduler's one adapter: its state in Redis (no database), changed only by Lua scripts.

Every decision that must hold across replicas is one script, so it is atomic, and each script
reads "now" with ``TIME`` (Redis's clock, not the host's). Keys, with ``T`` the hash tag of the
stream the script publishes to (:meth:`servicekit.StreamKeys.tag`), so each script touches one
slot and the layout holds on Redis Cluster:

| key | what |
|---|---|
| ``T:schedule:<name>:last`` | the latest tick decided (ms): none at or before it is decided again |
| ``T:schedule:<name>:history`` | sorted set by tick (ms): the last HISTORY_SIZE fire records |
| ``T:schedule:<name>:running`` | the fire id of a run not finished yet (overlap skip), with a TTL |
| ``T:delayed`` | sorted set: held delayed jobs by due time (ms), ``T`` the job type's family |
| ``T:delayed:payload`` | hash: job id to ``<priority index>|<encoded entry>`` |
| ``T:delayed:gone`` | sorted set: published or cancelled job ids, scored by when forgotten (ms) |

Every key a script touches is declared in its KEYS (a cluster routes a script by them, and a key
built inside a script is outside what the cluster checked). The "gone" set replaced one marker key
per job (``T:delayed:gone:<job id>``, with a TTL), which the release script had to build from ids
it found; HOLD still reads such a marker, declared, until the last one has expired (40 days).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from contracts import Event, JobType, event_class_for, job_streams
from contracts.streams import QUEUED_JOB_TYPES
from servicekit import StreamKeys
from servicekit.headers import event_headers
from servicekit.redis_client import RedisClient
from servicekit.wire import DATA_FIELD, encode_envelope

HISTORY_SIZE = 1000
"""Fire records kept per schedule (the oldest are dropped)."""
GONE_TTL = timedelta(days=40)
"""How long a published or cancelled delayed job is remembered: past notes-api's 30-day horizon."""

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: last, history, running, command stream.
# ARGV: tick_ms, fire_id, mode (fire|missed|skipped), deadline_ms (0: none), overlap (skip|allow),
#       running_ttl_ms, history_size, late_after_ms, data field, entry data, reason, count.
# The watermark makes each tick decided once, whichever replica gets here first and however late
# (a replica paused past any lease finds its tick already decided). A fire is missed if Redis's
# clock is past its deadline, skipped if the previous run of an overlap=skip schedule is running.
FIRE = (
    _NOW_MS
    + """
local tick = tonumber(ARGV[1])
if tick > now then return {'early', now, ''} end
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tick then return {'duplicate', now, ''} end
redis.call('SET', KEYS[1], ARGV[1])
local outcome, reason, entry = ARGV[3], ARGV[11], ''
if outcome == 'fire' then
  local deadline = tonumber(ARGV[4])
  if deadline > 0 and now > deadline then
    outcome, reason = 'missed', 'past its deadline'
  elseif ARGV[5] == 'skip' and redis.call('EXISTS', KEYS[3]) == 1 then
    outcome, reason = 'skipped', 'previous run not finished'
  else
    entry = redis.call('XADD', KEYS[4], '*', ARGV[9], ARGV[10])
    if ARGV[5] == 'skip' then redis.call('SET', KEYS[3], ARGV[2], 'PX', tonumber(ARGV[6])) end
    if now - tick > tonumber(ARGV[8]) then outcome = 'late' else outcome = 'fired' end
  end
end
local record = cjson.encode({tick_ms = tick, fire_id = ARGV[2], outcome = outcome, at_ms = now,
                             entry_id = entry, reason = reason, count = tonumber(ARGV[12])})
redis.call('ZADD', KEYS[2], tick, record)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7])
if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1) end
return {outcome, now, entry}
"""
)

# KEYS: running. ARGV: fire_id. The run finished: clear it, unless a later run is the one marked.
FINISH_RUN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS: delayed zset, payloads hash, gone set, the job's legacy gone marker.
# ARGV: job_id, due_ms, payload.
HOLD = (
    _NOW_MS
    + """
local forget_at = redis.call('ZSCORE', KEYS[3], ARGV[1])
if (forget_at and tonumber(forget_at) > now) or redis.call('EXISTS', KEYS[4]) == 1 then
  return 0
end
redis.call('ZADD', KEYS[1], 'NX', tonumber(ARGV[2]), ARGV[1])
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3])
return 1
"""
)

# KEYS: delayed zset, payloads hash, gone set. ARGV: job_id, gone_ttl_ms.
CANCEL = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""
)

# KEYS: delayed zset, payloads hash, gone set, critical, default, low stream. ARGV: count,
# gone_ttl_ms, data field. Publishes the due jobs in due-time order, each exactly once: the ZREM
# and the XADD happen together; ids remembered past their time are forgotten here.
# Returns {released, ms until the next held job or -1}.
RELEASE = (
    _NOW_MS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
  local held = redis.call('HGET', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  if held then
    local index = tonumber(string.sub(held, 1, 1))
    redis.call('XADD', KEYS[3 + index], '*', ARGV[3], string.sub(held, 3))
  end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local after = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if after[2] then wait = math.max(0, tonumber(after[2]) - now) end
return {#due, wait}
"""
)


@dataclass(frozen=True, slots=True)
class FireRecord:
    """One decided tick: fired, late, missed or skipped, scheduled vs actual time."""

    schedule: str
    tick_at: datetime
    outcome: str
    at: datetime
    fire_id: str
    entry_id: str
    reason: str
    count: int

    def as_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule, "tick_at": self.tick_at.isoformat(),
            "outcome": self.outcome, "at": self.at.isoformat(), "fire_id": self.fire_id,
            "entry_id": self.entry_id, "reason": self.reason, "count": self.count,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Decision:
    """What the fire script decided: an outcome (or duplicate/early) at Redis's time."""

    outcome: str
    at: datetime
    entry_id: str


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _ms_ceil(moment: datetime) -> int:
    # A due time in whole ms, never before the moment: a job due at .5 ms past is due at the next.
    return math.ceil(moment.timestamp() * 1000)


def _from_ms(ms: int | float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def encode_entry(event: Event) -> bytes:
    """The stream entry data of ``event`` in the platform's format (servicekit.wire)."""
    return encode_envelope(event.model_dump_json().encode(), event_headers(event))


class SchedulerStore:
    """Fire records, run markers and held delayed jobs, for one deployment's ``STREAM_PREFIX``."""

    def __init__(
        self, redis: RedisClient, keys: StreamKeys, *, history_size: int = HISTORY_SIZE
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._history_size = history_size
        self._fire = redis.register_script(FIRE)
        self._finish = redis.register_script(FINISH_RUN)
        self._hold = redis.register_script(HOLD)
        self._cancel = redis.register_script(CANCEL)
        self._release = redis.register_script(RELEASE)

    async def now(self) -> datetime:
        """Redis's clock: every replica's notion of "now"."""
        seconds, micros = await self._redis.time()
        return datetime.fromtimestamp(seconds + micros / 1e6, UTC)

    # ---- schedules -------------------------------------------------------------------------

    def _schedule_key(self, stream: str, name: str, what: str) -> str:
        return f"{self._keys.tag(stream)}:schedule:{name}:{what}"

    async def last_tick(self, stream: str, name: str) -> datetime | None:
        """The latest tick of schedule ``name`` already decided, if any."""
        value = await self._redis.get(self._schedule_key(stream, name, "last"))
        return None if value is None else _from_ms(int(value))

    async def decide(
        self,
        stream: str,
        name: str,
        tick_at: datetime,
        *,
        fire_id: UUID,
        mode: str,
        deadline: datetime | None = None,
        overlap: str = "allow",
        running_ttl: timedelta = timedelta(hours=1),
        late_after: timedelta = timedelta(seconds=5),
        command: Event | None = None,
        reason: str = "",
        count: int = 1,
    ) -> Decision:
        """Decide one tick once across replicas: fire its command, or record it missed/skipped."""
        keys = [
            self._schedule_key(stream, name, "last"),
            self._schedule_key(stream, name, "history"),
            self._schedule_key(stream, name, "running"),
            self._keys.stream(stream),
        ]
        args: list[str | bytes | int] = [
            _ms(tick_at), str(fire_id), mode, 0 if deadline is None else _ms(deadline), overlap,
            int(running_ttl.total_seconds() * 1000), self._history_size,
            int(late_after.total_seconds() * 1000), DATA_FIELD,
            b"" if command is None else encode_entry(command), reason, count,
        ]  # fmt: skip
        outcome, now_ms, entry = await self._fire(keys=keys, args=args)
        return Decision(_text(outcome), _from_ms(int(now_ms)), _text(entry))

    async def finish_run(self, stream: str, name: str, fire_id: UUID) -> bool:
        """Clear schedule ``name``'s running mark if it is ``fire_id``'s; True if it was."""
        key = self._schedule_key(stream, name, "running")
        return bool(await self._finish(keys=[key], args=[str(fire_id)]))

    async def history(self, stream: str, name: str, *, limit: int = 100) -> list[FireRecord]:
        """The latest ``limit`` fire records of schedule ``name``, newest first."""
        key = self._schedule_key(stream, name, "history")
        raw: list[bytes] = await self._redis.zrevrange(key, 0, limit - 1)  # type: ignore[assignment]
        records = []
        for item in raw:
            data = json.loads(item)
            records.append(
                FireRecord(
                    schedule=name, tick_at=_from_ms(data["tick_ms"]), outcome=data["outcome"],
                    at=_from_ms(data["at_ms"]), fire_id=data["fire_id"],
                    entry_id=data.get("entry_id") or "", reason=data.get("reason") or "",
                    count=int(data.get("count") or 1),
                )
            )  # fmt: skip
        return records

    # ---- delayed jobs ------------------------------------------------------------------------

    def _delayed_keys(self, job_type: JobType | str) -> list[str]:
        """The held set, the payloads and the gone set of one job type (its streams' tag)."""
        tag = self._keys.tag(job_streams(job_type)[0])
        return [f"{tag}:delayed", f"{tag}:delayed:payload", f"{tag}:delayed:gone"]

    async def hold(
        self, job_type: JobType | str, job_id: UUID, run_at: datetime, stream: str, data: bytes
    ) -> bool:
        """Hold a job until ``run_at``; False if it was already published or cancelled."""
        index = job_streams(job_type).index(stream) + 1
        payload = f"{index}|".encode() + data
        keys = self._delayed_keys(job_type)
        legacy_gone = f"{keys[0]}:gone:{job_id}"
        args: list[str | int | bytes] = [str(job_id), _ms_ceil(run_at), payload]
        return bool(await self._hold(keys=[*keys, legacy_gone], args=args))

    async def cancel(self, job_type: JobType | str, job_id: UUID) -> bool:
        """Drop a held job; True if it was still held. Remembered, so a later hold is a no-op."""
        keys = self._delayed_keys(job_type)
        ttl = int(GONE_TTL.total_seconds() * 1000)
        return bool(await self._cancel(keys=keys, args=[str(job_id), ttl]))

    async def release_due(
        self, job_type: JobType | str, *, count: int = 100
    ) -> tuple[int, float | None]:
        """Publish up to ``count`` due jobs of one type, in due-time order.

        Returns how many, and the seconds until the next held job is due (None: none held).
        """
        streams = [self._keys.stream(s) for s in job_streams(job_type)]
        ttl = int(GONE_TTL.total_seconds() * 1000)
        released, wait_ms = await self._release(
            keys=[*self._delayed_keys(job_type), *streams], args=[count, ttl, DATA_FIELD]
        )
        return int(released), None if int(wait_ms) < 0 else int(wait_ms) / 1000

    async def held_jobs(self, job_type: JobType | str) -> list[tuple[str, datetime]]:
        """The held jobs of one type, (job id, due time), in due-time order."""
        held = self._delayed_keys(job_type)[0]
        rows: list[tuple[bytes, float]] = await self._redis.zrange(held, 0, -1, withscores=True)  # type: ignore[assignment]
        return [(_text(member), _from_ms(score)) for member, score in rows]


DELAYED_JOB_TYPES: tuple[JobType, ...] = QUEUED_JOB_TYPES
"""Job types whose delayed requests the scheduler holds (every type with streams)."""


def job_entry(payload: dict[str, Any]) -> bytes:
    """Encode a delayed job's request (a job request as JSON) as its stream entry data.

    Raises ValueError for a payload that is not a known event.
    """
    event_type = event_class_for(str(payload.get("type")))
    if event_type is None:
        raise ValueError(f"unknown job request type {payload.get('type')!r}")
    return encode_entry(event_type.model_validate(payload))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
