//! Periodic tasks (Celery beat): the schedules a schema declares, and the scheduler that
//! sends their runs as ordinary task messages.
//!
//! A schema's `schedules:` block becomes the generated `SCHEDULES` table. A [`Beat`] sends
//! each run of those schedules as the message the generated client sends for the task,
//! with Celery beat's headers (`celery_beat_task`, and `periodic_task_name`, the name
//! django-celery-beat gives it) and the run's scheduled time ([`RUN_HEADER`]), so that a Python Celery worker runs it as readily as a
//! Celerity one. The worker program runs it inside a worker (`--beat`, Celery's
//! `worker -B`) or on its own (its `beat` command).
//!
//! # Replicas, and what is guaranteed
//!
//! Any number of schedulers of one group may run; one sends. On Redis (the broker's, else
//! the result backend's) they share a lease (`SET NX PX`, renewed every third of it by a
//! script that checks its token) and a record of the last run claimed of each schedule.
//! Every run is **claimed before it is sent**, by a script that checks the lease token and
//! records the run in one step, and is refused for a run no later than the last claimed.
//!
//! - **No run is sent twice**, whatever dies or pauses and whenever the lease changes
//!   hands: a scheduler that lost the lease (expired while it was paused, or while it was
//!   cut off from Redis) can claim nothing, and the next holder sees every run claimed
//!   before. Task ids are made from the run, so the same run always has the same id.
//! - **A run can be lost**: a scheduler that dies between a claim and its send loses that
//!   run; a publish that fails after the claim is logged, not retried.
//! - **After the leader dies**, another takes over when its lease expires (at most the
//!   lease, default 10 s), and sends the latest run missed meanwhile once (below).
//! - **Under a network partition**, a scheduler cut off from Redis stops sending when its
//!   lease would have expired (it cannot claim before that either); schedulers on Redis's
//!   side take over. Clocks need not agree: the lease expiry is Redis's, and a run earlier
//!   than the last claimed is refused whoever's clock computed it.
//!
//! On RabbitMQ alone (an AMQP broker and no Redis result backend) the lease is a
//! single-active-consumer queue, which RabbitMQ hands to another consumer as soon as the
//! holder's connection closes, and the record is one message the holder replaces in a
//! transaction on that same channel, so the same rules hold: a claim commits only while
//! its scheduler leads. A leader that dies is replaced at once; one cut off from RabbitMQ
//! when RabbitMQ closes its connection for missed heartbeats.
//!
//! Without either (a `memory://` broker) a scheduler runs alone and keeps its record in a
//! local file (`celerity-beat.json`, like Celery beat's `celerybeat-schedule`): run one
//! per file.
//!
//! # Missed runs
//!
//! As in Celery beat: runs missed while no scheduler was sending (all down, or a leader
//! taking over) are sent **once**, the latest of them, as soon as a scheduler leads again;
//! not once per missed run. A schedule never run before starts with its next run.

mod crontab;
pub(crate) mod lease;
mod schedule;
mod scheduler;

pub use crontab::Crontab;
pub use schedule::{Recurrence, Schedule};
pub use scheduler::{
    Beat, BeatHandle, BeatSettings, DEFAULT_GROUP, DEFAULT_LEASE, DEFAULT_STATE_FILE, RUN_HEADER,
    run_id,
};
