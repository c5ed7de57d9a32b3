//! nook's error type. Each variant maps to one gRPC code, and every message is a single line
//! that says what is wrong and, where there is one, what to do about it.

use thiserror::Error;

/// Errors of every subsystem.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("config: {0}")]
    Config(String),
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

/// Result with nook's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with what was being done (and to which path).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to I/O results: `fs::read(p).ctx(|| format!("reading {}", p.display()))`.
pub trait IoContext<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::AlreadyExists(_) => tonic::Status::already_exists(msg),
            Error::InvalidArgument(_) | Error::Config(_) => tonic::Status::invalid_argument(msg),
            Error::Precondition(_) => tonic::Status::failed_precondition(msg),
            Error::Unavailable(_) => tonic::Status::unavailable(msg),
            Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                tonic::Status::not_found(msg)
            }
            Error::Metadata(_) | Error::Io { .. } | Error::Internal(_) => {
                tonic::Status::internal(msg)
            }
        }
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Metadata(e.to_string())
    }
}

macro_rules! redb_err {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self { Error::Metadata(e.to_string()) }
        }
    )*};
}
redb_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("encoding: {e}"))
    }
}
