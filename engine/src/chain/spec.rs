//! The chain file as the user wrote it (`ChainSpec`), before any validation: the types live in
//! `sluice-core` (shared with the importer, which writes them); [`crate::chain::load`] turns
//! them into a validated [`crate::chain::Chain`].

pub use sluice_core::spec::*;
