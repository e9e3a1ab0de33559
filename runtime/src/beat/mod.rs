//! Periodic tasks (Celery beat): the schedules a schema declares, and the scheduler that
//! sends their runs as ordinary task messages.

mod crontab;
mod schedule;

pub use crontab::Crontab;
pub use schedule::{Recurrence, Schedule};
