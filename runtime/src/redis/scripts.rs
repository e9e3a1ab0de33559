//! The Lua scripts of the Redis broker: each step that must not be split by a crash
//! (pop and record, requeue from the record, restore a dead consumer's messages) runs as
//! one script.

/// Pops up to ARGV[2] messages from KEYS (in order: the first key is drained before the
/// next is touched) and records each as unacknowledged, atomically. ARGV[1] is the fetch
/// time in seconds. Returns a flat list of `key, envelope, flag` triples; the flag is
/// `malformed` for a message whose envelope cannot be read, which is not recorded: no
/// consumer could ever acknowledge it.
pub(super) const FETCH_SCRIPT: &str = r#"
local limit = tonumber(ARGV[2]) or 1
local fetched = {}
local count = 0
for _, key in ipairs(KEYS) do
  while count < limit do
    local message = redis.call('RPOP', key)
    if not message then break end
    count = count + 1
    local ok, envelope = pcall(cjson.decode, message)
    if not ok or type(envelope) ~= 'table' or type(envelope['properties']) ~= 'table'
       or type(envelope['properties']['delivery_tag']) ~= 'string' then
      table.insert(fetched, key); table.insert(fetched, message); table.insert(fetched, 'malformed')
    else
      local properties = envelope['properties']
      local info = properties['delivery_info']
      local exchange, routing_key = '', key
      if type(info) == 'table' then
        exchange = info['exchange'] or ''
        routing_key = info['routing_key'] or key
      end
      local tag = properties['delivery_tag']
      redis.call('ZADD', 'unacked_index', ARGV[1], tag)
      redis.call('HSET', 'unacked', tag,
        '[' .. message .. ', ' .. cjson.encode(exchange) .. ', ' .. cjson.encode(routing_key) .. ']')
      table.insert(fetched, key); table.insert(fetched, message); table.insert(fetched, '')
    end
  end
  if count >= limit then break end
end
return fetched
"#;

/// Requeues an unacked message at the back of its queue (`QoS.reject(requeue=True)` →
/// `restore_by_tag(leftmost=True)`), taking it from its `unacked` record as kombu does, so
/// a consumer need not keep a copy. ARGV: the tag, and the envelope's length: the fetch
/// script wrote the record as `[<envelope>, <exchange>, <routing key>]`, so the envelope
/// is pushed back byte for byte. Returns 0 when the record is gone (restored meanwhile).
pub(super) const REQUEUE_SCRIPT: &str = r#"
local record = redis.call('HGET', 'unacked', ARGV[1])
redis.call('ZREM', 'unacked_index', ARGV[1])
redis.call('HDEL', 'unacked', ARGV[1])
if not record then
  return 0
end
local length = tonumber(ARGV[2]) or 0
local envelope = string.sub(record, 2, length + 1)
if string.sub(record, 1, 1) ~= '[' or string.sub(record, length + 2, length + 2) ~= ',' then
  local ok, parts = pcall(cjson.decode, record)
  if not ok or type(parts) ~= 'table' or type(parts[1]) ~= 'table' then
    return 0
  end
  envelope = cjson.encode(parts[1])
end
redis.call('LPUSH', KEYS[1], envelope)
return 1
"#;

/// Restores messages unacknowledged for longer than the visibility timeout to the head of
/// their queue (`QoS.restore_visible`): under kombu's `unacked_mutex`, with kombu's
/// `redelivered` flags, with RPUSH so they are taken next. ARGV: cutoff time, mutex token,
/// separator. Returns what it restored as `queue, count, oldest score` triples (strings);
/// nothing when another consumer holds the mutex.
pub(super) const RESTORE_SCRIPT: &str = r#"
if not redis.call('SET', 'unacked_mutex', ARGV[2], 'NX', 'PX', 300000) then
  return {}
end
local entries = redis.call('ZRANGEBYSCORE', 'unacked_index', '-inf', ARGV[1], 'WITHSCORES')
local restored = {}
local order = {}
for i = 1, #entries, 2 do
  local tag = entries[i]
  local score = tonumber(entries[i + 1])
  local record = redis.call('HGET', 'unacked', tag)
  redis.call('ZREM', 'unacked_index', tag)
  redis.call('HDEL', 'unacked', tag)
  if record then
    local ok, parts = pcall(cjson.decode, record)
    if ok and type(parts) == 'table' and type(parts[1]) == 'table' then
      local envelope = parts[1]
      local queue = parts[3]
      if type(envelope['headers']) ~= 'table' then envelope['headers'] = {} end
      envelope['headers']['redelivered'] = true
      local properties = envelope['properties']
      if type(properties['delivery_info']) ~= 'table' then properties['delivery_info'] = {} end
      properties['delivery_info']['redelivered'] = true
      local priority = tonumber(properties['priority']) or 0
      local key = queue
      if priority >= 9 then key = queue .. ARGV[3] .. '9'
      elseif priority >= 6 then key = queue .. ARGV[3] .. '6'
      elseif priority >= 3 then key = queue .. ARGV[3] .. '3' end
      redis.call('RPUSH', key, cjson.encode(envelope))
      local name = tostring(queue)
      local seen = restored[name]
      if not seen then
        seen = {0, score}
        restored[name] = seen
        table.insert(order, name)
      end
      seen[1] = seen[1] + 1
      if score < seen[2] then seen[2] = score end
    end
  end
end
if redis.call('GET', 'unacked_mutex') == ARGV[2] then
  redis.call('DEL', 'unacked_mutex')
end
local reply = {}
for _, name in ipairs(order) do
  table.insert(reply, name)
  table.insert(reply, tostring(restored[name][1]))
  table.insert(reply, tostring(restored[name][2]))
end
return reply
"#;
