//! Celery's canvas as it travels in messages: signatures, and the links a finished task
//! follows (`callbacks`, `errbacks` and the reversed `chain` of the body's embed).
//!
//! A Celerity worker runs the workflows a Python client builds: after a task succeeds it
//! sends its link callbacks and the next chain step with the result prepended to their
//! arguments; after it fails for good it marks the rest of the chain failed and sends its
//! errbacks, as `celery/app/trace.py` and `celery/backends/base.py` do. A group among
//! them sends each of its tasks; a chord or nested chain is not applied yet: the task that
//! would send it fails saying so.

mod apply;
mod result;
mod signature;
mod typed;

pub(crate) use apply::{Applier, Context, freeze};
pub use result::{FromFrozen, GroupResult};
pub use signature::Signature;
pub use typed::{
    Canvas, Chain, Chord, Errback, Follows, Group, Sig, Takes, arg, chain, chord, group,
};
