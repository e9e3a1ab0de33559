//! Python Celery from the Rust tests: finding an interpreter that has it, running a
//! Python worker of `tests/python/interop_app.py`, sending tasks through
//! `tests/python/drive.py`, and running Celery's command line.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::transport::Transport;

/// How long a Python worker may take to say it is ready (imports are slow on a busy CI
/// machine).
const WORKER_START: Duration = Duration::from_secs(60);

/// A Python interpreter that can import `celery`.
#[derive(Debug, Clone)]
pub struct Python {
    interpreter: PathBuf,
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn app_dir() -> PathBuf {
    workspace().join("tests/python")
}

impl Python {
    /// `CELERITY_PYTHON`, else the workspace's `.venv/bin/python`, if it imports
    /// Celery; otherwise `None` after a skip that says why.
    pub fn find() -> Option<Python> {
        let interpreter = crate::support::python_with_celery()?;
        Some(Python { interpreter })
    }

    /// A command running this interpreter in `tests/python`, configured for `transport`
    /// and `queue`.
    pub(super) fn command(&self, transport: &Transport, queue: &str) -> Command {
        let mut command = Command::new(&self.interpreter);
        command
            .current_dir(app_dir())
            .env("CELERITY_INTEROP_BROKER", &transport.broker)
            .env("CELERITY_INTEROP_BACKEND", &transport.backend)
            .env("CELERITY_INTEROP_QUEUE", queue)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1");
        command
    }

    /// Starts a Python Celery worker consuming `queue`, and waits until it is ready.
    pub async fn worker(&self, transport: &Transport, queue: &str) -> PythonWorker {
        self.worker_with(
            "interop_app",
            None,
            transport,
            queue,
            &["--without-heartbeat"],
        )
        .await
    }

    /// Starts a Python Celery worker consuming `queue` that sends heartbeats and task
    /// events (`-E`), as a monitored worker does, and waits until it is ready.
    pub async fn worker_sending_events(&self, transport: &Transport, queue: &str) -> PythonWorker {
        self.worker_with("interop_app", None, transport, queue, &["-E"])
            .await
    }

    /// Starts a Python Celery worker of the app module `app` of `tests/python` consuming
    /// `queue`, with the modules of `modules` importable too, and waits until it is ready.
    pub async fn worker_of(
        &self,
        app: &str,
        modules: Option<&Path>,
        transport: &Transport,
        queue: &str,
    ) -> PythonWorker {
        self.worker_with(app, modules, transport, queue, &["--without-heartbeat"])
            .await
    }

    /// Starts a Python Celery worker of `app` consuming `queue`, without gossip and
    /// mingle, with `flags` besides.
    async fn worker_with(
        &self,
        app: &str,
        modules: Option<&Path>,
        transport: &Transport,
        queue: &str,
        flags: &[&str],
    ) -> PythonWorker {
        let node = format!("py-{}@%h", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut command = self.command(transport, queue);
        if let Some(modules) = modules {
            command.env("PYTHONPATH", modules);
        }
        command
            .args(["-m", "celery", "-A", app, "worker", "--pool", "threads"])
            .args([
                "--concurrency",
                "4",
                "--loglevel",
                "INFO",
                "--queues",
                queue,
            ])
            .args(["--hostname", &node])
            .args(["--without-gossip", "--without-mingle"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let name = transport.name;
        tokio::task::spawn_blocking(move || PythonWorker::start(command, name))
            .await
            .expect("the Python worker's start-up thread")
    }

    /// Sends `calls` from Python (`drive.py`) with `queue` as the default queue, waits
    /// until every result is ready (at most `timeout`), and returns what Python observed,
    /// by call name.
    pub async fn drive(
        &self,
        transport: &Transport,
        queue: &str,
        calls: &[Call],
        timeout: Duration,
    ) -> Observations {
        let calls: Vec<Value> = calls.iter().map(Call::to_json).collect();
        let plan = json!({"timeout": timeout.as_secs_f64(), "calls": calls});
        let mut command = self.command(transport, queue);
        command.arg("drive.py");
        let output = tokio::task::spawn_blocking(move || run(command, &plan.to_string()))
            .await
            .expect("the driver thread");
        let report: Value = serde_json::from_str(&output).unwrap_or_else(|e| {
            panic!("drive.py printed something that is not JSON ({e}):\n{output}")
        });
        let calls = report["calls"]
            .as_array()
            .unwrap_or_else(|| panic!("drive.py's report has no calls:\n{output}"));
        Observations {
            calls: calls
                .iter()
                .map(|call| (text(&call["name"]), Observed::from_json(call)))
                .collect(),
        }
    }

    /// Runs `steps` of Celery's inspect and control commands (`control.py`), each sent to
    /// the nodes in `destination` and awaiting their answers, and returns every step's
    /// answers by step name: `{"<step>": {"<node>": <answer>}}`.
    pub async fn control(
        &self,
        transport: &Transport,
        destination: &[&str],
        steps: Value,
    ) -> Value {
        let plan = json!({"timeout": 5, "destination": destination, "steps": steps});
        let mut command = self.command(transport, "celery");
        command.arg("control.py");
        let output = tokio::task::spawn_blocking(move || run(command, &plan.to_string()))
            .await
            .expect("the control thread");
        serde_json::from_str(&output).unwrap_or_else(|e| {
            panic!("control.py printed something that is not JSON ({e}):\n{output}")
        })
    }

    /// Runs the script `script` of `tests/python`, with the modules of `modules`
    /// importable, and returns its standard output; panics with its output if it fails.
    pub async fn script(
        &self,
        script: &str,
        modules: &Path,
        transport: &Transport,
        queue: &str,
    ) -> String {
        let mut command = self.command(transport, queue);
        command.env("PYTHONPATH", modules).arg(script);
        tokio::task::spawn_blocking(move || run(command, ""))
            .await
            .expect("the script's thread")
    }

    /// Runs Celery's command line (`celery -A interop_app <args>`) and returns its
    /// standard output.
    pub async fn celery(&self, transport: &Transport, args: &[&str]) -> String {
        let mut command = self.command(transport, "celery");
        command
            .args(["-m", "celery", "-A", "interop_app"])
            .args(args);
        tokio::task::spawn_blocking(move || run(command, ""))
            .await
            .expect("the celery command's thread")
    }
}

/// Runs `command` with `input` on stdin; its stdout, or a panic showing stderr.
fn run(mut command: Command, input: &str) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .expect("writing to Python");
    }
    let output = child.wait_with_output().expect("Python's output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

/// A Python Celery worker process, stopped (warm shutdown) when dropped.
pub struct PythonWorker {
    child: Child,
    log: Arc<Mutex<String>>,
    /// Its node name, e.g. `py-1a2b3c4d@host`.
    pub node: String,
}

impl PythonWorker {
    fn start(mut command: Command, transport: &str) -> PythonWorker {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start a Python worker ({command:?}): {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready) = mpsc::channel();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("piped stdout")),
            Box::new(child.stderr.take().expect("piped stderr")),
        ];
        for stream in streams {
            let log = log.clone();
            let ready_tx = ready_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    // Celery logs `<node> ready.` once it consumes (celery/apps/worker.py).
                    if let Some(node) = line.strip_suffix(" ready.") {
                        let node = node.rsplit(' ').next().unwrap_or(node).to_owned();
                        let _ = ready_tx.send(node);
                    }
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        // Made first, so that a worker that does not start is stopped as it is dropped.
        let mut worker = PythonWorker {
            child,
            log,
            node: String::new(),
        };
        let what = format!("the Python worker on {transport}");
        worker.node = wait_until_ready(&mut worker.child, &ready, &worker.log, WORKER_START, &what);
        worker
    }

    /// Everything the worker printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- Python worker {} log ---\n{}", self.node, self.log());
        }
        // SIGTERM is Celery's warm shutdown: it returns prefetched messages to the broker
        // within milliseconds. On AMQP the process then lingers for about ten seconds
        // before it exits, with nothing left to do, so it is killed after a short wait.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `ready` receives once the process `child` (named by `what`) says it is ready,
/// waiting at most `within`; a panic showing `log` if it exits first or takes longer.
pub(super) fn wait_until_ready<T>(
    child: &mut Child,
    ready: &mpsc::Receiver<T>,
    log: &Mutex<String>,
    within: Duration,
    what: &str,
) -> T {
    let log = || log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(said) = ready.recv_timeout(Duration::from_millis(100)) {
            return said;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before it was ready:\n{}", log());
        }
    }
    panic!("{what} was not ready within {within:?}:\n{}", log());
}

/// One call `drive.py` makes.
#[derive(Debug, Clone)]
pub struct Call {
    name: String,
    task: String,
    via: &'static str,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    options: Map<String, Value>,
    revoke: bool,
    /// Revoked with `terminate=True` once it is STARTED.
    terminate: bool,
    /// The steps of a chain: `{"task", "args", "immutable", "options"}`.
    steps: Vec<Value>,
    /// The workflow of a canvas call (see [`Call::canvas`]).
    canvas: Value,
    /// The group a `restore_group` call reads.
    group_id: Option<String>,
}

impl Call {
    /// `app.send_task(task, ...)`, reported as `name`.
    pub fn send_task(name: &str, task: &str) -> Call {
        Call {
            name: name.to_owned(),
            task: task.to_owned(),
            via: "send_task",
            args: Vec::new(),
            kwargs: Map::new(),
            options: Map::new(),
            revoke: false,
            terminate: false,
            steps: Vec::new(),
            canvas: Value::Null,
            group_id: None,
        }
    }

    /// `<the Python task object>.apply_async(...)`, reported as `name`.
    pub fn apply_async(name: &str, task: &str) -> Call {
        Call {
            via: "apply_async",
            ..Call::send_task(name, task)
        }
    }

    /// `chain(*steps).apply_async()`, reported as `name`; each step is
    /// `{"task", "args", "immutable", "options"}` and gets the call's options under its own.
    pub fn chain(name: &str, steps: Value) -> Call {
        let Value::Array(steps) = steps else {
            panic!("steps must be an array")
        };
        Call {
            via: "chain",
            steps,
            ..Call::send_task(name, "celery.chain")
        }
    }

    /// The workflow `canvas` sent from Python, reported as `name`. Its nodes are task
    /// signatures `{"task", "args", "kwargs", "immutable", "options"}`, `{"chain": [..]}`,
    /// `{"group": [..]}` and `{"chord": [..header], "body": ..}`; a top-level group is sent
    /// as `group(...)()` (its result is the list of values), a top-level chord as
    /// `chord(header)(body)`. Every task gets the call's options under its own.
    pub fn canvas(name: &str, canvas: Value) -> Call {
        Call {
            via: "canvas",
            canvas,
            ..Call::send_task(name, "celery.canvas")
        }
    }

    /// Python's `GroupResult.restore(group_id)`, reported as `name`: its result is the
    /// restored group's `get()`.
    pub fn restore_group(name: &str, group_id: &str) -> Call {
        Call {
            via: "restore_group",
            group_id: Some(group_id.to_owned()),
            ..Call::send_task(name, "celery.group")
        }
    }

    /// Positional arguments (a JSON array). `{"$date": …}` and `{"$datetime": …}` are
    /// sent as Python `date` and `datetime` objects.
    pub fn args(mut self, args: Value) -> Call {
        let Value::Array(args) = args else {
            panic!("args must be an array")
        };
        self.args = args;
        self
    }

    /// Keyword arguments (a JSON object).
    pub fn kwargs(mut self, kwargs: Value) -> Call {
        let Value::Object(kwargs) = kwargs else {
            panic!("kwargs must be an object")
        };
        self.kwargs = kwargs;
        self
    }

    /// An `apply_async` / `send_task` option: `countdown`, `expires`, `priority`, `queue`.
    pub fn option(mut self, key: &str, value: Value) -> Call {
        self.options.insert(key.to_owned(), value);
        self
    }

    /// Revokes the task right after sending it (`AsyncResult.revoke()`).
    pub fn revoke(mut self) -> Call {
        self.revoke = true;
        self
    }

    /// Revokes the task with `terminate=True` (`AsyncResult.revoke(terminate=True)`) once
    /// Python sees it STARTED: the worker running it stops it. The task must track its
    /// start.
    pub fn terminate_when_started(mut self) -> Call {
        self.terminate = true;
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name, "task": self.task, "via": self.via,
            "args": self.args, "kwargs": self.kwargs, "options": self.options,
            "revoke": self.revoke, "terminate": self.terminate, "steps": self.steps, "canvas": self.canvas,
            "group_id": self.group_id,
        })
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// What Python saw of one call.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The task id.
    pub id: String,
    /// When Python sent it (ISO 8601).
    pub sent_at: String,
    /// The distinct states `AsyncResult.state` went through, in order.
    pub states: Vec<String>,
    /// What `AsyncResult.get()` returned (dates tagged as in `drive.py`)...
    pub result: Option<Value>,
    /// ...or raised.
    pub exception: Option<PythonException>,
    /// What the `AsyncResult` read of the stored result besides its value: `traceback`,
    /// the extended fields (`name`, `args`, `kwargs`, `worker`, `retries`, `queue`),
    /// `group_id` and `parent_id`, and `parent` (the id of `AsyncResult.parent`); `null`
    /// for a group.
    pub meta: Value,
}

impl Observed {
    fn from_json(call: &Value) -> Observed {
        let exception = call.get("exception").map(|exc| PythonException {
            type_name: text(&exc["type"]),
            module: text(&exc["module"]),
            message: text(&exc["message"]),
            args: exc["args"].as_array().cloned().unwrap_or_default(),
            is_value_error: exc["is_value_error"] == Value::Bool(true),
        });
        Observed {
            id: text(&call["id"]),
            sent_at: text(&call["sent_at"]),
            states: call["states"]
                .as_array()
                .map(|states| states.iter().map(text).collect())
                .unwrap_or_default(),
            result: call.get("result").cloned(),
            exception,
            meta: call.get("meta").cloned().unwrap_or_default(),
        }
    }
}

/// An exception raised in Python by `AsyncResult.get()`.
#[derive(Debug, Clone)]
pub struct PythonException {
    /// `type(exc).__name__`.
    pub type_name: String,
    /// `type(exc).__module__`.
    pub module: String,
    /// `str(exc)`.
    pub message: String,
    /// `exc.args`.
    pub args: Vec<Value>,
    /// `isinstance(exc, ValueError)`.
    pub is_value_error: bool,
}

/// Every call's observation, by name.
#[derive(Debug)]
pub struct Observations {
    calls: BTreeMap<String, Observed>,
}

impl Observations {
    /// The observation of call `name`.
    pub fn get(&self, name: &str) -> &Observed {
        self.calls
            .get(name)
            .unwrap_or_else(|| panic!("no call named {name} in {:#?}", self.calls))
    }

    /// What call `name` returned; panics with what Python saw if it raised.
    pub fn result(&self, name: &str) -> &Value {
        let call = self.get(name);
        call.result
            .as_ref()
            .unwrap_or_else(|| panic!("{name} did not return a value: {call:#?}"))
    }

    /// What call `name` raised; panics with what Python saw if it returned.
    pub fn exception(&self, name: &str) -> &PythonException {
        let call = self.get(name);
        call.exception
            .as_ref()
            .unwrap_or_else(|| panic!("{name} did not raise: {call:#?}"))
    }

    /// Every observation.
    pub fn all(&self) -> impl Iterator<Item = &Observed> {
        self.calls.values()
    }
}

/// A Flower server (`celery -A interop_app flower`) on a loopback port, killed when
/// dropped.
pub struct Flower {
    child: Child,
    log: Arc<Mutex<String>>,
    /// `127.0.0.1:<port>`.
    pub address: String,
}

impl Python {
    /// Starts Flower against `transport`'s broker on a free loopback port, its HTTP API
    /// open (`FLOWER_UNAUTHENTICATED_API`), and waits until it answers; `None` after a
    /// skip when Flower is not installed.
    pub async fn flower(&self, transport: &Transport) -> Option<Flower> {
        let imports = Command::new(&self.interpreter)
            .args(["-c", "import flower"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !imports {
            return crate::support::skip(format!(
                "Flower is not importable from {} (pip install 'flower>=2,<3')",
                self.interpreter.display()
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut command = self.command(transport, "celery");
        command
            .args(["-m", "celery", "-A", "interop_app", "flower"])
            .args(["--address=127.0.0.1", &format!("--port={port}")])
            .env("FLOWER_UNAUTHENTICATED_API", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Flower ({command:?}): {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("piped stdout")),
            Box::new(child.stderr.take().expect("piped stderr")),
        ];
        for stream in streams {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut flower = Flower {
            child,
            log,
            address: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + WORKER_START;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&flower.address).is_ok() {
                return Some(flower);
            }
            if let Ok(Some(status)) = flower.child.try_wait() {
                panic!(
                    "Flower exited ({status}) before it answered:\n{}",
                    flower.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "Flower did not answer within {WORKER_START:?}:\n{}",
            flower.log()
        );
    }
}

impl Flower {
    /// Everything Flower printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `GET path`: the status and the body read as JSON (`null` when it is not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, "").await
    }

    /// `POST path` with a form body: the status and the body read as JSON.
    pub async fn post(&self, path: &str, form: &str) -> (u16, Value) {
        self.request("POST", path, form).await
    }

    async fn request(&self, method: &str, path: &str, form: &str) -> (u16, Value) {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            self.address,
            form.len()
        );
        let address = self.address.clone();
        let response = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(&address).expect("Flower accepts");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream.write_all(request.as_bytes()).expect("a request");
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response);
            String::from_utf8_lossy(&response).into_owned()
        })
        .await
        .expect("the request's thread");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response from Flower: {response:?}"));
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            unchunk(body)
        } else {
            body.to_owned()
        };
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

/// The body of a chunked HTTP response.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Flower {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- Flower log ---\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
