//! `sluice import thingsboard`: ThingsBoard rule chains turned into Sluice chain files.
//!
//! Sluice's chains follow ThingsBoard's model (nodes answering with relation-labelled outputs), so
//! an export maps closely: each ThingsBoard node becomes a Sluice node (or a few, a *fragment*)
//! running the built-in rule that does the same job, with its configuration translated, and each
//! connection keeps its relation name exactly. What does not map is not dropped: a node class
//! Sluice lacks becomes an `unsupported` placeholder that sends every message to `Failure`, so the
//! chain keeps its shape and validates, and the [`Report`] lists it (`--strict` refuses it).
//! Chains given together link to each other by id, by the calling node's name, or by an
//! explicit [`Link`] (`--link UUID=FILE`); credentials found in node settings become
//! environment references in the connectors (`secrets`), listed in the report.
//!
//! Inputs, recognised by their shape rather than by version numbers (which exports rarely carry):
//! - [`thingsboard`]: rule chain exports of ThingsBoard 2.x–4.x — `{ruleChain, metadata}`, bulk
//!   `{ruleChains: […], metadata: […]}`, and bare metadata `{firstNodeIndex, nodes, …}`;
//! - [`legacy`]: ThingsBoard 1.x rule descriptors (filters → processor → plugin action), alone or
//!   as `{rules: […]}`, and plugin descriptors, which become the connectors of the rules naming
//!   their `apiToken`.
//!
//! Everything is read and converted before anything is written: a file that cannot be imported
//! (bad JSON, a node without `type`, a connection to a node that does not exist, a supported
//! node whose configuration has the wrong type) stops the import with an [`ImportError`] naming
//! file, node and field, and writes nothing.

mod draft;
mod error;
mod fields;
mod files;
pub mod legacy;
mod profiles;
pub mod relations;
mod report;
mod secrets;
pub mod thingsboard;
mod thingsboard_rules;

pub use error::{FileError, ImportError, ImportErrorKind};
pub(crate) use files::{FAILURE, Names};
pub use files::{
    ImportOptions, Imported, ImportedChain, Link, LinkSyntaxError, LinkedBy, import_thingsboard,
    import_thingsboard_linked, import_thingsboard_with,
};
pub use report::{ChainReport, FileReport, Finding, FindingKind, Report, UNRESOLVED_LINK};
