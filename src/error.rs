//! Error codes shared by every domain.
//!
//! Each domain has its own `thiserror` enum; all of them implement [`Coded`], which is the one
//! thing the binding layer needs to turn a Rust error into the matching JS error class. The code
//! strings are public API: JS callers branch on them.

use std::io;

use serde_json::{Map, Value};

/// A stable error code. Each one maps to exactly one JS error class in `index.js`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    ModelNotFound,
    DownloadFailed,
    ChecksumError,
    InsufficientResources,
    ServerError,
    PortInUse,
    BinaryError,
    FileSystemError,
    InvalidArgument,
    Cancelled,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::ModelNotFound,
        ErrorCode::DownloadFailed,
        ErrorCode::ChecksumError,
        ErrorCode::InsufficientResources,
        ErrorCode::ServerError,
        ErrorCode::PortInUse,
        ErrorCode::BinaryError,
        ErrorCode::FileSystemError,
        ErrorCode::InvalidArgument,
        ErrorCode::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ModelNotFound => "MODEL_NOT_FOUND",
            ErrorCode::DownloadFailed => "DOWNLOAD_FAILED",
            ErrorCode::ChecksumError => "CHECKSUM_ERROR",
            ErrorCode::InsufficientResources => "INSUFFICIENT_RESOURCES",
            ErrorCode::ServerError => "SERVER_ERROR",
            ErrorCode::PortInUse => "PORT_IN_USE",
            ErrorCode::BinaryError => "BINARY_ERROR",
            ErrorCode::FileSystemError => "FILE_SYSTEM_ERROR",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Cancelled => "CANCELLED",
        }
    }
}

/// What a domain error tells its caller beyond its message.
pub trait Coded: std::error::Error {
    fn code(&self) -> ErrorCode;

    /// One sentence on what the user can do about it.
    fn suggestion(&self) -> Option<String> {
        None
    }

    /// Structured facts (paths, sizes, ports) for programs that handle the error.
    fn details(&self) -> Map<String, Value> {
        Map::new()
    }
}

/// A suggestion for an I/O failure, chosen by what the OS said went wrong.
pub fn io_suggestion(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            "Choose a writable folder with configure({ dataDir }) or GENAI_ELECTRON_DATA_DIR"
        }
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "Free some disk space and try again"
        }
        io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists => {
            "A file stands where a folder is needed: move it away or pick another dataDir"
        }
        io::ErrorKind::NotFound => "Check that the path exists",
        _ => "Check the path, its permissions and the free disk space",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_screaming_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{s}");
        }
    }

    #[test]
    fn io_suggestions_depend_on_the_failure() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let full = io::Error::from(io::ErrorKind::StorageFull);
        assert!(io_suggestion(&denied).contains("writable"));
        assert!(io_suggestion(&full).contains("disk space"));
    }
}
