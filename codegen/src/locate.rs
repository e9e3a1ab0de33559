//! Source locations of the nodes of a YAML document, by key path.
//!
//! `serde_yaml` deserialises without positions, so a second, event-level pass over the
//! same text (yaml-rust2's marked parser) records where every key and value starts. The
//! validator then reports any error at the exact line and column of the node it is about.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a key path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path from the document root to a node, e.g. `tasks` → `send_email` → `args`.
pub(crate) type KeyPath = Vec<Segment>;

/// Renders a key path the way diagnostics print it: `tasks."tasks.send_email".args[0]`.
pub(crate) fn display_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if key.is_empty() || key.contains(['.', ' ', '[', ']', '"']) {
                    out.push('"');
                    out.push_str(&key.replace('"', "\\\""));
                    out.push('"');
                } else {
                    out.push_str(key);
                }
            }
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub column: usize,
}

/// A key written twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Duplicate {
    /// The key's path.
    pub path: KeyPath,
    /// Where it is first written.
    pub first: Position,
    /// Where it is written again.
    pub again: Position,
}

/// Where the keys and values of a document start.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    keys: HashMap<KeyPath, Position>,
    values: HashMap<KeyPath, Position>,
    duplicates: Vec<Duplicate>,
}

impl Locations {
    /// Indexes `source`. A document that does not parse yields an empty index: the syntax
    /// error itself is reported from `serde_yaml`, with its own position.
    pub(crate) fn index(source: &str) -> Self {
        let mut recorder = Recorder::default();
        let mut parser = Parser::new_from_str(source);
        let _ = parser.load(&mut recorder, false);
        recorder.locations
    }

    /// Every key written a second time in its mapping, in document order. Only string keys
    /// are compared, by their text.
    pub(crate) fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    /// Position of the key that ends `path`, falling back to its value, then to the
    /// nearest ancestor that has a position.
    pub(crate) fn key(&self, path: &[Segment]) -> Position {
        self.lookup(path, true)
    }

    /// Position of the value at `path`, falling back to its key, then to the nearest
    /// ancestor that has a position.
    pub(crate) fn value(&self, path: &[Segment]) -> Position {
        self.lookup(path, false)
    }

    /// Position of the value at exactly `path`, when the document has one there.
    pub(crate) fn exact_value(&self, path: &[Segment]) -> Option<Position> {
        self.values.get(path).copied()
    }

    fn lookup(&self, path: &[Segment], key_first: bool) -> Position {
        let mut path = path.to_vec();
        loop {
            let (first, second) = if key_first {
                (&self.keys, &self.values)
            } else {
                (&self.values, &self.keys)
            };
            if let Some(position) = first.get(&path).or_else(|| second.get(&path)) {
                return *position;
            }
            if path.pop().is_none() {
                return Position { line: 1, column: 1 };
            }
        }
    }
}

enum Frame {
    Mapping {
        key: Option<Segment>,
    },
    Sequence {
        next: usize,
    },
    /// A mapping used as a mapping key (legal YAML, never valid here): tracked so the
    /// event stream stays balanced, positions inside it are not recorded.
    Ignored,
}

#[derive(Default)]
struct Recorder {
    locations: Locations,
    stack: Vec<Frame>,
    path: KeyPath,
}

impl Recorder {
    fn position(mark: Marker) -> Position {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Position {
            line: mark.line(),
            column: mark.col() + 1,
        }
    }

    /// Called for every node start; returns false when the node is a mapping key.
    fn enter_node(&mut self, scalar: Option<&str>, mark: Marker) -> bool {
        let position = Self::position(mark);
        match self.stack.last_mut() {
            Some(Frame::Mapping { key }) if key.is_none() => {
                let segment = Segment::Key(scalar.unwrap_or_default().to_owned());
                let mut path = self.path.clone();
                path.push(segment.clone());
                match self.locations.keys.entry(path) {
                    Entry::Vacant(entry) => {
                        entry.insert(position);
                    }
                    // Keys that are no scalar (aliases, complex keys) all record as "".
                    Entry::Occupied(entry) if scalar.is_some() => {
                        self.locations.duplicates.push(Duplicate {
                            path: entry.key().clone(),
                            first: *entry.get(),
                            again: position,
                        });
                    }
                    Entry::Occupied(_) => {}
                }
                *key = Some(segment);
                false
            }
            Some(Frame::Mapping { key }) => {
                let segment = key.clone().expect("checked above");
                self.path.push(segment);
                self.locations.values.insert(self.path.clone(), position);
                true
            }
            Some(Frame::Sequence { next }) => {
                self.path.push(Segment::Index(*next));
                *next += 1;
                self.locations.values.insert(self.path.clone(), position);
                true
            }
            Some(Frame::Ignored) => false,
            None => true,
        }
    }

    /// A scalar or alias: a node that starts and ends at once.
    fn leaf(&mut self, scalar: Option<&str>, mark: Marker) {
        if self.enter_node(scalar, mark) {
            self.leave_value();
        }
    }

    /// Called when a value node ends.
    fn leave_value(&mut self) {
        if let Some(Frame::Mapping { key }) = self.stack.last_mut() {
            *key = None;
        }
        if !self.stack.is_empty() {
            self.path.pop();
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => self.leaf(Some(&value), mark),
            Event::Alias(_) => self.leaf(None, mark),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_value = self.enter_node(None, mark);
                let frame = match (is_value, event) {
                    (false, _) => Frame::Ignored,
                    (true, Event::MappingStart(..)) => Frame::Mapping { key: None },
                    (true, _) => Frame::Sequence { next: 0 },
                };
                if matches!(frame, Frame::Ignored) {
                    // Mark the enclosing mapping's key slot as taken by this complex key.
                    if let Some(Frame::Mapping { key }) = self.stack.last_mut() {
                        *key = Some(Segment::Key(String::new()));
                    }
                }
                self.stack.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let frame = self.stack.pop();
                if !matches!(frame, Some(Frame::Ignored))
                    && !matches!(self.stack.last(), Some(Frame::Ignored))
                {
                    self.leave_value();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &[&str]) -> KeyPath {
        path.iter().map(|k| Segment::Key((*k).to_owned())).collect()
    }

    #[test]
    fn finds_keys_and_values_of_nested_mappings_and_sequences() {
        let source = "version: 1\ntasks:\n  tasks.ping:\n    args:\n      host: string\n    list:\n      - a\n      - b\n";
        let locations = Locations::index(source);
        assert_eq!(
            locations.key(&key(&["version"])),
            Position { line: 1, column: 1 }
        );
        assert_eq!(
            locations.key(&key(&["tasks", "tasks.ping"])),
            Position { line: 3, column: 3 }
        );
        assert_eq!(
            locations.value(&key(&["tasks", "tasks.ping", "args", "host"])),
            Position {
                line: 5,
                column: 13
            }
        );
        let mut second = key(&["tasks", "tasks.ping", "list"]);
        second.push(Segment::Index(1));
        assert_eq!(locations.value(&second), Position { line: 8, column: 9 });
    }

    #[test]
    fn records_keys_written_twice_where_they_are_written_again() {
        let source =
            "tasks:\n  ping:\n    result: string\n    args: {}\n    result: i32\n  pong: {}\n";
        let locations = Locations::index(source);
        assert_eq!(
            locations.duplicates(),
            [Duplicate {
                path: key(&["tasks", "ping", "result"]),
                first: Position { line: 3, column: 5 },
                again: Position { line: 5, column: 5 },
            }]
        );
        assert_eq!(
            locations.key(&key(&["tasks", "ping", "result"])),
            Position { line: 3, column: 5 }
        );
    }

    #[test]
    fn unknown_paths_fall_back_to_the_nearest_ancestor() {
        let locations = Locations::index("tasks:\n  ping: {}\n");
        assert_eq!(
            locations.key(&key(&["tasks", "ping", "options", "queue"])),
            Position { line: 2, column: 3 }
        );
    }

    #[test]
    fn paths_print_with_quotes_around_dotted_keys() {
        let mut path = key(&["tasks", "tasks.send_email", "args"]);
        path.push(Segment::Index(0));
        assert_eq!(display_path(&path), "tasks.\"tasks.send_email\".args[0]");
    }
}
