//! Chains: the JSON a user writes ([`spec`]), how it is validated ([`load`]) into the graph the
//! executor runs ([`graph`]), and the errors that say exactly where a file is wrong ([`error`]).

pub mod error;
pub mod graph;
pub mod load;
pub mod schema;
pub mod seed;
pub mod spec;

pub use error::{FileError, LoadError, LoadErrorKind};
pub use graph::{Chain, GraphNode, NodeIdx, NodeKind, RuleNode, SinkKind};
pub use load::Loader;
pub use seed::TableSeed;
pub use spec::{ChainSpec, ConnectionSpec, LimitsSpec, NodeSpec};
