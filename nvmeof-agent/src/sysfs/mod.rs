//! Parsers: a sysfs root → typed structs. Pure functions of the tree, so tests point them at
//! fixture trees captured from the lab. No metrics code here: `crate::collectors` maps these
//! structs to metric families.
//!
//! Missing or odd values never fail a parse: the field is left `None` and a [`Skip`] says which
//! file and why, for the collectors to count.
/// Declares a [`Spelled`] state: each known state with the word sysfs spells it as, written
/// once, and an `Unknown` variant for any other word.
macro_rules! spelled {
    ($(#[$m:meta])* pub enum $name:ident { $($variant:ident => $word:literal,)+ }) => {
        $(#[$m])*
        pub enum $name {
            $($variant,)+
            /// A word this exporter does not know.
            Unknown(String),
        }

        impl $crate::sysfs::Spelled for $name {
            const KNOWN: &'static [$name] = &[$($name::$variant),+];

            fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $word,)+
                    $name::Unknown(s) => s,
                }
            }

            fn unknown(word: &str) -> $name {
                $name::Unknown(word.to_owned())
            }
        }
    };
}

mod attr;
pub mod blockstat;
pub mod controller;
pub mod fc;
pub mod infiniband;
pub mod namespace;
pub mod subsystem;

pub(crate) use attr::{clean_text, read_trim, MAX_LABEL_BYTES};
pub use attr::{Parsed, Skip};
pub use blockstat::BlockStat;
pub use controller::{controllers, Address, Controller, CtrlState, Timeout};
pub use namespace::{namespace_lba_sizes, namespaces, AnaState, Namespace, NamespaceLba, NsPath};
pub use subsystem::{subsystems, SubsysController, Subsystem};

/// A state that sysfs spells as one word (`state`, `ana_state`), with a variant for a word this
/// exporter does not know: the collectors emit a series per known state and one more for an
/// unknown word, so that a state a newer kernel adds shows up instead of vanishing.
pub trait Spelled: Clone + PartialEq + 'static {
    /// Every state the kernel knows, in its enum order.
    const KNOWN: &'static [Self];

    /// The word as sysfs spells it.
    fn as_str(&self) -> &str;

    /// The state for a word not in [`Spelled::KNOWN`].
    fn unknown(word: &str) -> Self;

    /// The state `word` spells.
    fn parse(word: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|k| k.as_str() == word)
            .cloned()
            .unwrap_or_else(|| Self::unknown(word))
    }
}
