//! Kubernetes API vocabulary for pier: which resources exist and how they are named
//! ([`resources`]), how objects are defaulted and validated with upstream's messages
//! ([`validation`]), label and field selectors ([`selector`]), server-side `Table` printing
//! ([`table`]) and patch and apply merging ([`patch`]).
//!
//! This crate does no IO: every function is a pure function of its arguments (the current time
//! is passed in), so it is tested with plain unit and snapshot tests.

pub mod patch;
pub mod resources;
pub mod selector;
pub mod table;
pub mod validation;
