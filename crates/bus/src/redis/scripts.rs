//! The Lua scripts that make multi-key operations atomic in Redis.
//!
//! Each script touches only keys of one herald channel, so in Cluster mode
//! they all hash to the channel's slot (see `keys.rs`).

use std::sync::LazyLock;

use redis::Script;

/// The third member of PUBLISH's reply when the record was sealed for
/// another position.
pub(crate) const PUBLISH_CONFLICT: u8 = 2;

/// The epoch of a stream that does not exist yet, as a Lua function both
/// PUBLISH (which creates streams) and HISTORY (which answers for missing
/// ones without creating them) define. A read stores nothing, so the epoch
/// it answers must be the one the first publish will give the stream; and a
/// stream that existed and was lost must come back with another epoch, or
/// a client holding a position in the old one would recover into the new
/// one and miss publications without being told. Hence a hash of:
///
/// - the meta key (prefix and channel);
/// - the Redis server's `run_id`, new at every start: a server restarted
///   empty, or a replica promoted without the last writes, gives new epochs;
///   behind Sentinel the master's lineage instead (`run_id` and
///   `master_replid`, the last argument of PUBLISH and HISTORY), which also
///   changes when a server is promoted again without a restart; in Redis
///   Cluster ([`CLUSTER_LINEAGE`]) `run_id` and `master_replid` read here,
///   for the same reason;
/// - the `meta_ttl` period of the server clock: a meta expires `meta_ttl`
///   after its last touch, which followed its creation, so the stream that
///   follows is made in a later period.
///
/// Twelve hex digits of SHA-1. `INFO` and `TIME` are read only on this
/// path (a stream that does not exist), about 6 µs.
const FRESH_EPOCH: &str = r#"
local function fresh_epoch(meta_key, meta_ttl, lineage)
  local run_id = lineage
  if run_id == '' or run_id == '@myid' then
    run_id = string.match(redis.call('info', 'server'), 'run_id:(%x+)') or ''
    if lineage == '@myid' then
      run_id = run_id .. ':' .. (string.match(redis.call('info', 'replication'), 'master_replid:(%x+)') or '')
    end
  end
  local period = 0
  local ttl = tonumber(meta_ttl)
  if ttl > 0 then
    period = math.floor(tonumber(redis.call('time')[1]) / ttl)
  end
  return string.sub(redis.sha1hex(run_id .. ':' .. period .. ':' .. meta_key), 1, 12)
end
local function lineage_of(arg)
  if arg == '@myid' then
    return redis.call('cluster', 'myid')
  end
  return arg
end
"#;

/// The lineage argument of PUBLISH and HISTORY in Redis Cluster mode: the
/// script reads the lineage itself, as the id of the cluster node it runs on
/// (`CLUSTER MYID`). The node cannot pass it: the cluster client routes the
/// script by slot, and only the server that runs it knows who it is. A
/// failover (manual or not) moves the slot to another node id, so a stream
/// last written on the old master starts a new epoch on the new one, as
/// behind Sentinel: the promoted replica may lack acknowledged writes. A
/// restart keeps the id (nodes.conf), and so the epoch, as a standalone
/// server does.
pub(crate) const CLUSTER_LINEAGE: &str = "@myid";

/// Publish, with or without history, optionally idempotent.
///
/// KEYS: 1 stream, 2 stream meta, 3 idempotency result (the meta key when
/// unused), 4 pub/sub channel.
/// ARGV: 1 publication JSON, 2 history size (0 = no history), 3 history TTL
/// seconds (0 = none), 4 meta TTL seconds (0 = none), 5 `publish` or
/// `spublish`, 6 idempotency TTL seconds (0 = not idempotent), 7 the
/// signature prefix of the pub/sub message (empty when signing is off;
/// integrity.rs), 8 the sealed record to store instead of ARGV[1] (empty when
/// history is stored in clear; seal.rs), 9 and 10 the epoch and offset it was
/// sealed for, 11 the master's lineage behind Sentinel, [`CLUSTER_LINEAGE`]
/// in Redis Cluster (the node id read by the script), empty otherwise. A
/// new stream takes the epoch of [`FRESH_EPOCH`]; so does a stream whose meta
/// holds another lineage (field `w`) than ARGV[11]: it was last written on
/// another master, which may have had writes this one lacks, so its offsets
/// start again at 1 in a new epoch and never name two publications.
///
/// Returns `{offset, epoch, 0}`; `{offset, epoch, 1}` when an earlier publish
/// with the same idempotency key answered and nothing was published;
/// `{top, epoch, 2}` ([`PUBLISH_CONFLICT`]) when the sealed record was made
/// for another position than the next one: seal again for `top + 1`.
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FRESH_EPOCH}{}",
        r#"
local remember = ARGV[6] ~= '0'
if remember then
  local seen = redis.call('hmget', KEYS[3], 'e', 's')
  if seen[1] then
    return {tonumber(seen[2]), seen[1], 1}
  end
end
local offset = 0
local epoch = ''
local stored = ARGV[1]
if ARGV[2] ~= '0' then
  local lineage = lineage_of(ARGV[11])
  local meta = redis.call('hmget', KEYS[2], 'e', 'w')
  epoch = meta[1]
  local fresh = not epoch or (lineage ~= '' and meta[2] ~= lineage)
  if fresh then
    epoch = fresh_epoch(KEYS[2], ARGV[4], ARGV[11])
  end
  if ARGV[8] ~= '' then
    -- A sealed record is bound to the position it was sealed for.
    local top = tonumber(redis.call('hget', KEYS[2], 's') or '0')
    if fresh then
      top = 0
    end
    if ARGV[9] ~= epoch or tonumber(ARGV[10]) ~= top + 1 then
      return {top, epoch, 2}
    end
    stored = ARGV[8]
  end
  if fresh then
    redis.call('hset', KEYS[2], 'e', epoch, 's', 0)
    if lineage ~= '' then
      redis.call('hset', KEYS[2], 'w', lineage)
    end
  end
  offset = redis.call('hincrby', KEYS[2], 's', 1)
  if ARGV[4] ~= '0' then
    redis.call('expire', KEYS[2], ARGV[4])
  end
  if offset == 1 then
    -- A new stream: whatever an expired meta left behind is stale.
    redis.call('del', KEYS[1])
  end
  redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], offset .. '-0', 'd', stored)
  if ARGV[3] ~= '0' then
    redis.call('expire', KEYS[1], ARGV[3])
  end
end
redis.call(ARGV[5], KEYS[4], ARGV[7] .. 'p1:' .. offset .. ':' .. epoch .. ':' .. ARGV[1])
if remember then
  redis.call('hset', KEYS[3], 'e', epoch, 's', offset)
  redis.call('expire', KEYS[3], ARGV[6])
end
return {offset, epoch, 0}
"#
    ))
});

/// Reads history. A stream without a meta stays without one: the read
/// answers offset 0 of [`FRESH_EPOCH`] and writes nothing; an existing
/// meta's TTL is refreshed. A meta of another lineage than ARGV[6] is read
/// as no meta: the next publish starts the stream again (see PUBLISH).
///
/// KEYS: 1 stream, 2 stream meta.
/// ARGV: 1 `1` when a `since` offset is given, 2 that offset, 3 limit (-1 = no
/// limit), 4 `1` = newest first, 5 meta TTL seconds (0 = none), 6 the
/// master's lineage behind Sentinel, [`CLUSTER_LINEAGE`] in Redis Cluster,
/// empty otherwise.
///
/// Returns `{top offset, epoch, entries}` with entries as XRANGE gives them.
pub(crate) static HISTORY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FRESH_EPOCH}{}",
        r#"
local lineage = lineage_of(ARGV[6])
local meta = redis.call('hmget', KEYS[2], 'e', 'w')
local epoch = meta[1]
if not epoch or (lineage ~= '' and meta[2] ~= lineage) then
  return {0, fresh_epoch(KEYS[2], ARGV[5], ARGV[6]), {}}
end
if ARGV[5] ~= '0' then
  redis.call('expire', KEYS[2], ARGV[5])
end
local top = tonumber(redis.call('hget', KEYS[2], 's') or '0')
local limit = tonumber(ARGV[3])
if limit == 0 then
  return {top, epoch, {}}
end
local entries
if ARGV[4] == '1' then
  local last = '+'
  if ARGV[1] == '1' then last = '(' .. ARGV[2] .. '-0' end
  if limit > 0 then
    entries = redis.call('xrevrange', KEYS[1], last, '-', 'COUNT', limit)
  else
    entries = redis.call('xrevrange', KEYS[1], last, '-')
  end
else
  local first = '-'
  if ARGV[1] == '1' then first = '(' .. ARGV[2] .. '-0' end
  if limit > 0 then
    entries = redis.call('xrange', KEYS[1], first, '+', 'COUNT', limit)
  else
    entries = redis.call('xrange', KEYS[1], first, '+')
  end
end
return {top, epoch, entries}
"#
    ))
});

/// Adds or refreshes a client's presence.
///
/// KEYS: 1 presence data hash, 2 presence expiry sorted set.
/// ARGV: 1 client id, 2 ClientInfo JSON, 3 expiry (unix seconds), 4 key TTL seconds.
pub(crate) static PRESENCE_ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('zadd', KEYS[2], ARGV[3], ARGV[1])
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
-- Only ever extend the keys' lifetime: a short-lived entry must not take
-- longer-lived ones of other nodes with it.
local ttl = tonumber(ARGV[4])
for i = 1, 2 do
  if redis.call('ttl', KEYS[i]) < ttl then
    redis.call('expire', KEYS[i], ttl)
  end
end
return 1
"#,
    )
});

/// Removes a client's presence.
///
/// KEYS: 1 presence data hash, 2 presence expiry sorted set. ARGV: 1 client id.
pub(crate) static PRESENCE_REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('zrem', KEYS[2], ARGV[1])
return 1
"#,
    )
});

/// Drops expired entries, then returns the presence hash (HGETALL form).
///
/// KEYS: 1 presence data hash, 2 presence expiry sorted set.
/// ARGV: 1 now (unix seconds).
pub(crate) static PRESENCE_GET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', ARGV[1])
for i = 1, #expired do
  redis.call('hdel', KEYS[1], expired[i])
end
if #expired > 0 then
  redis.call('zremrangebyscore', KEYS[2], '-inf', ARGV[1])
end
return redis.call('hgetall', KEYS[1])
"#,
    )
});

/// Raises a user's "issued before" mark, never lowers it.
///
/// KEYS: 1 the user's revocation key. ARGV: 1 issued before (unix seconds),
/// 2 keep until (unix seconds).
pub(crate) static INVALIDATE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = tonumber(redis.call('get', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  current = tonumber(ARGV[1])
end
redis.call('set', KEYS[1], current, 'EXAT', ARGV[2])
return current
"#,
    )
});
