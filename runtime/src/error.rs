//! The runtime's error type.

use std::fmt;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The broker could not be reached or refused an operation.
    Broker,
    /// The result backend could not be reached or refused an operation.
    Backend,
    /// A value could not be encoded for the wire.
    Encode,
    /// A message or result could not be decoded.
    Decode,
    /// Configuration is invalid (a bad URL, an unknown scheme).
    Config,
    /// A URL names a transport this build leaves out: the message names the cargo feature
    /// of celerity-runtime that compiles it.
    MissingFeature,
    /// The dependency container could not build a component.
    Container,
    /// An operation did not finish in time.
    Timeout,
    /// The worker or client has been shut down.
    Closed,
    /// The broker or result backend cannot do what was asked: a chord on a backend that
    /// cannot count its parts (`rpc://`), as Celery refuses it.
    Unsupported,
}

/// An error from the Celerity runtime.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error of `kind` described by `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// Result type of the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;
