//! The one error type a rule author sees.
//!
//! An `Err` returned by a node is not a crash: the host routes the incoming message to `Failure`
//! with the error text in `metadata.error`, and the node keeps running.

use std::fmt;

/// A node's error: a message for `metadata.error`.
///
/// Any `std::error::Error` converts into it, so `?` works on serde, parsing, … errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    /// The config field a refused config names (see [`Error::config`]).
    field: Option<String>,
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error { message: message.into(), field: None }
    }

    /// A config value refused by `init`: the chain's load error names `field` (its path under
    /// the node's `config`, dotted: `threshold`, `data.v.linear`) as it names a value that did
    /// not parse — `chain.json: node `f`: config.threshold: must be positive`.
    pub fn config(field: impl Into<String>, message: impl fmt::Display) -> Self {
        let field = field.into();
        Error { message: format!("config field `{field}`: {message}"), field: Some(field) }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The config field this error is about ([`Error::config`]).
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// What it says about its field, without the field ([`Error::config`]); the message otherwise.
    pub fn reason(&self) -> &str {
        match &self.field {
            Some(field) => self.message.strip_prefix(&format!("config field `{field}`: ")).unwrap_or(&self.message),
            None => &self.message,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(err: E) -> Self {
        Error::new(err.to_string())
    }
}

/// Returns early with an [`Error`] built like `format!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::Error::new(format!($($arg)*))) };
}

/// Returns early with an [`Error::config`] about `field`, its reason built like `format!`.
#[macro_export]
macro_rules! bail_config {
    ($field:expr, $($arg:tt)*) => { return Err($crate::Error::config($field, format!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_error_keeps_its_field_apart_and_reads_as_the_convention() {
        let err = Error::config("data.v.linear", "must be positive");
        assert_eq!(err.field(), Some("data.v.linear"));
        assert_eq!(err.reason(), "must be positive");
        assert_eq!(err.message(), "config field `data.v.linear`: must be positive");
        let plain = Error::new("no key");
        assert_eq!((plain.field(), plain.reason()), (None, "no key"));
    }
}
