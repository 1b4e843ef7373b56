//! Load errors: every one says which file, which node and which field.

pub use sluice_core::located::{FileError, Located, Place};

/// Why a chain did not load: where ([`Located`]: file, node, field), and what.
pub type LoadError = Located<LoadErrorKind>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadErrorKind {
    /// Unreadable, not JSON, or not what the file claims to be.
    #[error(transparent)]
    File(#[from] FileError),
    #[error("module {module}: {message}")]
    Module { module: String, message: String },
    #[error("config rejected: {0}")]
    Config(String),
}
