//! Parsers: a sysfs root → typed structs. Pure functions of the tree, so tests point them at
//! fixture trees captured from the lab. No metrics code here: `crate::collectors` maps these
//! structs to metric families.
//!
//! Missing or odd values never fail a parse: the field is left `None` and a [`Skip`] says which
//! file and why, for the collectors to count.
mod attr;
pub mod blockstat;
pub mod controller;
pub mod fc;
pub mod infiniband;
pub mod namespace;
pub mod subsystem;

pub(crate) use attr::read_trim;
pub use attr::{Parsed, Skip};
pub use blockstat::BlockStat;
pub use controller::{controllers, Address, Controller, CtrlState, Timeout};
pub use namespace::{namespace_lba_sizes, namespaces, AnaState, Namespace, NamespaceLba, NsPath};
pub use subsystem::{subsystems, SubsysController, Subsystem};
