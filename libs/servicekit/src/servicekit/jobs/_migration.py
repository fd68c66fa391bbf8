"""Moving a deployment's streams from the earlier key layout to :mod:`servicekit.keys`.

The earlier layout (before issue 10) named a stream ``<prefix><name>``, its dead letters
``<prefix><name>.dlq``, and kept one retry set ``{<prefix><name>}:retry``, one attempt history
``{<prefix><name>}:attempts`` and pause flags ``{<prefix><name>}:paused:<group>`` shared by every
group. Workers call :func:`migrate_keys` at start (before creating their groups) and again with
their upkeep, so entries an old producer still writes during a rolling upgrade follow.

Each step is one Lua script, so it is atomic and safe with several replicas starting at once (the
second finds nothing left to move) and idempotent. When the new stream does not exist yet the old
one is renamed: groups, pending entries, consumers, delivery counts and last-delivered ids move as
they are, and a restarted consumer takes its entries back under the same name. When it exists
already (a new producer wrote first), the old entries some group still needs are appended to it,
``for_group``-tagged when not every group needs them, in batches, each batch deleted from the old
stream in the same script; they run as new entries (their remaining backoff and failure count start
over). After a rename, retry times and histories are copied to each group the entry is pending in
(the old keys did not say which group an entry was retrying for).

The script touches old and new keys, which are in different slots: run it on a standalone Redis,
where the earlier layout ran (its weighted read over a job type's three streams crossed slots, so
it never ran on Redis Cluster).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from servicekit.jobs._codec import FOR_GROUP_FIELD
from servicekit.keys import Companion, StreamKeys
from servicekit.redis_client import RedisClient

__all__ = ["LegacyKeys", "migrate_keys"]

_log = structlog.stdlib.get_logger("servicekit.jobs")
_BATCH = 500


@dataclass(frozen=True, slots=True)
class LegacyKeys:
    """The earlier key names, frozen here for the migration only."""

    prefix: str = ""

    def stream(self, name: str) -> str:
        """The stream's key."""
        return f"{self.prefix}{name}"

    def dead_letters(self, name: str) -> str:
        """The dead-letter stream's key."""
        return f"{self.prefix}{name}.dlq"

    def companion(self, name: str, role: Companion) -> str:
        """A companion key shared by every group (the pause flag appends ``:<group>``)."""
        return f"{{{self.prefix}{name}}}:{role.value}"


# KEYS: old stream, old retry, old attempts, old dead letters, new stream, new dead letters.
# ARGV: new retry base, new attempts base, new paused base, old paused base, for_group field,
#       batch size. The bases end with ':'; a group's key is base .. group.
# Returns {how, entries moved}: how is 'none', 'renamed', 'merged' or 'partial' (call again).
MIGRATE_STREAM = """
local function fields_of(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function id_after(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local function pending_in(key, group, id)
  return redis.call('XPENDING', key, group, id, id, 1)[1] ~= nil
end
local function groups_of(key)
  local out = {}
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local info = fields_of(g)
    table.insert(out, {name = info['name'], last = info['last-delivered-id']})
  end
  return out
end
-- Retry times and histories of the old shared keys, to each group the entry is pending in.
local function copy_retries(groups)
  local retries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local histories = fields_of(redis.call('HGETALL', KEYS[3]))
  for _, g in ipairs(groups) do
    for id, history in pairs(histories) do
      if pending_in(KEYS[5], g.name, id) then redis.call('HSET', ARGV[2] .. g.name, id, history) end
    end
    for i = 1, #retries, 2 do
      if pending_in(KEYS[5], g.name, retries[i]) then
        redis.call('ZADD', ARGV[1] .. g.name, retries[i + 1], retries[i])
      end
    end
  end
end
local function move_pauses(groups)
  if ARGV[3] == ARGV[4] then return end  -- an event stream's pause flag kept its name
  for _, g in ipairs(groups) do
    if redis.call('EXISTS', ARGV[4] .. g.name) == 1 then
      redis.call('SET', ARGV[3] .. g.name, '1')
      redis.call('DEL', ARGV[4] .. g.name)
    end
  end
end

local moved = 0
if redis.call('EXISTS', KEYS[4]) == 1 then
  if redis.call('EXISTS', KEYS[6]) == 0 then
    redis.call('RENAME', KEYS[4], KEYS[6])
  else
    for _, e in ipairs(redis.call('XRANGE', KEYS[4], '-', '+')) do
      redis.call('XADD', KEYS[6], '*', unpack(e[2]))
    end
    redis.call('DEL', KEYS[4])
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  return {'none', 0}
end
local old_groups = groups_of(KEYS[1])
if redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('RENAME', KEYS[1], KEYS[5])
  copy_retries(old_groups)
  move_pauses(old_groups)
  redis.call('DEL', KEYS[2], KEYS[3])
  return {'renamed', redis.call('XLEN', KEYS[5])}
end

-- Merge: the new stream exists. Every old group must exist there, from its start.
for _, g in ipairs(old_groups) do
  pcall(redis.call, 'XGROUP', 'CREATE', KEYS[5], g.name, '0')
end
local new_groups = {}
for _, g in ipairs(groups_of(KEYS[5])) do new_groups[g.name] = true end
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[6]))
for _, e in ipairs(entries) do
  local id, fields = e[1], e[2]
  local needing = {}
  local all = true
  if #old_groups == 0 then
    all = true
  else
    for _, g in ipairs(old_groups) do
      if id_after(id, g.last) or pending_in(KEYS[1], g.name, id) then
        table.insert(needing, g.name)
      end
    end
    local needed = {}
    for _, name in ipairs(needing) do needed[name] = true end
    for name, _ in pairs(new_groups) do
      if not needed[name] then all = false end
    end
  end
  if #old_groups == 0 or (all and #needing > 0) then
    redis.call('XADD', KEYS[5], '*', unpack(fields))
    moved = moved + 1
  else
    for _, name in ipairs(needing) do
      local tagged = {unpack(fields)}
      table.insert(tagged, ARGV[5])
      table.insert(tagged, name)
      redis.call('XADD', KEYS[5], '*', unpack(tagged))
      moved = moved + 1
    end
  end
  redis.call('XDEL', KEYS[1], id)
end
if redis.call('XLEN', KEYS[1]) > 0 then
  return {'partial', moved}
end
move_pauses(old_groups)
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {'merged', moved}
"""


async def migrate_keys(
    redis: RedisClient, keys: StreamKeys, streams: Iterable[str]
) -> dict[str, str]:
    """Move ``streams`` (contracts names) from the earlier layout; return what happened to each.

    Streams with nothing under the old names are left out of the result. Safe to call from every
    replica at every start: a stream is moved once.
    """
    legacy = LegacyKeys(keys.prefix)
    names = list(streams)
    # One round trip of single-key commands decides; the script (which crosses slots) only runs
    # where something is left under the old names, never on an upgraded or clustered deployment.
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(legacy.stream(name))
            pipe.exists(legacy.dead_letters(name))
        found = await pipe.execute()
    left = [n for i, n in enumerate(names) if found[2 * i] or found[2 * i + 1]]
    script = redis.register_script(MIGRATE_STREAM)
    done: dict[str, str] = {}
    for name in left:
        while True:
            how, moved = await script(
                keys=[
                    legacy.stream(name),
                    legacy.companion(name, Companion.RETRY),
                    legacy.companion(name, Companion.ATTEMPTS),
                    legacy.dead_letters(name),
                    keys.stream(name),
                    keys.dead_letters(name),
                ],
                args=[
                    keys.companion_base(name, Companion.RETRY),
                    keys.companion_base(name, Companion.ATTEMPTS),
                    keys.companion_base(name, Companion.PAUSED),
                    legacy.companion(name, Companion.PAUSED) + ":",
                    FOR_GROUP_FIELD,
                    _BATCH,
                ],
            )
            how = how.decode() if isinstance(how, bytes) else str(how)
            if how != "partial":
                break
        if how != "none":
            done[name] = how
            _log.info("jobs.keys_migrated", stream=name, how=how, entries=int(moved))
    return done
