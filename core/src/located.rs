//! Errors that say where: the file, the place in it (a node), and the field. Loading a chain and
//! importing a ThingsBoard export both refuse input this way, so that every refusal reads
//! `chain.json: node `f`: field `config.threshold`: …` and a user can go straight to it.

use std::fmt;
use std::path::PathBuf;

/// An error of kind `K`, located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<K> {
    /// The file at fault.
    pub file: PathBuf,
    /// Where in the file, when one place is at fault.
    pub place: Option<Place>,
    /// The field, as a path (`entry`, `connections[2].to`, `config.keys[0]`).
    pub field: Option<String>,
    pub kind: K,
}

/// A place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A chain's node, by id: written `node `id``.
    Node(Box<str>),
    /// Any other place, written as it is: `node 3`, `filters[1]`, `ruleChains[2]`.
    At(Box<str>),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Node(id) => write!(f, "node `{id}`"),
            Place::At(at) => f.write_str(at),
        }
    }
}

impl<K: fmt::Display> fmt::Display for Located<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(place) = &self.place {
            write!(f, ": {place}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.kind)
    }
}

// The kind's text is part of the message: it is not also a `source` (which would print it
// twice in a chain of causes).
impl<K: fmt::Debug + fmt::Display> std::error::Error for Located<K> {}

impl<K> Located<K> {
    pub fn new(file: impl Into<PathBuf>, kind: K) -> Self {
        Located { file: file.into(), place: None, field: None, kind }
    }

    /// At the node `id` of a chain.
    pub fn node(mut self, id: impl Into<String>) -> Self {
        self.place = Some(Place::Node(id.into().into_boxed_str()));
        self
    }

    /// At `place`, written as it is.
    pub fn at(mut self, place: impl Into<String>) -> Self {
        self.place = Some(Place::At(place.into().into_boxed_str()));
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The id of the node at fault, if a node is.
    pub fn node_id(&self) -> Option<&str> {
        match &self.place {
            Some(Place::Node(id)) => Some(id),
            _ => None,
        }
    }
}

/// Why a file a user wrote could not be read as what it claims to be: the refusals that loading a
/// chain and importing a ThingsBoard export share (each kind adds its own beside them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("cannot read: {0}")]
    Io(String),
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl FileError {
    /// A JSON syntax error, at serde_json's line and column.
    pub fn syntax(error: &serde_json::Error, message: impl Into<String>) -> FileError {
        FileError::Syntax { line: error.line(), column: error.column(), message: message.into() }
    }
}
