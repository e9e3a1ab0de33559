//! The command line.

const USAGE: &str = "\
usage: cargo run --release --example bench -- [options]

  --brokers LIST            memory,redis,amqp (default: every reachable one)
  --tasks N                 end-to-end tasks per broker (default 100000)
  --publish-tasks N         tasks per publish-rate loop (default 20000; a loop stops at 10 s)
  --latency-samples N       sequential round trips (default 2000)
  --concurrency N           the Celerity worker's concurrency (default: its own)
  --task-events             the Celerity worker of the end-to-end rows sends task events
                            (Celery's -E; off by default, as in Celery)
  --publishers N            concurrent batch senders in the end-to-end run (default 4)
  --python / --no-python    run Python Celery too (default: when a Python with Celery is found)
  --python-tasks N          end-to-end tasks for Python (default 10000)
  --python-publish-tasks N  tasks per Python publish-rate loop (default 10000; 10 s at most)
  --python-latency-samples N  Python round trips (default 1000)
  --held-tasks N            tasks held for a one-hour countdown, Redis (default 100000;
                            the worker's --max-held-eta is raised to N so it holds all)
  --python-held-tasks N     the same for Python (default 20000)
  --no-held                 skip the held-task memory rows
  --chord-tasks N           header tasks of the chord row, Redis, both sides (default 10000)
  --no-chord                skip the chord rows
  --no-generator            skip timing the generator
  --worker-prefix CMD       run the worker process under CMD, e.g. 'perf record -g --'
                            (its memory figures are then CMD's)

environment: CELERITY_BENCH_REDIS_URL (default redis://127.0.0.1:6379/12),
             CELERITY_BENCH_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f),
             CELERITY_PYTHON (default ./.venv/bin/python)
The RabbitMQ rows keep results in Redis, as Celery deployments on RabbitMQ commonly do.";

/// A broker the benchmark measures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Memory,
    Redis,
    Amqp,
}

impl Broker {
    /// The name in `--brokers` and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Broker::Memory => "memory",
            Broker::Redis => "redis",
            Broker::Amqp => "amqp",
        }
    }
}

/// What to measure and how much: the flags and `CELERITY_BENCH_*` variables of [`USAGE`].
pub struct Options {
    pub brokers: Option<Vec<Broker>>,
    pub tasks: usize,
    pub publish_tasks: usize,
    pub latency_samples: usize,
    pub concurrency: Option<usize>,
    pub task_events: bool,
    pub publishers: usize,
    pub python: Option<bool>,
    pub python_tasks: usize,
    pub python_publish_tasks: usize,
    pub python_latency_samples: usize,
    pub held: bool,
    pub held_tasks: usize,
    pub python_held_tasks: usize,
    pub chord: bool,
    pub chord_tasks: usize,
    pub generator: bool,
    pub worker_prefix: Option<String>,
    pub redis_url: String,
    pub amqp_url: String,
}

impl Options {
    /// Reads the flags; `None` for `--help`, which prints the usage.
    pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let env =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        let mut options = Options {
            brokers: None,
            tasks: 100_000,
            publish_tasks: 20_000,
            latency_samples: 2_000,
            concurrency: None,
            task_events: false,
            publishers: 4,
            python: None,
            python_tasks: 10_000,
            python_publish_tasks: 10_000,
            python_latency_samples: 1_000,
            held: true,
            held_tasks: 100_000,
            python_held_tasks: 20_000,
            chord: true,
            chord_tasks: 10_000,
            generator: true,
            worker_prefix: None,
            redis_url: env("CELERITY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
            amqp_url: env(
                "CELERITY_BENCH_AMQP_URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--tasks" => options.tasks = positive(flag, value()?)?,
                "--publish-tasks" => options.publish_tasks = positive(flag, value()?)?,
                "--latency-samples" => options.latency_samples = positive(flag, value()?)?,
                "--concurrency" => options.concurrency = Some(positive(flag, value()?)?),
                "--publishers" => options.publishers = positive(flag, value()?)?,
                "--python-tasks" => options.python_tasks = positive(flag, value()?)?,
                "--python-publish-tasks" => {
                    options.python_publish_tasks = positive(flag, value()?)?
                }
                "--python-latency-samples" => {
                    options.python_latency_samples = positive(flag, value()?)?
                }
                "--task-events" => options.task_events = true,
                "--python" => options.python = Some(true),
                "--no-python" => options.python = Some(false),
                "--no-generator" => options.generator = false,
                "--no-held" => options.held = false,
                "--held-tasks" => options.held_tasks = positive(flag, value()?)?,
                "--python-held-tasks" => options.python_held_tasks = positive(flag, value()?)?,
                "--no-chord" => options.chord = false,
                "--chord-tasks" => options.chord_tasks = positive(flag, value()?)?,
                "--worker-prefix" => options.worker_prefix = Some(value()?.clone()),
                "--brokers" => {
                    let list = value()?;
                    let brokers = list
                        .split(',')
                        .map(|name| match name.trim() {
                            "memory" => Ok(Broker::Memory),
                            "redis" => Ok(Broker::Redis),
                            "amqp" | "rabbitmq" => Ok(Broker::Amqp),
                            other => Err(format!("unknown broker `{other}` (memory, redis, amqp)")),
                        })
                        .collect::<Result<_, _>>()?;
                    options.brokers = Some(brokers);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                other => return Err(format!("unknown option `{other}`\n\n{USAGE}")),
            }
        }
        Ok(Some(options))
    }

    /// The URL the broker is reached at.
    pub fn broker_url(&self, broker: Broker) -> &str {
        match broker {
            Broker::Memory => "memory://",
            Broker::Redis => &self.redis_url,
            Broker::Amqp => &self.amqp_url,
        }
    }
}

/// A positive whole number; `_` and `,` may group digits (`100_000`, `100,000`).
fn positive(flag: &str, text: &str) -> Result<usize, String> {
    match text.replace(['_', ','], "").parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag}: `{text}` is not a positive whole number")),
    }
}
