//! Error codes shared by every domain, by the JS layer and by our HTTP servers.
//!
//! Each domain has its own `thiserror` enum; all of them implement [`Coded`], which is the one
//! thing the binding layer needs to turn a Rust error into the matching JS error class. The codes
//! are public API (JS callers and HTTP clients branch on them), listed once in
//! `lib/error-codes.json` with their class and HTTP status; `lib/errors.js` reads that table and
//! a test here checks that [`ErrorCode`] says the same.

use std::io;

use serde_json::{Map, Value};

/// Declares [`ErrorCode`]: each code's string, its JS error class, its HTTP status and, where
/// our HTTP bodies name it otherwise, that name, as `lib/error-codes.json` has them (a test
/// keeps the two equal).
macro_rules! error_codes {
    (@http $code:literal) => { $code };
    (@http $code:literal $http:literal) => { $http };
    ($($variant:ident = ($code:literal, $class:literal, $status:literal $(, http = $http:literal)?),)+) => {
        /// Every error code, one for each distinct failure (see {@link ERROR_CODES}): the same code
        /// names the failure in a rejected promise and in our HTTP servers' error bodies.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, ts_rs::TS)]
        pub enum ErrorCode {
            $(#[serde(rename = $code)] $variant,)+
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// The JS error class (`index.d.ts`) that carries this code.
            pub fn class(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $class,)+
                }
            }

            /// The status our HTTP servers answer with.
            pub fn http_status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)+
                }
            }

            /// The code in our HTTP error bodies: the HTTP vocabulary of genai-electron 0.26
            /// (which clients such as genai-lite branch on) where it names a failure otherwise.
            pub fn http_code(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => error_codes!(@http $code $($http)?),)+
                }
            }
        }
    };
}

error_codes! {
    InvalidArgument = ("INVALID_ARGUMENT", "ValidationError", 400, http = "INVALID_REQUEST"),
    ModelExists = ("MODEL_EXISTS", "ValidationError", 409),
    DownloadRejected = ("DOWNLOAD_REJECTED", "ValidationError", 422),
    Unauthorized = ("UNAUTHORIZED", "ValidationError", 401),
    OriginNotAllowed = ("ORIGIN_NOT_ALLOWED", "ValidationError", 403, http = "INVALID_ORIGIN"),
    InvalidHost = ("INVALID_HOST", "ValidationError", 403),
    NotFound = ("NOT_FOUND", "ValidationError", 404),
    MethodNotAllowed = ("METHOD_NOT_ALLOWED", "ValidationError", 405),
    BodyTooLarge = ("BODY_TOO_LARGE", "ValidationError", 413),
    UriTooLong = ("URI_TOO_LONG", "ValidationError", 414),
    HeadersTooLarge = ("HEADERS_TOO_LARGE", "ValidationError", 431),
    ModelNotFound = ("MODEL_NOT_FOUND", "ModelNotFoundError", 404),
    DownloadFailed = ("DOWNLOAD_FAILED", "DownloadError", 502),
    DownloadHttpError = ("DOWNLOAD_HTTP_ERROR", "DownloadError", 502),
    DownloadBadUrl = ("DOWNLOAD_BAD_URL", "DownloadError", 400),
    DownloadInProgress = ("DOWNLOAD_IN_PROGRESS", "DownloadError", 409),
    ChecksumError = ("CHECKSUM_ERROR", "ChecksumError", 422),
    InsufficientResources = ("INSUFFICIENT_RESOURCES", "InsufficientResourcesError", 507),
    ServerError = ("SERVER_ERROR", "ServerError", 500),
    ServerAlreadyRunning = ("SERVER_ALREADY_RUNNING", "ServerError", 409),
    ServerNotRunning = ("SERVER_NOT_RUNNING", "ServerError", 503),
    ServerBusy = ("SERVER_BUSY", "ServerError", 409),
    ServerStartFailed = ("SERVER_START_FAILED", "ServerError", 500, http = "BACKEND_ERROR"),
    ServerExited = ("SERVER_EXITED", "ServerError", 500, http = "BACKEND_ERROR"),
    ServerStartTimeout = ("SERVER_START_TIMEOUT", "ServerError", 504, http = "BACKEND_ERROR"),
    BackendFailed = ("BACKEND_FAILED", "ServerError", 500, http = "BACKEND_ERROR"),
    BackendStalled = ("BACKEND_STALLED", "ServerError", 504, http = "BACKEND_ERROR"),
    BackendUnavailable = ("BACKEND_UNAVAILABLE", "ServerError", 502),
    ServerUnavailable = ("SERVER_UNAVAILABLE", "ServerError", 503),
    QueueFull = ("QUEUE_FULL", "ServerError", 503),
    QueueTimeout = ("QUEUE_TIMEOUT", "ServerError", 503),
    RpcWorkerUnreachable = ("RPC_WORKER_UNREACHABLE", "ServerError", 502),
    RpcWorkerBusy = ("RPC_WORKER_BUSY", "ServerError", 409),
    RpcWorkerIncompatible = ("RPC_WORKER_INCOMPATIBLE", "ServerError", 502),
    JobFinished = ("JOB_FINISHED", "ServerError", 409, http = "ALREADY_TERMINAL"),
    ModelInUse = ("MODEL_IN_USE", "ServerError", 409),
    PortInUse = ("PORT_IN_USE", "PortInUseError", 409),
    BinaryError = ("BINARY_ERROR", "BinaryError", 500),
    BinaryNotFound = ("BINARY_NOT_FOUND", "BinaryError", 500),
    BinaryBroken = ("BINARY_BROKEN", "BinaryError", 500),
    BinaryNoRelease = ("BINARY_NO_RELEASE", "BinaryError", 500),
    BinaryNoWorkingVariant = ("BINARY_NO_WORKING_VARIANT", "BinaryError", 500),
    SourceChecksumMismatch = ("SOURCE_CHECKSUM_MISMATCH", "BinaryError", 500),
    CmakeMissing = ("CMAKE_MISSING", "BinaryError", 500),
    VulkanToolchainMissing = ("VULKAN_TOOLCHAIN_MISSING", "BinaryError", 500),
    CrossToolchainMissing = ("CROSS_TOOLCHAIN_MISSING", "BinaryError", 500),
    BuildFailed = ("BUILD_FAILED", "BinaryError", 500),
    ArchiveInvalid = ("ARCHIVE_INVALID", "BinaryError", 500),
    FileSystemError = ("FILE_SYSTEM_ERROR", "FileSystemError", 500, http = "IO_ERROR"),
    ModelDamaged = ("MODEL_DAMAGED", "FileSystemError", 500),
    Cancelled = ("CANCELLED", "CancelledError", 499, http = "GENERATION_CANCELLED"),
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

    /// The JS layer and the docs read `lib/error-codes.json`: it and this enum must agree.
    #[test]
    fn the_shared_table_and_the_enum_agree() {
        let table: Map<String, Value> =
            serde_json::from_str(include_str!("../lib/error-codes.json")).unwrap();
        let ours: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let theirs: Vec<_> = table.keys().map(String::as_str).collect();
        assert_eq!(ours, theirs, "the same codes, in the same order");
        for code in ErrorCode::ALL {
            let row = &table[code.as_str()];
            assert_eq!(row["class"], code.class(), "{code:?}");
            assert_eq!(row["status"], code.http_status(), "{code:?}");
            let http = row.get("http").and_then(Value::as_str);
            assert_eq!(http.unwrap_or(code.as_str()), code.http_code(), "{code:?}");
            assert_ne!(
                http,
                Some(code.as_str()),
                "{code:?}: an HTTP name only where it differs"
            );
            assert!(row["meaning"].as_str().is_some_and(|m| !m.is_empty()));
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
