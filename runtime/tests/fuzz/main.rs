//! Fuzzing every decoder that reads bytes from the network, on the stable toolchain:
//! property tests (proptest) that mutate real messages and feed them to
//!
//! * the kombu envelope (`__fuzz::kombu::unwrap`, `salvage`, `delivery_tag`), as the Redis
//!   broker and the Redis pidbox read it, then the task message inside;
//! * the task message: headers and body (`TaskMessage::from_raw`), the arguments bound to a
//!   task (`decode_args`, kombu's typed envelopes) and their reprs;
//! * an AMQP message: the property list of its content header, parsed by lapin's parser,
//!   then the task message (feature `amqp`);
//! * the result JSON a backend reads (`ResultMeta`, its exception);
//! * pidbox commands (`MailboxCommand::from_json`).
//!
//! The seeds in `seeds/` are real: written by Celery 5.7 and kombu 5.7 to Redis (captured
//! with `LRANGE`/`GET`; pidbox bodies as `kombu/pidbox.py::Mailbox._publish` builds them).
//! Inputs are mutated as bytes (bit flips, inserted JSON tokens, deleted, duplicated and
//! spliced ranges) and as JSON (a node replaced by a hostile value: huge numbers, long or
//! odd strings, deep nesting, kombu envelopes of the wrong shape).
//!
//! Two entry points: `cargo test --test fuzz` runs a short pass (`SHORT_CASES` inputs per
//! decoder); `CELERITY_FUZZ_CASES=2000000 cargo test --release --features full --test fuzz
//! -- --ignored --nocapture` runs that many per decoder and reports the time and the peak
//! memory. Any panic fails the run with the input, shrunk.

use std::sync::OnceLock;
use std::time::Instant;

use base64::Engine;
use celerity::protocol::{
    Properties, RawMessage, ResultMeta, TaskMessage, args_repr, from_kombu_json, kwargs_repr,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

/// Inputs per decoder in `cargo test`: a few seconds for all of them in a debug build.
const SHORT_CASES: u32 = 1000;

/// The seeds of one kind (`envelope`, `result`, `pidbox`), as bytes.
fn seeds(kind: &str) -> &'static [Vec<u8>] {
    static ALL: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/seeds");
        let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("the seeds directory")
            .map(|entry| {
                let path = entry.expect("a seed").path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).expect("a readable seed"))
            })
            .collect();
        seeds.sort();
        seeds
    });
    static BY_KIND: OnceLock<std::collections::HashMap<String, Vec<Vec<u8>>>> = OnceLock::new();
    let by_kind = BY_KIND.get_or_init(|| {
        let mut map = std::collections::HashMap::<String, Vec<Vec<u8>>>::new();
        for (name, bytes) in all {
            let kind = name.split('_').next().unwrap_or_default().to_owned();
            map.entry(kind).or_default().push(bytes.clone());
        }
        map
    });
    by_kind
        .get(kind)
        .map(Vec::as_slice)
        .expect("seeds of this kind")
}

/// The task bodies inside the envelope seeds, decoded from base64.
fn bodies() -> &'static [Vec<u8>] {
    static BODIES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BODIES.get_or_init(|| {
        seeds("envelope")
            .iter()
            .map(|envelope| {
                let envelope: Value = serde_json::from_slice(envelope).unwrap();
                base64::engine::general_purpose::STANDARD
                    .decode(envelope["body"].as_str().unwrap())
                    .unwrap()
            })
            .collect()
    })
}

/// One mutation: an operation and its arguments, applied modulo the input's size.
type Mutation = (u8, u32, u16, u8);

/// What a fuzz case is: which seed, how to mutate it, and a second seed to splice from.
#[derive(Debug, Clone)]
struct Case {
    seed: usize,
    other: usize,
    structural: Vec<Mutation>,
    bytes: Vec<Mutation>,
}

fn mutated() -> impl Strategy<Value = Case> {
    let mutations = |max| prop::collection::vec(any::<Mutation>(), 0..max);
    (any::<usize>(), any::<usize>(), mutations(4), mutations(6)).prop_map(
        |(seed, other, structural, bytes)| Case {
            seed,
            other,
            structural,
            bytes,
        },
    )
}

/// Tokens that make JSON parsers and Celery's readers take their rarer paths.
const TOKENS: &[&str] = &[
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "-1",
    "0",
    "1e999",
    "-0.0",
    "18446744073709551616",
    "-9223372036854775809",
    "4294967296",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\\",
    "[[[[[[[[",
    "{\"__type__\": \"datetime\", \"__value__\": \"x\"}",
    "{\"__type__\": \"uuid\", \"__value__\": {}}",
    "{\"__type__\": \"bytes\"}",
    "=",
    "+/",
    "\u{fffd}",
    "é",
    "\"task\"",
    "\"id\"",
    "\"retries\"",
    "\"eta\"",
    "true",
];

/// A hostile JSON value, chosen by `pick`, sized by `size`.
fn hostile_value(pick: u8, size: u16) -> Value {
    let size = usize::from(size % 2048);
    match pick % 16 {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(1.5e308),
        6 => json!(""),
        7 => Value::String("x".repeat(size)),
        8 => Value::String("\u{1F600}\u{0}\u{fffd}'\"\\".repeat(size / 8 + 1)),
        9 => (0..size % 200).fold(Value::Null, |inner, _| json!([inner])),
        10 => (0..size % 200).fold(json!({}), |inner, _| json!({"a": inner})),
        11 => json!({"__type__": "datetime", "__value__": "2024-13-45T99:99:99"}),
        12 => json!({"__type__": "uuid", "__value__": {"hex": "zz"}}),
        13 => json!({"__type__": "bytes", "__value__": "***"}),
        14 => json!([[], {}, {}]),
        _ => Value::Array(vec![json!(1); size % 64]),
    }
}

/// Counts the nodes of `value`, to address one by index.
fn nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(nodes).sum(),
        Value::Object(map) => map.values().map(nodes).sum(),
        _ => 0,
    }
}

/// The `index`th node of `value`, depth first, in one walk.
fn node_mut(value: &mut Value, index: usize) -> Option<&mut Value> {
    let mut stack = vec![value];
    let mut seen = 0;
    while let Some(node) = stack.pop() {
        if seen == index {
            return Some(node);
        }
        seen += 1;
        match node {
            Value::Array(items) => stack.extend(items.iter_mut().rev()),
            Value::Object(map) => stack.extend(map.values_mut().rev()),
            _ => {}
        }
    }
    None
}

/// Mutates a JSON document: replaces, removes or renames nodes. Bytes that are not JSON
/// are left alone.
fn mutate_json(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
        return bytes.to_vec();
    };
    for &(op, at, size, pick) in mutations {
        let count = nodes(&value);
        let Some(node) = node_mut(&mut value, at as usize % count) else {
            continue;
        };
        match op % 4 {
            0 | 1 => *node = hostile_value(pick, size),
            2 => match node {
                Value::Object(map) if !map.is_empty() => {
                    let key = map.keys().nth(usize::from(size) % map.len()).cloned();
                    if let Some(key) = key {
                        map.remove(&key);
                    }
                }
                Value::Array(items) if !items.is_empty() => {
                    items.remove(usize::from(size) % items.len());
                }
                _ => *node = Value::Null,
            },
            _ => {
                if let Value::Object(map) = node {
                    let key = TOKENS[usize::from(pick) % TOKENS.len()].trim_matches('"');
                    map.insert(key.to_owned(), hostile_value(pick / 16, size));
                }
            }
        }
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

/// Largest mutated input: room for every mutation without letting one case grow
/// without bound.
const MAX_INPUT: usize = 256 * 1024;

/// Mutates bytes: flips, overwrites, inserts, deletes, duplicates, truncates, splices.
fn mutate_bytes(mut bytes: Vec<u8>, mutations: &[Mutation], other: &[u8]) -> Vec<u8> {
    for &(op, at, size, byte) in mutations {
        let len = bytes.len();
        let at = if len == 0 { 0 } else { at as usize % len };
        let span = usize::from(size) % 64 + 1;
        match op % 8 {
            0 if len > 0 => bytes[at] ^= 1 << (byte % 8),
            1 if len > 0 => bytes[at] = byte,
            2 => {
                let insert = std::iter::repeat_n(byte, span);
                bytes.splice(at..at, insert);
            }
            3 => {
                let end = (at + span).min(len);
                bytes.drain(at..end);
            }
            4 => {
                let end = (at + span).min(len);
                let copy = bytes[at..end].to_vec();
                let times = usize::from(byte % 8) + 1;
                for _ in 0..times {
                    bytes.splice(at..at, copy.iter().copied());
                }
            }
            5 => bytes.truncate(at),
            6 => {
                let token = TOKENS[usize::from(byte) % TOKENS.len()].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            _ => {
                if !other.is_empty() {
                    let from = usize::from(size) % other.len();
                    let end = (from + span * 4).min(other.len());
                    bytes.splice(at..at, other[from..end].iter().copied());
                }
            }
        }
        bytes.truncate(MAX_INPUT);
    }
    bytes
}

/// The case's input, from `pool`: the seed mutated as JSON, then as bytes.
fn input(case: &Case, pool: &[Vec<u8>]) -> Vec<u8> {
    let seed = &pool[case.seed % pool.len()];
    let other = &pool[case.other % pool.len()];
    let structured = mutate_json(seed, &case.structural);
    mutate_bytes(structured, &case.bytes, other)
}

/// Everything a worker does with a decoded task message before the task runs: bind the
/// arguments, read kombu's envelopes, write the reprs and re-encode the message.
fn use_task_message(raw: &RawMessage) {
    let Ok(message) = TaskMessage::from_raw(raw) else {
        return;
    };
    let _ = args_repr(&message.args);
    let _ = kwargs_repr(&message.kwargs);
    let _ = celerity::protocol::parse_celery_time(message.headers.eta.as_deref().unwrap_or(""));
    let _: Result<TypedArgs, _> =
        celerity::decode_args(&TYPED, message.args.clone(), message.kwargs.clone());
    let _ = from_kombu_json(Value::Array(message.args.clone()));
    let reencoded = message.to_raw().expect("a decoded message encodes again");
    let again = TaskMessage::from_raw(&reencoded).expect("an encoded message decodes again");
    let (args, again_args) = (Value::Array(message.args), Value::Array(again.args));
    assert!(
        same_json(&args, &again_args),
        "arguments survive a round trip"
    );
    let (kwargs, again_kwargs) = (Value::Object(message.kwargs), Value::Object(again.kwargs));
    assert!(
        same_json(&kwargs, &again_kwargs),
        "keyword arguments survive a round trip"
    );
}

/// Equal JSON, floats within one unit in the last place: without its `float_roundtrip`
/// feature, serde_json's float parser may round a long decimal to the neighbouring
/// double (`1.8446744042949674e+29` reads back as `1.844674404294967e+29`), so a float
/// read, written and read again can move by one ulp. Found by this harness; the feature
/// would make parsing exact, as Python's `json` is.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || x.to_bits().abs_diff(y.to_bits()) <= 1,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// A task whose arguments take the types a schema offers.
static TYPED: celerity::TaskSpec = celerity::TaskSpec::new(
    "fuzz.typed",
    &[
        celerity::ArgSpec::new("number", true),
        celerity::ArgSpec::new("text", false),
        celerity::ArgSpec::new("floats", false),
        celerity::ArgSpec::new("at", false),
        celerity::ArgSpec::new("id", false),
        celerity::ArgSpec::new("data", false),
        celerity::ArgSpec::new("blob", false),
    ],
);

#[derive(serde::Deserialize)]
#[allow(dead_code)] // only decoded
struct TypedArgs {
    number: i64,
    text: Option<String>,
    floats: Option<Vec<f64>>,
    at: Option<chrono::DateTime<chrono::Utc>>,
    id: Option<uuid::Uuid>,
    data: Option<std::collections::HashMap<String, Value>>,
    blob: Option<celerity::Bytes>,
}

/// Runs `check` on `cases` inputs from `strategy`; a panic fails with the shrunk input.
fn fuzz<S: Strategy>(name: &str, cases: u32, strategy: S, check: impl Fn(S::Value)) -> u32
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(failure) = runner.run(&strategy, |value| {
        check(value);
        Ok(())
    }) {
        panic!("{name}: {failure}");
    }
    cases
}

#[cfg(feature = "redis")]
fn kombu_envelope(cases: u32) -> u32 {
    use celerity::__fuzz::kombu;
    fuzz("kombu envelope", cases, mutated(), |case| {
        let bytes = input(&case, seeds("envelope"));
        let _ = kombu::salvage(&bytes);
        let _ = kombu::delivery_tag(&bytes);
        if let Ok(unwrapped) = kombu::unwrap(&bytes) {
            use_task_message(&unwrapped.message);
            let rewrapped = kombu::wrap(
                &unwrapped.message,
                &unwrapped.delivery_info,
                &unwrapped.delivery_tag,
            );
            let again = kombu::unwrap(&rewrapped).expect("a wrapped message unwraps");
            let (again_headers, headers) = (
                Value::Object(again.message.headers.clone()),
                Value::Object(unwrapped.message.headers.clone()),
            );
            assert!(
                same_json(&again_headers, &headers),
                "headers survive a round trip: {again_headers} != {headers}"
            );
            assert_eq!(again.message.body, unwrapped.message.body);
        }
    })
}

#[cfg(not(feature = "redis"))]
fn kombu_envelope(_cases: u32) -> u32 {
    0
}

/// Task messages: the body mutated as JSON and bytes under real headers, and the headers
/// mutated as JSON over a real body.
fn task_message(cases: u32) -> u32 {
    let headers: Vec<Map<String, Value>> = seeds("envelope")
        .iter()
        .map(|envelope| {
            let envelope: Value = serde_json::from_slice(envelope).unwrap();
            envelope["headers"].as_object().cloned().unwrap()
        })
        .collect();
    let header_bytes: Vec<Vec<u8>> = headers
        .iter()
        .map(|h| serde_json::to_vec(h).unwrap())
        .collect();
    fuzz(
        "task message",
        cases,
        (mutated(), any::<bool>()),
        |(case, mutate_headers)| {
            let (headers, body) = if mutate_headers {
                let bytes = input(&case, &header_bytes);
                let headers = match serde_json::from_slice(&bytes) {
                    Ok(Value::Object(headers)) => headers,
                    _ => return,
                };
                (headers, bodies()[case.other % bodies().len()].clone())
            } else {
                (
                    headers[case.other % headers.len()].clone(),
                    input(&case, bodies()),
                )
            };
            use_task_message(&RawMessage {
                headers,
                properties: Properties::default(),
                content_type: "application/json".into(),
                content_encoding: "utf-8".into(),
                body,
            });
        },
    )
}

/// The AMQP content header a Python client's message arrives with, and its body (the seeds
/// are kombu envelopes captured on Redis, so this needs both transports).
#[cfg(all(feature = "amqp", feature = "redis"))]
fn amqp_message(cases: u32) -> u32 {
    use celerity::__fuzz::{message_from_wire, message_to_wire};
    let wires: Vec<Vec<u8>> = seeds("envelope")
        .iter()
        .map(|envelope| {
            let unwrapped = celerity::__fuzz::kombu::unwrap(envelope).unwrap();
            message_to_wire(&unwrapped.message)
        })
        .collect();
    fuzz("amqp message", cases, mutated(), |case| {
        let seed = &wires[case.seed % wires.len()];
        let other = &wires[case.other % wires.len()];
        let properties = mutate_bytes(seed.clone(), &case.bytes, other);
        let body = bodies()[case.other % bodies().len()].clone();
        if let Some(raw) = message_from_wire(&properties, body) {
            use_task_message(&raw);
        }
    })
}

#[cfg(not(all(feature = "amqp", feature = "redis")))]
fn amqp_message(_cases: u32) -> u32 {
    0
}

/// A stored result as a backend reads it (Redis `GET`, an rpc reply body).
fn result_json(cases: u32) -> u32 {
    fuzz("result json", cases, mutated(), |case| {
        let bytes = input(&case, seeds("result"));
        if let Ok(meta) = serde_json::from_slice::<ResultMeta>(&bytes) {
            let _ = meta.status.is_ready();
            if let Some(exception) = meta.exception_info() {
                let _ = exception.message();
            }
            let written = serde_json::to_value(&meta).unwrap();
            let again: ResultMeta = serde_json::from_value(written.clone()).unwrap();
            let reread = serde_json::to_value(&again).unwrap();
            assert!(
                same_json(&written, &reread),
                "a result survives a round trip"
            );
        }
    })
}

/// A remote-control command as a worker's mailbox reads it.
fn pidbox_command(cases: u32) -> u32 {
    use celerity::broker::MailboxCommand;
    fuzz("pidbox command", cases, mutated(), |case| {
        let bytes = input(&case, seeds("pidbox"));
        if let Some(command) = MailboxCommand::from_json(&bytes) {
            let _ = command.is_for("celery@web-1");
            let _ = celerity::__fuzz::task_ids(command.arguments.get("task_id"));
        }
    })
}

type Decoder = fn(u32) -> u32;

const DECODERS: &[(&str, Decoder)] = &[
    ("kombu envelope", kombu_envelope),
    ("task message", task_message),
    ("amqp message", amqp_message),
    ("result json", result_json),
    ("pidbox command", pidbox_command),
];

#[test]
fn every_decoder_survives_mutated_real_messages() {
    for (_, decoder) in DECODERS {
        decoder(SHORT_CASES);
    }
}

/// Peak resident memory of this process, from `/proc/self/status` (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The long run: `CELERITY_FUZZ_CASES` inputs per decoder (default 200,000).
#[test]
#[ignore = "long: run with CELERITY_FUZZ_CASES=<n> and --release --ignored"]
fn long_run() {
    let cases: u32 = std::env::var("CELERITY_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let started = Instant::now();
    let mut total = 0u64;
    for (name, decoder) in DECODERS {
        let one = Instant::now();
        let ran = decoder(cases);
        total += u64::from(ran);
        println!(
            "{name}: {ran} inputs in {:.1}s, peak RSS so far {} KiB",
            one.elapsed().as_secs_f64(),
            peak_rss_kib().unwrap_or(0)
        );
    }
    println!(
        "total: {total} inputs in {:.1}s, no panic, peak RSS {} KiB",
        started.elapsed().as_secs_f64(),
        peak_rss_kib().unwrap_or(0)
    );
}
