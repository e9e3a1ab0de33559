//! The embedded in-process result backend.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;

use crate::backend::{ChordJoin, ChordPart, ChordPartResult, ResultBackend, ResultTable};
use crate::bounded::Bounded;
use crate::error::Result;
use crate::protocol::ResultMeta;

/// How many finished chords are remembered, so a late copy of a header task does not
/// start one again.
const DONE_CHORDS: usize = 65_536;

/// An in-memory result backend; clones share the same results, which it keeps until they
/// are forgotten. It joins chords whose tasks run in this process.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    results: Arc<ResultTable<{ usize::MAX }>>,
    chords: Arc<Mutex<Chords>>,
}

/// The chords being joined and the groups saved, as the Redis backend keeps them in keys.
#[derive(Default)]
struct Chords {
    joins: HashMap<String, Join>,
    done: Bounded<(), DONE_CHORDS>,
    groups: HashMap<String, Vec<String>>,
}

/// One chord's parts so far (`.j`, `.d`), its size (`.s`) and whether the body is claimed.
#[derive(Default)]
struct Join {
    size: Option<usize>,
    parts: BTreeMap<(u64, String), ChordPartResult>,
    seen: HashSet<(String, u64)>,
    claimed: bool,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn chords(&self) -> MutexGuard<'_, Chords> {
        // Each operation leaves the maps consistent: a poisoned lock is usable.
        self.chords.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a part as the Redis backend's script does: once per task and index, and
    /// the last one gets the claim.
    fn record_part(&self, part: &ChordPart<'_>) -> ChordJoin {
        let mut chords = self.chords();
        if chords.done.contains_key(part.group_id) {
            return ChordJoin::Waiting;
        }
        let join = chords.joins.entry(part.group_id.to_owned()).or_default();
        let index = part.group_index.unwrap_or(u64::MAX);
        if join.seen.insert((part.task_id.to_owned(), index)) {
            join.parts.insert(
                (index, part.task_id.to_owned()),
                ChordPartResult {
                    task_id: part.task_id.to_owned(),
                    state: part.state.clone(),
                    result: part.result.clone(),
                },
            );
        }
        match join.size {
            Some(size) if join.parts.len() == size && !join.claimed => {
                join.claimed = true;
                ChordJoin::Complete {
                    claim: part.group_id.to_owned(),
                    parts: join.parts.values().cloned().collect(),
                }
            }
            _ => ChordJoin::Waiting,
        }
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBackend")
    }
}

impl ResultBackend for MemoryBackend {
    fn store<'a>(&'a self, meta: &'a ResultMeta) -> BoxFuture<'a, Result<()>> {
        self.results.record(meta.task_id.clone(), meta.clone());
        Box::pin(async { Ok(()) })
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>>> {
        let found = self.results.get(task_id);
        Box::pin(async move { Ok(found) })
    }

    fn wait_ready<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ResultMeta>> {
        Box::pin(async move { Ok(self.results.wait_ready(task_id).await) })
    }

    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<()>> {
        self.results.remove(task_id);
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String {
        "memory://".into()
    }

    fn set_chord_size<'a>(&'a self, group_id: &'a str, size: usize) -> BoxFuture<'a, Result<()>> {
        {
            let mut chords = self.chords();
            chords.done.remove(group_id);
            chords.joins.entry(group_id.to_owned()).or_default().size = Some(size);
        }
        Box::pin(async { Ok(()) })
    }

    fn chord_part_return<'a>(
        &'a self,
        part: &'a ChordPart<'a>,
    ) -> BoxFuture<'a, Result<ChordJoin>> {
        let join = self.record_part(part);
        Box::pin(async move { Ok(join) })
    }

    fn chord_finish<'a>(
        &'a self,
        group_id: &'a str,
        _claim: &'a str,
        failed: bool,
    ) -> BoxFuture<'a, Result<()>> {
        {
            let mut chords = self.chords();
            if failed {
                if let Some(join) = chords.joins.get_mut(group_id) {
                    join.size = None;
                }
            } else {
                chords.joins.remove(group_id);
                chords.done.insert_new(group_id.to_owned(), ());
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn save_group<'a>(
        &'a self,
        group_id: &'a str,
        task_ids: &'a [String],
    ) -> BoxFuture<'a, Result<()>> {
        self.chords()
            .groups
            .insert(group_id.to_owned(), task_ids.to_vec());
        Box::pin(async { Ok(()) })
    }

    fn restore_group<'a>(
        &'a self,
        group_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>>> {
        let ids = self.chords().groups.get(group_id).cloned();
        Box::pin(async move { Ok(ids) })
    }

    fn delete_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<()>> {
        self.chords().groups.remove(group_id);
        Box::pin(async { Ok(()) })
    }
}
