//! The answers to Celery's inspect commands about the worker itself: `stats`
//! (`WorkController.stats`, `celery/worker/worker.py`), `conf` and `report` (the app's
//! settings and its `bugreport`), in the shapes Celery gives and Flower shows.

use serde_json::{Map, Value, json};

use super::shared::Shared;
use crate::app::url_list;
use crate::pidbox::clock_value;
use crate::protocol::value_repr;

/// The pool's name in `stats`: tasks are futures on the worker's tokio runtime.
const POOL_IMPLEMENTATION: &str = "celerity:tokio";

/// `stats`: what the worker ran (`total`, per task name), its process, uptime, pool,
/// broker connection, prefetch count and resource usage.
pub(super) fn stats(shared: &Shared) -> Value {
    let pool = &shared.pool;
    let prefetch_count = pool.window() + *shared.held.count().borrow();
    json!({
        "total": shared.state.totals(),
        "pid": std::process::id(),
        // `str(app.clock)`: Celery sends it as text.
        "clock": clock_value().to_string(),
        "uptime": shared.started.elapsed().as_secs(),
        "pool": {
            "implementation": POOL_IMPLEMENTATION,
            "max-concurrency": pool.concurrency(),
            // One process runs every task.
            "processes": [std::process::id()],
            "max-tasks-per-child": "N/A",
            "put-guarded-by-semaphore": false,
            // The worker-wide soft and hard time limits (`worker_task_soft_time_limit`,
            // `worker_task_time_limit`): Celerity has only each task's.
            "timeouts": [0, 0],
        },
        "broker": broker_info(&shared.client.broker().describe()),
        "prefetch_count": prefetch_count,
        "rusage": rusage().unwrap_or_else(|| Value::from("N/A")),
    })
}

/// kombu's `Connection.info()` of the broker `described` (a URL without its password,
/// as [`Broker::describe`](crate::broker::Broker::describe) gives it), key for key. What
/// the URL does not say is `null`.
fn broker_info(described: &str) -> Value {
    let urls = url_list(described);
    // A Sentinel broker describes itself as `sentinel://… (master mymaster)`.
    let url = urls[0].split(" (").next().unwrap_or_default();
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (credentials, location) = match rest.rsplit_once('@') {
        Some((credentials, location)) => (Some(credentials), location),
        None => (None, rest),
    };
    let user = credentials
        .and_then(|c| c.split(':').next())
        .filter(|u| !u.is_empty());
    let location = location.split(['?', '#']).next().unwrap_or_default();
    let (address, path) = location.split_once('/').unwrap_or((location, ""));
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse::<u16>().ok()),
        _ => (address, None),
    };
    let amqp = matches!(scheme, "amqp" | "amqps" | "pyamqp");
    let (transport, default_port) = match scheme {
        "redis" | "rediss" => ("redis", Some(6379)),
        "sentinel" => ("sentinel", Some(26379)),
        "amqp" | "pyamqp" => ("amqp", Some(5672)),
        "amqps" => ("amqp", Some(5671)),
        other => (other, None),
    };
    let virtual_host = if amqp {
        // `amqp://host//` and `amqp://host/%2f` are the vhost `/`, as is no path.
        match percent_decode(path) {
            vhost if vhost.is_empty() => "/".to_owned(),
            vhost => vhost,
        }
    } else if path.is_empty() {
        "0".to_owned()
    } else {
        path.to_owned()
    };
    let alternates: Vec<&str> = urls[1..].to_vec();
    json!({
        "hostname": host,
        "userid": user.or(amqp.then_some("guest")),
        "virtual_host": virtual_host,
        "port": port.or(default_port),
        "insist": false,
        "ssl": matches!(scheme, "rediss" | "amqps"),
        "transport": transport,
        "connect_timeout": null,
        "transport_options": {},
        "login_method": amqp.then_some("PLAIN"),
        "uri_prefix": null,
        "heartbeat": null,
        "failover_strategy": "round-robin",
        "alternates": alternates,
        "credential_provider": null,
    })
}

/// `%xx` escapes decoded, as a URL path's.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The process's resource usage as Celery's `WorkController.rusage()` reports
/// `getrusage(RUSAGE_SELF)`: times in seconds, the rest as counts (`maxrss` in KiB).
/// `None` where it is not read (Celery then says `N/A`).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn rusage() -> Option<Value> {
    /// `struct timeval` on 64-bit Linux.
    #[repr(C)]
    #[derive(Default)]
    struct Timeval {
        seconds: i64,
        micros: i64,
    }
    /// `struct rusage` on 64-bit Linux: two times and fourteen `long`s, then room for
    /// musl's reserved words (glibc's is the kernel's, without them).
    #[repr(C)]
    #[derive(Default)]
    struct Rusage {
        utime: Timeval,
        stime: Timeval,
        counts: [i64; 14],
        reserved: [i64; 16],
    }
    unsafe extern "C" {
        /// `int getrusage(int who, struct rusage *usage)`.
        fn getrusage(who: std::ffi::c_int, usage: *mut Rusage) -> std::ffi::c_int;
    }
    const RUSAGE_SELF: std::ffi::c_int = 0;
    let mut usage = Rusage::default();
    // SAFETY: `usage` is a valid, writable `struct rusage` (with room to spare) that
    // `getrusage` fills in; it keeps no pointer to it.
    if unsafe { getrusage(RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let seconds = |t: &Timeval| t.seconds as f64 + t.micros as f64 / 1e6;
    let names = [
        "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap", "inblock", "oublock",
        "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw",
    ];
    let mut report = Map::new();
    report.insert("utime".into(), seconds(&usage.utime).into());
    report.insert("stime".into(), seconds(&usage.stime).into());
    for (name, count) in names.into_iter().zip(usage.counts) {
        report.insert(name.into(), count.into());
    }
    Some(Value::Object(report))
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn rusage() -> Option<Value> {
    None
}

/// `conf`: the settings the worker runs with, under Celery's names (`app.conf.table()`),
/// the URLs without their passwords. Celery lists only the settings changed from its
/// defaults unless asked for all; a Celerity worker lists these whatever it is asked.
pub(super) fn conf(shared: &Shared) -> Value {
    json!({
        "broker_url": shared.client.broker().describe(),
        "result_backend": shared.client.backend().describe(),
        "worker_concurrency": shared.pool.concurrency(),
        "worker_prefetch_multiplier": shared.pool.multiplier(),
        "task_default_queue": "celery",
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_protocol": 2,
        "enable_utc": true,
        "timezone": "UTC",
        "control_exchange": "celery",
        "worker_enable_remote_control": true,
    })
}

/// `report`: `{"ok": text}`, the text laid out as Celery's `app.bugreport()`
/// (`celery/app/utils.py::bugreport`): software, platform, transport and results, then
/// the settings.
pub(super) fn report(shared: &Shared) -> Value {
    let settings = conf(shared);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let transport = broker_info(&shared.client.broker().describe())["transport"].clone();
    let mut text = format!(
        "\nsoftware -> celerity:{version} (rust)\n\
         platform -> system:{os} arch:{arch}\n            kernel version:{kernel} imp:Rust\n\
         settings -> transport:{transport} results:{results}\n\n",
        version = env!("CARGO_PKG_VERSION"),
        os = std::env::consts::OS,
        arch = std::env::consts::ARCH,
        transport = transport.as_str().unwrap_or_default(),
        results = shared.client.backend().describe(),
    );
    if let Value::Object(settings) = settings {
        for (name, value) in settings {
            text.push_str(&format!("{name}: {}\n", value_repr(&value)));
        }
    }
    json!({ "ok": text })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Connection.info()` of a Python Celery 5.7 worker on `redis://127.0.0.1:6379/14`,
    /// captured (`inspect stats`), less the values the URL does not carry.
    #[test]
    fn the_broker_reads_as_kombu_describes_its_connection() {
        let info = broker_info("redis://127.0.0.1:6379/14");
        let celery: Value = serde_json::from_str(
            r#"{"hostname": "127.0.0.1", "userid": null, "virtual_host": "14", "port": 6379, "insist": false, "ssl": false, "transport": "redis", "connect_timeout": 4, "transport_options": {}, "login_method": null, "uri_prefix": null, "heartbeat": 120.0, "failover_strategy": "round-robin", "alternates": [], "credential_provider": null}"#,
        )
        .unwrap();
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(&info),
            keys(&celery),
            "the same keys, in the same order"
        );
        for key in [
            "hostname",
            "userid",
            "virtual_host",
            "port",
            "ssl",
            "transport",
        ] {
            assert_eq!(info[key], celery[key], "{key}");
        }

        let amqp = broker_info("amqp://guest:**@rabbit:5672//");
        assert_eq!(
            (
                &amqp["hostname"],
                &amqp["userid"],
                &amqp["virtual_host"],
                &amqp["port"]
            ),
            (&json!("rabbit"), &json!("guest"), &json!("/"), &json!(5672))
        );
        assert_eq!(amqp["login_method"], "PLAIN");
        let vhost = broker_info("amqps://rabbit/orders%2Fprod");
        assert_eq!(vhost["virtual_host"], "orders/prod");
        assert_eq!(
            (&vhost["port"], &vhost["ssl"]),
            (&json!(5671), &json!(true))
        );
        let failover = broker_info("redis://a:6380/2;redis://b/2");
        assert_eq!(failover["port"], 6380);
        assert_eq!(failover["alternates"], json!(["redis://b/2"]));
        let sentinel = broker_info("sentinel://s1:26379/0 (master mymaster)");
        assert_eq!(sentinel["transport"], "sentinel");
        assert_eq!(sentinel["virtual_host"], "0");
    }

    #[test]
    fn settings_print_as_python_reprs() {
        assert_eq!(value_repr(&json!("redis://h/0")), "'redis://h/0'");
        assert_eq!(value_repr(&json!(true)), "True");
        assert_eq!(value_repr(&json!(["json"])), "['json']");
        assert_eq!(value_repr(&json!(4)), "4");
    }

    #[test]
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn resource_usage_has_celery_s_keys() {
        let usage = rusage().expect("getrusage answers on Linux");
        let keys: Vec<&str> = usage
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap",
                "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw"
            ]
        );
        assert!(usage["maxrss"].as_i64().unwrap() > 0, "{usage}");
        assert!(usage["utime"].as_f64().unwrap() >= 0.0);
    }
}
