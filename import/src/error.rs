//! Import errors: every one names the file, the node (by its index in the export, or its place
//! in a 1.x rule: `filters[1]`, `action`) and the field, as `LoadError` does for chains.

use std::path::PathBuf;

pub use sluice_core::located::{FileError, Located};

/// Why an export could not be imported: where ([`Located`]: file, place, field), and what. A
/// node class Sluice lacks is *not* an error (it becomes a placeholder, listed in the report); a
/// file or a node that cannot be read is. The place is `node 3`, `filters[1]`, `action`,
/// `ruleChains[2]`…; the field a path inside it: `configuration.topicPattern`.
pub type ImportError = Located<ImportErrorKind>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportErrorKind {
    /// Unreadable, not JSON, or not what the file claims to be.
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("{0} unsupported node(s) and --strict (see the report)")]
    Strict(usize),
}

/// An invalid-content error ([`FileError::Invalid`]) about `file`.
pub(crate) fn invalid(file: impl Into<PathBuf>, message: impl Into<String>) -> ImportError {
    ImportError::new(file, ImportErrorKind::File(FileError::Invalid(message.into())))
}
