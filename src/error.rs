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
    /// The disk (or quota) is full: the message says where and what to do.
    #[error("{0}")]
    NoSpace(String),
    /// The container's command could not be started: `code` is docker's exit status for it
    /// (127 not found, 126 not executable), which `nook run` exits with.
    #[error("{message}")]
    Exec { code: i32, message: String },
}

/// The gRPC metadata key carrying [`Error::Exec`]'s exit status to the client.
pub const EXIT_CODE_KEY: &str = "nook-exit-code";

/// Result with nook's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with what was being done (and to which path).
    ///
    /// A full disk becomes [`Error::NoSpace`], whose message tells how to make room.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        if is_no_space(&source) {
            return Error::no_space(&context);
        }
        Error::Io { context, source }
    }

    /// "no space left on device while `doing`: free disk space … and retry".
    pub fn no_space(doing: &str) -> Self {
        Error::NoSpace(format!(
            "no space left on device while {doing}: free disk space (nook system df, nook image prune, nook gc) and retry"
        ))
    }

    /// Whether this is a full disk.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::NoSpace(_))
    }
}

/// Whether an I/O error means the disk or the quota is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Whether `e` or an error in its source chain is a full disk.
fn chain_is_no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(io) = x.downcast_ref::<std::io::Error>() {
            if is_no_space(io) {
                return true;
            }
        }
        cur = x.source();
    }
    false
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
            Error::NoSpace(_) => tonic::Status::resource_exhausted(msg),
            Error::Exec { code, .. } => {
                let mut md = tonic::metadata::MetadataMap::new();
                if let Ok(v) = code.to_string().parse() {
                    md.insert(EXIT_CODE_KEY, v);
                }
                tonic::Status::with_metadata(tonic::Code::FailedPrecondition, msg, md)
            }
            Error::Metadata(_) | Error::Io { .. } | Error::Internal(_) => {
                tonic::Status::internal(msg)
            }
        }
    }
}

/// A metadata error; a full disk under the database says so.
fn metadata_error(e: &(dyn std::error::Error + 'static)) -> Error {
    let io = e.to_string();
    if chain_is_no_space(e) || io.contains("No space left on device") {
        Error::no_space("writing the metadata database")
    } else {
        Error::Metadata(io)
    }
}

macro_rules! redb_err {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self { metadata_error(&e) }
        }
    )*};
}
redb_err!(
    redb::Error,
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
