//! One event, its fields in Celery's names and order, and its message.
//!
//! An event is a flat JSON object (`celery/events/event.py::Event`). The dispatcher adds
//! `hostname`, `utcoffset`, `pid` and `clock` first (`EventDispatcher._prepare_event`), the
//! sender's own fields follow, then `timestamp` and `type`: a heartbeat Celery 5.7 sent,
//! captured on Redis, reads
//!
//! ```json
//! {"hostname": "w1@vm", "utcoffset": 0.0, "pid": 6205, "clock": 28, "freq": 2.0, "active": 0,
//!  "processed": 14, "loadavg": [0.73, 0.29, 0.11], "sw_ident": "py-celery", "sw_ver": "5.7.0",
//!  "sw_sys": "Linux", "timestamp": 1795260348.6526587, "type": "worker-heartbeat"}
//! ```
//!
//! Events are kept typed until they are written, so building one on a task's path copies
//! a few strings and serialises nothing.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// One of Celery's monitoring events, as a Celerity worker sends it: what `celery events`,
/// Flower and `app.events.Receiver` read.
///
/// [`MemoryBroker::subscribe_events`](crate::broker::MemoryBroker::subscribe_events)
/// hands them to tests; on Redis and RabbitMQ they travel as kombu messages. Serialised,
/// an event is the JSON object monitors receive.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub(super) kind: &'static str,
    pub(super) hostname: Arc<str>,
    pub(super) utcoffset: f64,
    pub(super) pid: u32,
    pub(super) clock: u64,
    pub(super) timestamp: f64,
    pub(super) fields: Fields,
}

/// What an event says besides who sent it and when.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fields {
    /// `worker-online`, `worker-heartbeat`, `worker-offline` (`celery/worker/heartbeat.py`).
    Worker(WorkerFields),
    /// A `task-*` event about the task `uuid` (`Request.send_event`).
    Task { uuid: String, detail: TaskDetail },
}

/// What a worker event reports of the worker (`Heart._send`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkerFields {
    /// Seconds between heartbeats: monitors take the worker for gone `2 × freq` after
    /// the last one.
    pub freq: f64,
    /// Tasks running.
    pub active: usize,
    /// Tasks started since the worker started.
    pub processed: u64,
    /// The machine's load average, rounded up to hundredths as Celery's `load_average()`.
    pub loadavg: [f64; 3],
}

/// The fields of each task event, as `celery/worker/request.py` and
/// `celery/worker/strategy.py` send them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskDetail {
    /// `task-received`: the arguments as Python reprs, the times as ISO 8601.
    Received {
        name: String,
        args: String,
        kwargs: String,
        root_id: Option<String>,
        parent_id: Option<String>,
        retries: u32,
        eta: Option<String>,
        expires: Option<String>,
    },
    /// `task-started`.
    Started,
    /// `task-succeeded`: the result's repr and the run time in seconds.
    Succeeded { result: String, runtime: f64 },
    /// `task-failed`: the exception's repr and its traceback (none for an unregistered
    /// task, as `Consumer.on_unknown_task` sends it).
    Failed {
        exception: String,
        traceback: Option<String>,
    },
    /// `task-retried`: the cause's repr and traceback.
    Retried {
        exception: String,
        traceback: String,
    },
    /// `task-revoked`: discarded (`expired` or revoked) or stopped while running
    /// (`terminated`, with the signal's number).
    Revoked {
        terminated: bool,
        signum: Option<u32>,
        expired: bool,
    },
    /// `task-rejected`: the message was refused, back to its queue when `requeue`.
    Rejected { requeue: bool },
}

impl TaskDetail {
    /// The event type.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            TaskDetail::Received { .. } => "task-received",
            TaskDetail::Started => "task-started",
            TaskDetail::Succeeded { .. } => "task-succeeded",
            TaskDetail::Failed { .. } => "task-failed",
            TaskDetail::Retried { .. } => "task-retried",
            TaskDetail::Revoked { .. } => "task-revoked",
            TaskDetail::Rejected { .. } => "task-rejected",
        }
    }
}

/// What a Celerity worker calls itself in `sw_ident` (Celery's: `py-celery`).
pub(crate) const SOFTWARE: &str = "celerity";

/// The operating system's name as Python's `platform.system()` gives it: `Linux`,
/// `Darwin`, `Windows`.
fn system() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        "freebsd" => "FreeBSD",
        "netbsd" => "NetBSD",
        "openbsd" => "OpenBSD",
        other => other,
    }
}

impl Event {
    /// The event type: `worker-heartbeat`, `task-succeeded`, …
    pub fn kind(&self) -> &str {
        self.kind
    }

    /// The routing key it is published with: the type with `.` for `-`
    /// (`worker.heartbeat`, `task.succeeded`), as `EventDispatcher.send` routes it.
    pub fn routing_key(&self) -> String {
        self.kind.replace('-', ".")
    }

    /// The node name of the worker that sent it.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Its Lamport clock value: every event, command and answer of the process moves the
    /// clock forward, so monitors order one worker's events by it.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// When it was sent, in seconds since the Unix epoch.
    pub fn timestamp(&self) -> f64 {
        self.timestamp
    }

    /// The task it is about (`uuid`), for a task event.
    pub fn task_id(&self) -> Option<&str> {
        match &self.fields {
            Fields::Task { uuid, .. } => Some(uuid),
            Fields::Worker(_) => None,
        }
    }

    /// Every field, as monitors receive the event.
    pub fn fields(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(fields)) => fields,
            _ => Map::new(),
        }
    }

    /// The field `name` (`uuid`, `result`, `active`, …), as monitors receive it.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.fields().remove(name)
    }

    /// About how many bytes the event takes, for the outbox's bound.
    pub(crate) fn size(&self) -> usize {
        const FIXED: usize = 256;
        let text = |text: &Option<String>| text.as_ref().map_or(0, String::len);
        FIXED
            + self.hostname.len()
            + match &self.fields {
                Fields::Worker(_) => 0,
                Fields::Task { uuid, detail } => {
                    uuid.len()
                        + match detail {
                            TaskDetail::Received {
                                name,
                                args,
                                kwargs,
                                root_id,
                                parent_id,
                                eta,
                                expires,
                                ..
                            } => {
                                name.len()
                                    + args.len()
                                    + kwargs.len()
                                    + text(root_id)
                                    + text(parent_id)
                                    + text(eta)
                                    + text(expires)
                            }
                            TaskDetail::Succeeded { result, .. } => result.len(),
                            TaskDetail::Failed {
                                exception,
                                traceback,
                            } => exception.len() + text(traceback),
                            TaskDetail::Retried {
                                exception,
                                traceback,
                            } => exception.len() + traceback.len(),
                            TaskDetail::Started
                            | TaskDetail::Revoked { .. }
                            | TaskDetail::Rejected { .. } => 0,
                        }
                }
            }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("hostname", &*self.hostname)?;
        map.serialize_entry("utcoffset", &self.utcoffset)?;
        map.serialize_entry("pid", &self.pid)?;
        map.serialize_entry("clock", &self.clock)?;
        match &self.fields {
            Fields::Worker(worker) => {
                map.serialize_entry("freq", &worker.freq)?;
                map.serialize_entry("active", &worker.active)?;
                map.serialize_entry("processed", &worker.processed)?;
                map.serialize_entry("loadavg", &worker.loadavg)?;
                map.serialize_entry("sw_ident", SOFTWARE)?;
                map.serialize_entry("sw_ver", env!("CARGO_PKG_VERSION"))?;
                map.serialize_entry("sw_sys", system())?;
            }
            Fields::Task { uuid, detail } => {
                map.serialize_entry("uuid", uuid)?;
                match detail {
                    TaskDetail::Received {
                        name,
                        args,
                        kwargs,
                        root_id,
                        parent_id,
                        retries,
                        eta,
                        expires,
                    } => {
                        map.serialize_entry("name", name)?;
                        map.serialize_entry("args", args)?;
                        map.serialize_entry("kwargs", kwargs)?;
                        map.serialize_entry("root_id", root_id)?;
                        map.serialize_entry("parent_id", parent_id)?;
                        map.serialize_entry("retries", retries)?;
                        map.serialize_entry("eta", eta)?;
                        map.serialize_entry("expires", expires)?;
                    }
                    TaskDetail::Started => {}
                    TaskDetail::Succeeded { result, runtime } => {
                        map.serialize_entry("result", result)?;
                        map.serialize_entry("runtime", runtime)?;
                    }
                    TaskDetail::Failed {
                        exception,
                        traceback,
                    } => {
                        map.serialize_entry("exception", exception)?;
                        if let Some(traceback) = traceback {
                            map.serialize_entry("traceback", traceback)?;
                        }
                    }
                    TaskDetail::Retried {
                        exception,
                        traceback,
                    } => {
                        map.serialize_entry("exception", exception)?;
                        map.serialize_entry("traceback", traceback)?;
                    }
                    TaskDetail::Revoked {
                        terminated,
                        signum,
                        expired,
                    } => {
                        map.serialize_entry("terminated", terminated)?;
                        map.serialize_entry("signum", signum)?;
                        map.serialize_entry("expired", expired)?;
                    }
                    TaskDetail::Rejected { requeue } => {
                        map.serialize_entry("requeue", requeue)?;
                    }
                }
            }
        }
        map.serialize_entry("timestamp", &self.timestamp)?;
        map.serialize_entry("type", self.kind)?;
        map.end()
    }
}

/// The local time's offset to UTC in hours, west positive, as Celery's `utcoffset()`
/// gives it (`time.timezone / 3600`): `0.0` in UTC, `-1.0` in Paris in winter. Monitors
/// add it back to the timestamp (`celery/utils/time.py::adjust_timestamp`).
pub(crate) fn utcoffset() -> f64 {
    let east = chrono::Local::now().offset().local_minus_utc();
    // Negated as a whole number, so UTC gives 0.0 and not -0.0.
    f64::from(-east) / 3600.0
}

/// The machine's load average over 1, 5 and 15 minutes, each rounded up to hundredths
/// (`celery/utils/sysinfo.py::load_average`); zeros where it cannot be read.
pub(crate) fn load_average() -> [f64; 3] {
    let mut loads = [0.0; 3];
    #[cfg(unix)]
    {
        unsafe extern "C" {
            fn getloadavg(loadavg: *mut f64, nelem: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: `loads` has room for the three values asked for; `getloadavg` writes at
        // most that many and keeps no pointer.
        if unsafe { getloadavg(loads.as_mut_ptr(), 3) } != 3 {
            loads = [0.0; 3];
        }
    }
    loads.map(|load| (load * 100.0).ceil() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &'static str, fields: Fields) -> Event {
        Event {
            kind,
            hostname: "w1@vm".into(),
            utcoffset: 0.0,
            pid: 6205,
            clock: 28,
            timestamp: 1795260348.6526587,
            fields,
        }
    }

    #[test]
    fn a_heartbeat_has_celerys_fields_in_celerys_order() {
        let heartbeat = event(
            "worker-heartbeat",
            Fields::Worker(WorkerFields {
                freq: 2.0,
                active: 0,
                processed: 14,
                loadavg: [0.73, 0.29, 0.11],
            }),
        );
        let written = String::from_utf8(crate::protocol::to_python_json(&heartbeat).unwrap());
        let expected = format!(
            r#"{{"hostname": "w1@vm", "utcoffset": 0.0, "pid": 6205, "clock": 28, "freq": 2.0, "active": 0, "processed": 14, "loadavg": [0.73, 0.29, 0.11], "sw_ident": "celerity", "sw_ver": "{}", "sw_sys": "{}", "timestamp": 1795260348.6526587, "type": "worker-heartbeat"}}"#,
            env!("CARGO_PKG_VERSION"),
            system()
        );
        assert_eq!(written.unwrap(), expected);
        assert_eq!(heartbeat.routing_key(), "worker.heartbeat");
        assert_eq!(heartbeat.task_id(), None);
    }

    #[test]
    fn task_events_carry_the_uuid_then_their_own_fields() {
        let revoked = event(
            "task-revoked",
            Fields::Task {
                uuid: "t-1".into(),
                detail: TaskDetail::Revoked {
                    terminated: true,
                    signum: Some(15),
                    expired: false,
                },
            },
        );
        let keys: Vec<String> = revoked.fields().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "hostname",
                "utcoffset",
                "pid",
                "clock",
                "uuid",
                "terminated",
                "signum",
                "expired",
                "timestamp",
                "type"
            ]
        );
        assert_eq!(revoked.get("signum"), Some(json!(15)));
        assert_eq!(revoked.task_id(), Some("t-1"));
        assert_eq!(revoked.routing_key(), "task.revoked");
        let unknown = event(
            "task-failed",
            Fields::Task {
                uuid: "t-2".into(),
                detail: TaskDetail::Failed {
                    exception: "NotRegistered('t.nope')".into(),
                    traceback: None,
                },
            },
        );
        assert_eq!(unknown.get("traceback"), None);
    }

    #[test]
    fn the_offset_and_the_load_read_as_celery_gives_them() {
        let offset = utcoffset();
        assert!((-14.0..=14.0).contains(&offset), "{offset}");
        assert_eq!(offset * 4.0, (offset * 4.0).round(), "quarter hours");
        for load in load_average() {
            assert!(load >= 0.0);
            let hundredths = load * 100.0;
            assert!((hundredths - hundredths.round()).abs() < 1e-6, "{load}");
        }
    }
}
