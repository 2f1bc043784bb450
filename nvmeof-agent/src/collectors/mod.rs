//! One collector per concern; see `crate::collector::Collector`.
pub mod smart;
