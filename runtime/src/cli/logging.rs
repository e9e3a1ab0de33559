//! Log output: one readable line per event for people, one JSON object per line for log
//! pipelines.
//!
//! Human lines follow Celery's worker log (`[time: LEVEL] message`); the worker's task
//! events already name their task (`Task tasks.ping[<id>] received`), and any other event
//! logged while a task runs is prefixed with it (`tasks.ping[<id>]: …`), as Celery's task
//! logger does. JSON lines carry every field at the top level, plus the running task's
//! span under `span`.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Registry};

use crate::error::{Error, ErrorKind, Result};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines, as Celery's worker writes them.
    Human,
    /// One JSON object per line, every field at the top level.
    Json,
}

/// A subscriber writing `format` lines to `writer`, keeping events that `filter` (a level
/// such as `info`, or `tracing` directives such as `info,my_app=debug`) lets through.
pub fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Result<Box<dyn Subscriber + Send + Sync>>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder().parse(filter).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("invalid log level `{filter}`: {e}"),
        )
    })?;
    let registry = Registry::default().with(filter);
    Ok(match format {
        LogFormat::Human => Box::new(
            registry.with(TaskLabels).with(
                tracing_subscriber::fmt::layer()
                    .event_format(HumanFormat)
                    .with_writer(writer),
            ),
        ),
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            ),
        ),
    })
}

/// `tasks.ping[<id>]`, kept on each of the worker's `task` spans for the human format.
struct TaskLabel(String);

/// Records a [`TaskLabel`] on every `task` span the worker opens.
struct TaskLabels;

impl<S> Layer<S> for TaskLabels
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let metadata = attrs.metadata();
        if metadata.name() != "task" || !metadata.target().starts_with("celerity") {
            return;
        }
        let mut fields = EventFields::default();
        attrs.record(&mut fields);
        if let (Some(task), Some(task_id), Some(span)) = (fields.task, fields.id, ctx.span(id)) {
            span.extensions_mut()
                .insert(TaskLabel(format!("{task}[{task_id}]")));
        }
    }
}

/// The human line: `[time: LEVEL] message field=value …`.
struct HumanFormat;

impl<S, N> FormatEvent<S, N> for HumanFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S,%3f");
        write!(writer, "[{now}: {}] ", event.metadata().level())?;
        let mut fields = EventFields::default();
        event.record(&mut fields);
        if fields.task.is_some() {
            // A task lifecycle event: its message says it all, its fields are for JSON.
            return writeln!(writer, "{}", fields.message);
        }
        let label = ctx.event_scope().and_then(|scope| {
            scope
                .from_root()
                .filter_map(|span| span.extensions().get::<TaskLabel>().map(|l| l.0.clone()))
                .last()
        });
        if let Some(label) = label {
            write!(writer, "{label}: ")?;
        }
        writeln!(writer, "{}{}", fields.message, fields.rest)
    }
}

/// An event's message, its `task` and `id` fields, and the rest as ` name=value` pairs.
#[derive(Default)]
struct EventFields {
    message: String,
    task: Option<String>,
    id: Option<String>,
    rest: String,
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "task" => self.task = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            name if value.contains(char::is_whitespace) || value.is_empty() => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "task" => self.task = Some(format!("{value:?}")),
            "id" => self.id = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}
