//! The Lua scripts of fleet mode. Each runs atomically in Redis and takes the time from Redis
//! `TIME` (Redis 7 replicates script effects, so a replica applies the same values).
//! Counts are HASHes of `node id → count`; a node counts only while its heartbeat deadline in
//! the nodes ZSET lies ahead (fields of dead nodes are removed as they are met).

use std::sync::LazyLock;

use redis::Script;

/// One handshake: the GCRA handshake rate of the IP key, the token's revocation markers, the
/// global, per-IP and per-subject caps, and the count, in one round trip.
///
/// KEYS: nodes, conns_all, conns_ip, conns_sub, handshakes(ip), revoked_jti, revoked_sub.
/// ARGV: node, node ttl ms, max all, max per ip, max per subject, GCRA interval µs (0 = no
/// rate), GCRA burst, has jti (0/1), iat (-1 = none), leak-guard ttl ms.
/// Returns `{verdict, retry_after_ms, absent}`; verdict is `ok`, `rate`, `revoked`,
/// `overloaded`, `ip` or `subject`; `retry_after_ms` is that of `rate`; `absent` is 1 when
/// this node was not a live member (the others dropped its counts: it must reconcile now).
/// A subject marker that is not a number revokes (never an open door).
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_LUA));

const ACQUIRE_LUA: &str = r"
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local node = ARGV[1]
local interval = tonumber(ARGV[6])
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[5]) or now_us)
  if tat < now_us then tat = now_us end
  local new_tat = tat + interval
  local allowed = tonumber(ARGV[7]) * interval
  if new_tat - now_us > allowed then
    return {'rate', math.ceil((new_tat - now_us - allowed) / 1000), 0}
  end
  redis.call('SET', KEYS[5], string.format('%d', new_tat), 'PX', math.max(1, math.ceil((new_tat - now_us) / 1000)))
end
if ARGV[8] == '1' and redis.call('EXISTS', KEYS[6]) == 1 then
  return {'revoked', 0, 0}
end
local before = redis.call('GET', KEYS[7])
if before then
  local iat = tonumber(ARGV[9])
  local b = tonumber(before)
  if b == nil or iat < 0 or iat <= b then
    return {'revoked', 0, 0}
  end
end
local mine = redis.call('ZSCORE', KEYS[1], node)
local absent = 0
if not mine or tonumber(mine) < now then absent = 1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), node)
local alive = {}
local function live(n)
  if alive[n] == nil then
    local d = redis.call('ZSCORE', KEYS[1], n)
    alive[n] = (d ~= false and d ~= nil and tonumber(d) >= now)
  end
  return alive[n]
end
local function total(key)
  local all = redis.call('HGETALL', key)
  local sum = 0
  for i = 1, #all, 2 do
    if live(all[i]) then
      sum = sum + tonumber(all[i + 1])
    else
      redis.call('HDEL', key, all[i])
    end
  end
  return sum
end
local caps = {{KEYS[2], tonumber(ARGV[3]), 'overloaded'}, {KEYS[3], tonumber(ARGV[4]), 'ip'}, {KEYS[4], tonumber(ARGV[5]), 'subject'}}
for _, c in ipairs(caps) do
  if c[2] > 0 and total(c[1]) >= c[2] then
    return {c[3], 0, absent}
  end
end
for _, c in ipairs(caps) do
  redis.call('HINCRBY', c[1], node, 1)
  redis.call('PEXPIRE', c[1], tonumber(ARGV[10]))
end
return {'ok', 0, absent}
";

/// Give one slot back. KEYS: conns_all, conns_ip, conns_sub. ARGV: node.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

const RELEASE_LUA: &str = r"
for i = 1, #KEYS do
  local n = redis.call('HINCRBY', KEYS[i], ARGV[1], -1)
  if n <= 0 then
    redis.call('HDEL', KEYS[i], ARGV[1])
  end
end
return 1
";

/// The heartbeat: this node's deadline, dead nodes removed. KEYS: nodes. ARGV: node, ttl ms.
/// Returns `{live nodes, 1 when this node was absent (it lapsed or Redis lost its data)}`.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| Script::new(HEARTBEAT_LUA));

const HEARTBEAT_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {redis.call('ZCARD', KEYS[1]), added}
";

/// A revocation: the marker (kept until the revoked tokens expire; a subject's keeps the
/// latest revocation time and expiry, and the revocation time is at least Redis's clock), then
/// the entry on the stream (which every node, this one too, applies).
///
/// KEYS: marker, revocation_log. ARGV: kind (`jti`/`sub`), value (jti or subject), before
/// (unix s), until (unix ms), origin node, stream max length.
/// Returns the stream entry id.
pub static REVOKE: LazyLock<Script> = LazyLock::new(|| Script::new(REVOKE_LUA));

const REVOKE_LUA: &str = r"
local until_ms = tonumber(ARGV[4])
local kept = redis.call('PEXPIRETIME', KEYS[1])
if kept > until_ms then until_ms = kept end
local before = tonumber(ARGV[3])
if ARGV[1] == 'sub' then
  -- Revoked before the later of the node's clock and Redis's: a node whose clock is behind
  -- does not leave tokens issued meanwhile in force.
  local t = redis.call('TIME')
  if tonumber(t[1]) > before then before = tonumber(t[1]) end
  local old = redis.call('GET', KEYS[1])
  if old and tonumber(old) and tonumber(old) > before then before = tonumber(old) end
  redis.call('SET', KEYS[1], string.format('%d', before), 'PXAT', string.format('%d', until_ms))
else
  redis.call('SET', KEYS[1], '1', 'PXAT', string.format('%d', until_ms))
end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'k', ARGV[1], 'v', ARGV[2], 'b', string.format('%d', before), 'u', string.format('%d', math.floor(until_ms / 1000)), 'n', ARGV[5])
";

/// Put a marker back without a stream entry (after Redis lost its data, from a node's cache).
/// KEYS: marker. ARGV: kind, before (unix s), until (unix ms). Keeps a later marker already there.
pub static RESTORE: LazyLock<Script> = LazyLock::new(|| Script::new(RESTORE_LUA));

const RESTORE_LUA: &str = r"
local until_ms = tonumber(ARGV[3])
local t = redis.call('TIME')
if until_ms <= tonumber(t[1]) * 1000 then return 0 end
local kept = redis.call('PEXPIRETIME', KEYS[1])
if kept > until_ms then until_ms = kept end
local v = '1'
if ARGV[1] == 'sub' then
  local before = tonumber(ARGV[2])
  local old = redis.call('GET', KEYS[1])
  if old and tonumber(old) and tonumber(old) > before then before = tonumber(old) end
  v = string.format('%d', before)
end
redis.call('SET', KEYS[1], v, 'PXAT', string.format('%d', until_ms))
return 1
";

/// Issue one ticket: the subject's outstanding tickets against the cap, then its issue rate
/// (GCRA: `burst` at once, one more per `interval`), then `SET NX` of the record with the TTL
/// (plus the grace in which a late or repeated presentation is still told apart; the ticket's
/// own expiry travels in the value and is judged on Redis time at redeem). A refusal changes
/// nothing.
///
/// KEYS: ticket, outstanding(sub), issues(sub). ARGV: record (JSON), ttl ms, grace ms, max
/// outstanding, GCRA interval µs, burst, ticket hash (the outstanding set's member).
/// The stored value is `<expiry ms>\n<outstanding key>\n<record>`.
/// Returns `{verdict, n}`: `ok` (n = expiry ms), `outstanding`, `rate` (n = retry-after ms),
/// `exists`.
pub static TICKET_ISSUE: LazyLock<Script> = LazyLock::new(|| Script::new(TICKET_ISSUE_LUA));

const TICKET_ISSUE_LUA: &str = r"
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local ttl = tonumber(ARGV[2])
local grace = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return {'outstanding', 0}
end
local interval = tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', KEYS[3]) or now_us)
if tat < now_us then tat = now_us end
local new_tat = tat + interval
local allowed = tonumber(ARGV[6]) * interval
if new_tat - now_us > allowed then
  return {'rate', math.ceil((new_tat - now_us - allowed) / 1000)}
end
local exp = now + ttl
local value = string.format('%d', exp) .. '\n' .. KEYS[2] .. '\n' .. ARGV[1]
if not redis.call('SET', KEYS[1], value, 'NX', 'PX', ttl + grace) then
  return {'exists', 0}
end
redis.call('SET', KEYS[3], string.format('%d', new_tat), 'PX', math.max(1, math.ceil((new_tat - now_us) / 1000)))
redis.call('ZADD', KEYS[2], exp, ARGV[7])
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {'ok', exp}
";

/// Redeem one ticket: `GETDEL` of its record (so of concurrent redeems on any nodes exactly
/// one gets it), its hash off the subject's outstanding set (the set's key is in the value),
/// and a marker kept through the grace so a second presentation reads `replayed`.
///
/// KEYS: ticket, used(ticket). ARGV: grace ms, ticket hash.
/// Returns `{verdict, record}`: `ok`, `expired` (the record is gone either way), `replayed`,
/// `unknown`.
pub static TICKET_REDEEM: LazyLock<Script> = LazyLock::new(|| Script::new(TICKET_REDEEM_LUA));

const TICKET_REDEEM_LUA: &str = r"
local v = redis.call('GETDEL', KEYS[1])
if not v then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return {'replayed', ''}
  end
  return {'unknown', ''}
end
local a = string.find(v, '\n', 1, true)
local b = a and string.find(v, '\n', a + 1, true)
if not b then
  return {'unknown', ''}
end
local exp = tonumber(string.sub(v, 1, a - 1)) or 0
redis.call('ZREM', string.sub(v, a + 1, b - 1), ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep = exp - now
if keep < 0 then keep = 0 end
redis.call('SET', KEYS[2], '1', 'PX', keep + tonumber(ARGV[1]))
if now >= exp then
  return {'expired', ''}
end
return {'ok', string.sub(v, b + 1)}
";

/// Every script's source (loaded on each new connection, in one round trip).
pub const ALL: [&str; 7] =
    [ACQUIRE_LUA, RELEASE_LUA, HEARTBEAT_LUA, REVOKE_LUA, RESTORE_LUA, TICKET_ISSUE_LUA, TICKET_REDEEM_LUA];
