//! Chords and saved groups on the Redis result backend, kept as Celery 5.7's `RedisBackend`
//! keeps them (`celery/backends/redis.py`), key for key and byte for byte, so Python and
//! Celerity workers can run the header tasks of one chord.
//!
//! A chord of group `<gid>` lives under `celery-taskset-meta-<gid>` with a suffix:
//!
//! | key | holds |
//! |---|---|
//! | `.s` | the header's size, set by the client that applies the chord |
//! | `.t` | how many tasks were added to the header since (`add_to_chord`, an `INCR`) |
//! | `.j` | the parts recorded: a sorted set scored by `group_index`, each member `[1, "<tid>", "<STATE>", <result>]` in Python's JSON |
//! | `.d` | the parts recorded, as `<tid>:<group_index>`, so a part run twice counts once |
//! | `.c` | the claim to send the body (a token, for seconds), then `done` for five minutes |
//!
//! The key without a suffix holds a saved group (`GroupResult.save`).

use std::sync::LazyLock;
use std::time::Duration;

use redis::AsyncCommands;

use super::backend::RedisBackend;
use crate::backend::{ChordJoin, ChordPart, ChordPartResult, group_members, group_meta};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{TaskState, to_python_json};

/// Celery's key prefix for saved groups and chords (`BaseKeyValueStoreBackend.group_keyprefix`).
const GROUP_META_PREFIX: &str = "celery-taskset-meta-";

/// How long the claim taken with the last part lasts: Celery's
/// `max(5, int(result_chord_join_timeout * 2))`, and `result_chord_join_timeout` is 3 s by
/// default (`celery/app/defaults.py`), so 6 s.
const CLAIM_EXPIRES: u64 = 6;

/// How long the `done` marker keeps late copies of header tasks away from a finished
/// chord: Celery's `int(max(claim_expires * 2, 300))`.
const DONE_EXPIRES: u64 = 300;

/// How long the claim is extended for once the parts are read, to cover sending the body.
/// Celery estimates its publish retries (`_chord_publish_claim_expires`: 21 s with its
/// defaults); a Celerity client retries a publish for its broker's retry window (20 s by
/// default), each attempt bounded by 10 s, so a minute covers it.
const PUBLISH_CLAIM_EXPIRES: Duration = Duration::from_secs(60);

/// Celery's `CHORD_PART_RETURN_LUA`, verbatim. KEYS: `.j .t .s .d <group> .c`; ARGV: task
/// id, member, ordered (`1`: a sorted set), score (`group_index`, `+inf` without one),
/// expires, group expires, claim expires, claim token. Returns
/// `{readycount, totaldiff, size, claimed}`, or `{-1, 0, 0, 0}` once the chord is done.
const CHORD_PART_RETURN_LUA: &str = r#"
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tid, value, ordered, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expires, group_expires = tonumber(ARGV[5]), tonumber(ARGV[6])
local claim_expires = tonumber(ARGV[7])
local claim_token = ARGV[8]

-- Prevent late duplicates from recreating chord state after successful cleanup.
local done_marker = redis.call('GET', ckey)
if done_marker == 'done' then
    return {-1, 0, 0, 0}
end

-- Key the check on the task id and header index, so it doesn't merge two
-- header entries that share the task id of a reused frozen signature.
local member = tid .. ':' .. score
if redis.call('SISMEMBER', dkey, member) == 0 then
    if ordered == '1' then
        redis.call('ZADD', jkey, score, value)
    else
        redis.call('RPUSH', jkey, value)
    end
    redis.call('SADD', dkey, member)
end
local readycount
if ordered == '1' then
    readycount = redis.call('ZCOUNT', jkey, '-inf', '+inf')
else
    readycount = redis.call('LLEN', jkey)
end
if expires > 0 then
    for _, key in ipairs({jkey, tkey, skey, dkey}) do
        redis.call('EXPIRE', key, expires)
    end
    if group_expires > 0 then
        redis.call('EXPIRE', gkey, group_expires)
    end
end

local totaldiff = redis.call('GET', tkey)
local size = redis.call('GET', skey)
local claimed = 0
if size and readycount == tonumber(size) + tonumber(totaldiff or 0) then
    if redis.call('SET', ckey, claim_token, 'NX', 'EX', claim_expires) then
        claimed = 1
    end
end

return {readycount, totaldiff, size, claimed}
"#;

/// Celery's `CHORD_CLEANUP_LUA`, verbatim. KEYS: `.c .j .t .s .d`; ARGV: claim token,
/// done expires. Deletes the chord and marks it `done` if the claim is still the caller's;
/// returns 1 then, else 0.
const CHORD_CLEANUP_LUA: &str = r#"
local ckey = KEYS[1]
local jkey = KEYS[2]
local tkey = KEYS[3]
local skey = KEYS[4]
local dkey = KEYS[5]
local token = ARGV[1]
local done_expires = tonumber(ARGV[2])

if redis.call('GET', ckey) == token then
    redis.call('DEL', jkey, tkey, skey, dkey)
    if done_expires and done_expires > 0 then
        redis.call('SET', ckey, 'done', 'EX', done_expires)
    end
    return 1
end
return 0
"#;

/// Celery's `CHORD_CLAIM_EXTEND_LUA`, verbatim. KEYS: `.c .s`; ARGV: claim token, expires.
/// Extends the caller's claim, or takes it again if it expired while the chord remains;
/// returns 1 when the caller holds it.
const CHORD_CLAIM_EXTEND_LUA: &str = r#"
local ckey, skey = KEYS[1], KEYS[2]
local token = ARGV[1]
local expires = tonumber(ARGV[2])
if redis.call('GET', ckey) == token then
    return redis.call('EXPIRE', ckey, expires)
end
if not redis.call('GET', ckey) and redis.call('EXISTS', skey) == 1 then
    return redis.call('SET', ckey, token, 'EX', expires, 'NX') and 1 or 0
end
return 0
"#;

static PART_RETURN: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(CHORD_PART_RETURN_LUA));
static CLEANUP: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CHORD_CLEANUP_LUA));
static CLAIM_EXTEND: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(CHORD_CLAIM_EXTEND_LUA));

/// The key of group `group_id` (`get_key_for_group`), which Celery refuses to make for an
/// empty id.
fn group_key(group_id: &str) -> Result<String> {
    if group_id.is_empty() {
        return Err(Error::new(
            ErrorKind::Encode,
            "a group id must not be empty (Celery's get_key_for_group)",
        ));
    }
    Ok(format!("{GROUP_META_PREFIX}{group_id}"))
}

/// The keys of one chord.
struct ChordKeys {
    group: String,
    join: String,
    total: String,
    size: String,
    dedup: String,
    claim: String,
}

impl ChordKeys {
    fn new(group_id: &str) -> Result<Self> {
        let group = group_key(group_id)?;
        Ok(ChordKeys {
            join: format!("{group}.j"),
            total: format!("{group}.t"),
            size: format!("{group}.s"),
            dedup: format!("{group}.d"),
            claim: format!("{group}.c"),
            group,
        })
    }
}

/// A part's member of `.j`: `[1, "<tid>", "<STATE>", <result>]`, as Python's json writes
/// it (`self.encode([1, tid, state, result])` in `on_chord_part_return`).
fn encode_part(part: &ChordPart<'_>) -> Result<Vec<u8>> {
    to_python_json(&(1, part.task_id, part.state.as_str(), part.result))
        .map_err(|e| Error::new(ErrorKind::Encode, "could not encode a chord part").with_source(e))
}

/// A member of `.j` read back (`_, tid, state, retval = decode(tup)` in
/// `_unpack_chord_result`).
fn decode_part(member: &[u8]) -> Option<ChordPartResult> {
    let (_, task_id, state, result): (serde_json::Value, String, String, serde_json::Value) =
        serde_json::from_slice(member).ok()?;
    Some(ChordPartResult {
        task_id,
        state: TaskState::parse(&state),
        result,
    })
}

impl RedisBackend {
    /// Celery's `set_chord_size`: drops the `.c` claim or `done` marker a previous run of
    /// a reapplied chord left, then `SET <group>.s <size> EX <result_expires>`.
    pub(crate) async fn record_chord_size(&self, group_id: &str, size: usize) -> Result<()> {
        let keys = ChordKeys::new(group_id)?;
        let expires = self.result_expires.as_secs();
        self.connection
            .run_replicated("set a chord's size", |mut c| {
                let keys = &keys;
                async move {
                    let _: i64 = c.del(&keys.claim).await?;
                    c.set_ex::<_, _, ()>(&keys.size, size, expires).await
                }
            })
            .await
    }

    /// Celery's `RedisBackend.on_chord_part_return`, up to sending the body: records the
    /// part with `CHORD_PART_RETURN_LUA`; when it was the last one and this call took the
    /// claim, reads every part (`ZRANGE <group>.j 0 -1`) and extends the claim to cover
    /// sending the body (`CHORD_CLAIM_EXTEND_LUA`).
    ///
    /// As in Celery, a chord with a FAILURE or REVOKED part is returned complete without
    /// extending the claim (Celery's `ChordError` is raised before it), and a part that
    /// cannot be read fails the join: the size is dropped, as Celery's `Join error` path
    /// does, and the error is returned.
    pub(crate) async fn record_chord_part(&self, part: &ChordPart<'_>) -> Result<ChordJoin> {
        if part.group_id.is_empty() || part.task_id.is_empty() {
            // Celery: `if not gid or not tid: return`.
            return Ok(ChordJoin::Waiting);
        }
        let keys = ChordKeys::new(part.group_id)?;
        let member = encode_part(part)?;
        let score = part
            .group_index
            .map_or_else(|| "+inf".to_owned(), |index| index.to_string());
        // `chord_expires or 0` and `_chord_result_expires` (the larger of `chord_expires`
        // and `result_expires`); both are `result_expires` here.
        let expires = self.result_expires.as_secs();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let (ready, total_diff, size, claimed): (i64, Option<String>, Option<String>, i64) = self
            .connection
            .run_replicated_within("record a chord part", self.result_retry_window, |mut c| {
                let mut invocation = PART_RETURN.prepare_invoke();
                invocation
                    .key(&keys.join)
                    .key(&keys.total)
                    .key(&keys.size)
                    .key(&keys.dedup)
                    .key(&keys.group)
                    .key(&keys.claim)
                    .arg(part.task_id)
                    .arg(&member)
                    .arg(1)
                    .arg(&score)
                    .arg(expires)
                    .arg(expires)
                    .arg(CLAIM_EXPIRES)
                    .arg(&token);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        if ready == -1 {
            return Ok(ChordJoin::Waiting);
        }
        // Celery: `if chord_size_bytes:` … `if readycount == total and claimed:`.
        let Some(size) = size.filter(|s| !s.is_empty()) else {
            return Ok(ChordJoin::Waiting);
        };
        let count = |text: Option<&str>| text.and_then(|t| t.trim().parse::<i64>().ok());
        let total = count(Some(&size)).unwrap_or(0) + count(total_diff.as_deref()).unwrap_or(0);
        if ready != total || (claimed == 0 && !self.holds_claim(&keys, &token).await?) {
            return Ok(ChordJoin::Waiting);
        }

        let members: Vec<Vec<u8>> = self
            .connection
            .run("read a chord's parts", |mut c| {
                let keys = &keys;
                async move { c.zrange(&keys.join, 0, -1).await }
            })
            .await?;
        let Some(parts) = members
            .iter()
            .map(|m| decode_part(m))
            .collect::<Option<Vec<_>>>()
        else {
            self.drop_chord_size(&keys).await?;
            return Err(Error::new(
                ErrorKind::Decode,
                format!(
                    "chord {}: a recorded part is not Celery's [1, id, state, result] JSON \
                     (join error); the chord is failed",
                    part.group_id
                ),
            ));
        };
        if parts.iter().any(|p| p.state.propagates()) {
            return Ok(ChordJoin::Complete {
                claim: token,
                parts,
            });
        }

        let extended: i64 = self
            .connection
            .run_replicated("extend a chord's claim", |mut c| {
                let mut invocation = CLAIM_EXTEND.prepare_invoke();
                invocation
                    .key(&keys.claim)
                    .key(&keys.size)
                    .arg(&token)
                    .arg(PUBLISH_CLAIM_EXPIRES.as_secs());
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        if extended == 0 {
            tracing::warn!(
                group = part.group_id,
                "chord callback not published: the dispatch claim is no longer owned by this worker"
            );
            return Ok(ChordJoin::Waiting);
        }
        Ok(ChordJoin::Complete {
            claim: token,
            parts,
        })
    }

    /// Whether the chord's claim is `token`: the script took it on an attempt whose reply
    /// was lost, and the retry found it taken (by this very call).
    async fn holds_claim(&self, keys: &ChordKeys, token: &str) -> Result<bool> {
        let claim: Option<String> = self
            .connection
            .run("read a chord's claim", |mut c| async move {
                c.get(&keys.claim).await
            })
            .await?;
        Ok(claim.as_deref() == Some(token))
    }

    /// The end of Celery's `on_chord_part_return`: after the body was sent,
    /// `CHORD_CLEANUP_LUA` deletes the chord and marks it `done` (a warning when the claim
    /// was lost, leaving the chord to expire); after a failed chord, only `DEL <group>.s`,
    /// so a late copy of a header task does not fail it again (Celery's `except ChordError`).
    pub(crate) async fn finish_chord(
        &self,
        group_id: &str,
        claim: &str,
        failed: bool,
    ) -> Result<()> {
        let keys = ChordKeys::new(group_id)?;
        if failed {
            return self.drop_chord_size(&keys).await;
        }
        let cleaned: i64 = self
            .connection
            .run_replicated("clean up a chord", |mut c| {
                let mut invocation = CLEANUP.prepare_invoke();
                invocation
                    .key(&keys.claim)
                    .key(&keys.join)
                    .key(&keys.total)
                    .key(&keys.size)
                    .key(&keys.dedup)
                    .arg(claim)
                    .arg(DONE_EXPIRES);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        if cleaned == 0 {
            tracing::warn!(
                group = group_id,
                "chord callback claim was lost before cleanup; chord data was left for expiry"
            );
        }
        Ok(())
    }

    async fn drop_chord_size(&self, keys: &ChordKeys) -> Result<()> {
        self.connection
            .run_replicated("drop a chord's size", |mut c| async move {
                c.del::<_, ()>(&keys.size).await
            })
            .await
    }

    /// Celery's `_save_group`: `SETEX celery-taskset-meta-<gid> <result_expires> <json>`
    /// and `PUBLISH` on the key, as every `set` of its Redis backend does.
    pub(crate) async fn write_group(&self, group_id: &str, task_ids: &[String]) -> Result<()> {
        let key = group_key(group_id)?;
        let payload = to_python_json(&group_meta(group_id, task_ids)).map_err(|e| {
            Error::new(ErrorKind::Encode, "could not encode a group").with_source(e)
        })?;
        let mut pipeline = redis::pipe();
        pipeline
            .set_ex(&key, &payload, self.result_expires.as_secs())
            .ignore()
            .publish(&key, &payload)
            .ignore();
        self.connection
            .run_replicated("save a group", |mut c| {
                let pipeline = &pipeline;
                async move { pipeline.query_async::<()>(&mut c).await }
            })
            .await
    }

    /// Celery's `_restore_group`: the task ids of the group saved under
    /// `celery-taskset-meta-<gid>`.
    pub(crate) async fn read_group(&self, group_id: &str) -> Result<Option<Vec<String>>> {
        let key = group_key(group_id)?;
        let raw: Option<Vec<u8>> = self
            .connection
            .run("read a group", |mut c| {
                let key = &key;
                async move { c.get(key).await }
            })
            .await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let undecodable = || {
            Error::new(
                ErrorKind::Decode,
                format!("the saved group {group_id} is not a group of tasks as Celery saves one"),
            )
        };
        let meta: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| undecodable().with_source(e))?;
        group_members(&meta).map(Some).ok_or_else(undecodable)
    }

    /// Celery's `_delete_group`: `DEL celery-taskset-meta-<gid>`.
    pub(crate) async fn remove_group(&self, group_id: &str) -> Result<()> {
        let key = group_key(group_id)?;
        self.connection
            .run("delete a group", |mut c| {
                let key = &key;
                async move { c.del::<_, ()>(key).await }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{decode_part, encode_part};
    use crate::TaskState;
    use crate::backend::ChordPart;

    #[test]
    fn a_part_is_written_as_python_writes_it_and_read_back() {
        let result = json!({"name": "Zoë", "n": [1, 2]});
        let part = ChordPart {
            group_id: "g",
            task_id: "t1",
            group_index: Some(0),
            state: TaskState::Success,
            result: &result,
        };
        let member = encode_part(&part).unwrap();
        assert_eq!(
            String::from_utf8(member.clone()).unwrap(),
            r#"[1, "t1", "SUCCESS", {"name": "Zo\u00eb", "n": [1, 2]}]"#
        );
        let read = decode_part(&member).unwrap();
        assert_eq!(
            (read.task_id.as_str(), read.state, read.result),
            ("t1", TaskState::Success, result)
        );
        assert!(decode_part(b"[1, \"t1\"]").is_none());
    }
}
