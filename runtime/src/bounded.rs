//! A map that keeps at most `CAPACITY` entries, forgetting the oldest first, like
//! Celery's `LimitedSet`: the worker's revoked ids and the in-process result tables.

use std::collections::{HashMap, VecDeque};

/// Entries by key, oldest first out.
#[derive(Debug)]
pub(crate) struct Bounded<V, const CAPACITY: usize> {
    entries: HashMap<String, V>,
    order: VecDeque<String>,
}

impl<V, const CAPACITY: usize> Default for Bounded<V, CAPACITY> {
    fn default() -> Self {
        Bounded {
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V, const CAPACITY: usize> Bounded<V, CAPACITY> {
    /// Adds `key` unless it is there already (then nothing changes); the oldest entry
    /// goes when the map is full.
    pub(crate) fn insert_new(&mut self, key: String, value: V) {
        if self.entries.contains_key(&key) {
            return;
        }
        self.entries.insert(key.clone(), value);
        self.order.push_back(key);
        while self.order.len() > CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The keys, oldest first.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.order.iter()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Reading and removing values: what result tables need (the worker's revoked ids only
/// ask whether a key is there).
impl<V, const CAPACITY: usize> Bounded<V, CAPACITY> {
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.entries.get_mut(key)
    }

    /// Removes `key` and its place in the order.
    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        let value = self.entries.remove(key)?;
        self.order.retain(|k| k != key);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::Bounded;

    #[test]
    fn the_oldest_goes_first_and_a_removed_key_leaves_no_trace() {
        let mut map = Bounded::<u32, 2>::default();
        map.insert_new("a".into(), 1);
        map.insert_new("a".into(), 9);
        assert_eq!(map.get("a"), Some(&1), "an existing key is kept");
        *map.get_mut("a").unwrap() = 7;
        assert_eq!(map.get("a"), Some(&7), "a value changed in place");
        map.insert_new("b".into(), 2);
        map.insert_new("c".into(), 3);
        assert!(!map.contains_key("a"));
        assert_eq!(map.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(map.remove("b"), Some(2));
        map.insert_new("b".into(), 4);
        map.insert_new("d".into(), 5);
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            ["b", "d"],
            "no stale place for b"
        );
        assert_eq!(map.len(), 2);
    }
}
