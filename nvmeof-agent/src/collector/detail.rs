//! Which controllers a scrape shows per hardware queue (`controller=` on the metrics path), and
//! what such a scrape keeps of a collector's output.
use std::collections::BTreeSet;

use crate::exposition::model::{Metric, MetricFamily};

/// Which controllers a scrape shows per hardware queue: the `controller=` query parameters of
/// the metrics path. The default shows none (`--metrics.per-queue` shows every one, whatever the
/// scrape asks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Detail {
    #[default]
    PerController,
    /// `controller=all`.
    All,
    /// `controller=nvmeN`, repeated: the instance numbers named.
    Controllers(BTreeSet<u32>),
}

/// The labels that only series per queue (or per connection) carry: what a scrape that names
/// controllers keeps of a collector's output shown per queue for all of them
/// ([`Detail::keep_named`]).
pub const PER_QUEUE_LABELS: [&str; 2] = ["queue", "local_port"];

impl Detail {
    /// The detail `controller=` values ask for: `all`, or controller names as the kernel spells
    /// them (`nvme` and the instance number, no leading zero); an error naming the first value
    /// that is neither.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Detail, String> {
        let mut named = BTreeSet::new();
        let mut all = false;
        for v in values {
            let v = v.as_ref();
            if v == "all" {
                all = true;
                continue;
            }
            match controller_instance(v) {
                Some(n) => {
                    named.insert(n);
                }
                None => {
                    // A value is echoed only as far as it is short and printable.
                    let shown: String = v
                        .chars()
                        .take(32)
                        .map(|c| match c {
                            c if c.is_ascii_graphic() => c,
                            _ => '?',
                        })
                        .collect();
                    return Err(format!(
                        "invalid controller: {shown:?} (want nvmeN, N its instance number, or all)"
                    ));
                }
            }
        }
        Ok(match (all, named.is_empty()) {
            (true, _) => Detail::All,
            (false, true) => Detail::PerController,
            (false, false) => Detail::Controllers(named),
        })
    }

    /// Whether controller instance `n` is shown per queue.
    pub fn per_queue(&self, n: u32) -> bool {
        match self {
            Detail::PerController => false,
            Detail::All => true,
            Detail::Controllers(named) => named.contains(&n),
        }
    }

    /// Whether the controller named `name` (`nvmeN`) is shown per queue.
    pub fn per_queue_named(&self, name: &str) -> bool {
        match self {
            Detail::Controllers(_) => controller_instance(name).is_some_and(|n| self.per_queue(n)),
            d => d.per_queue(0),
        }
    }

    /// Families shown per queue for every controller, with the series per queue
    /// ([`PER_QUEUE_LABELS`]) of the controllers this detail does not name left out, and a
    /// family left empty by that left out too: what a collector shows for these controllers
    /// alone, when it adds its series per queue beside those per controller.
    pub fn keep_named(&self, families: &[MetricFamily]) -> Vec<MetricFamily> {
        let mut out = Vec::with_capacity(families.len());
        for f in families {
            let keep = |m: &Metric| {
                let per_queue = m.label.iter().any(|l| PER_QUEUE_LABELS.contains(&l.name()));
                let named = || {
                    m.label
                        .iter()
                        .find(|l| l.name() == "controller")
                        .is_some_and(|l| self.per_queue_named(l.value()))
                };
                !per_queue || named()
            };
            if f.metric.iter().all(keep) {
                out.push(f.clone());
                continue;
            }
            let metric: Vec<Metric> = f.metric.iter().filter(|m| keep(m)).cloned().collect();
            if !metric.is_empty() {
                out.push(MetricFamily {
                    name: f.name.clone(),
                    help: f.help.clone(),
                    r#type: f.r#type,
                    metric,
                    unit: f.unit.clone(),
                });
            }
        }
        out
    }
}

/// The instance number of a controller named as the kernel names it (`nvme3`: 3); `None` for
/// anything else (`nvme03`, `nvme`, `nvme3n1`, a number past u32).
pub fn controller_instance(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("nvme")?;
    let n: u32 = digits.parse().ok()?;
    (digits.bytes().all(|b| b.is_ascii_digit()) && n.to_string() == digits).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::{Family, Sink};

    const UP: Family = Family::gauge("x_up", "Up.");

    #[test]
    fn controller_names_are_the_kernels_spelling() {
        assert_eq!(controller_instance("nvme0"), Some(0));
        assert_eq!(controller_instance("nvme42"), Some(42));
        assert_eq!(controller_instance("nvme4294967295"), Some(u32::MAX));
        for bad in [
            "",
            "nvme",
            "nvme03",
            "nvme+3",
            "nvme-1",
            "nvme3n1",
            "nvme4294967296",
            "NVME3",
            " nvme3",
        ] {
            assert_eq!(controller_instance(bad), None, "{bad:?}");
        }
        assert_eq!(Detail::parse::<&str>(&[]), Ok(Detail::PerController));
        assert_eq!(Detail::parse(&["nvme3", "all"]), Ok(Detail::All));
        assert_eq!(
            Detail::parse(&["nvme3", "nvme1", "nvme3"]),
            Ok(Detail::Controllers([1, 3].into()))
        );
        let long = format!("nvme{}", "9".repeat(200));
        let e = Detail::parse(&[long]).unwrap_err();
        assert!(e.len() < 120, "echoes a bounded value: {e}");
    }

    /// What a scrape naming controllers keeps of an output per queue for every controller.
    #[test]
    fn keep_named_keeps_the_named_controllers_queues() {
        const CPUS: Family = Family::gauge("q_info", "Per queue only.");
        let mut sink = Sink::new();
        for c in ["nvme1", "nvme2"] {
            sink.gauge(&UP, &[("controller", c)], 1.0);
            sink.gauge(&UP, &[("controller", c), ("local_port", "4000")], 1.0);
            sink.gauge(&CPUS, &[("controller", c), ("queue", "1")], 1.0);
        }
        let all = sink.into_families();
        let series = |fams: &[MetricFamily]| -> usize { fams.iter().map(|f| f.metric.len()).sum() };
        assert_eq!(series(&Detail::All.keep_named(&all)), 6);
        let kept = Detail::Controllers([2].into()).keep_named(&all);
        assert_eq!(series(&kept), 4);
        assert!(kept
            .iter()
            .flat_map(|f| &f.metric)
            .all(|m| { m.label.len() == 1 || m.label.iter().any(|l| l.value() == "nvme2") }));
        // A family left empty goes: the page shows none of it, as without the queues.
        let none = Detail::Controllers([7].into()).keep_named(&all);
        assert_eq!(none.iter().map(|f| f.name()).collect::<Vec<_>>(), ["x_up"]);
        assert_eq!(series(&none), 2);
    }
}
