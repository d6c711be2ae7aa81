//! The dependency engine: one lifecycle for every dependency a placement needs, whatever
//! its layer (see docs/design.md, "The dependency engine").
//!
//! A placement's graph is cluster → support services (and what they require) → back-end
//! services → generated objects → the workload. Each node is an object in the management
//! cluster with a provider behind it: the provider ensures and judges it, the engine
//! ([`lifecycle`]) decides from its live users when it is retired and tears it down in
//! order. Each node records what it made (an inventory, a cluster name) and its users record
//! which nodes they use, so a teardown needs neither templates nor inputs.

pub mod lifecycle;
pub mod revisions;
pub mod waves;
pub mod writes;

pub use lifecycle::{Dependency, Retention, Teardown, Use, Verdict};
