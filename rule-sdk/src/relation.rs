//! Relation names: the labels on connections between nodes.
//!
//! Any string is a valid relation; these are the ones ThingsBoard's nodes use, spelled exactly as
//! ThingsBoard spells them so imported chains route the same way.

pub const SUCCESS: &str = "Success";
pub const FAILURE: &str = "Failure";
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const OTHER: &str = "Other";
pub const LATE: &str = "Late";
pub const POST_TELEMETRY: &str = "Post telemetry";
pub const POST_ATTRIBUTES: &str = "Post attributes";
pub const RPC_REQUEST_FROM_DEVICE: &str = "RPC Request from Device";
pub const RPC_REQUEST_TO_DEVICE: &str = "RPC Request to Device";
