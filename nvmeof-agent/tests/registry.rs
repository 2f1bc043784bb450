//! The registry as the binary builds it from the default flags (the command line is what
//! decides the defaults, so this lives outside the collectors).
use nvmeof_agent::collector::{Scrape, Sink};
use nvmeof_agent::collectors::{build_enabled, registry};
use nvmeof_agent::config::Config;

/// Every collector enabled by default is built under its registered name, and what it emits on
/// the lab's 6.1 tree is among the families its registration declares (the ones
/// `docs/metrics.md` is checked against).
#[test]
fn each_built_collector_emits_only_its_registered_families() {
    let mut config = Config::defaults();
    config.sysfs = nvmeof_agent::test_support::captured_6_1();
    let built = build_enabled(&config).unwrap();
    let enabled: Vec<&str> = registry()
        .iter()
        .filter(|r| r.default_enabled && r.name != "exporter")
        .map(|r| r.name)
        .collect();
    let names: Vec<&str> = built.iter().map(|c| c.name).collect();
    assert_eq!(names, enabled);
    for c in built {
        let r = registry().into_iter().find(|r| r.name == c.name).unwrap();
        let mut sink = Sink::new();
        // A collector may fail here (no eBPF permission, no devices); what it emitted still
        // has to be declared.
        let _ = c.collector.collect(&Scrape::new(), &mut sink);
        for f in sink.into_families() {
            assert!(
                r.families.iter().any(|d| d.name == f.name()),
                "collector {} emitted {}, which its registration does not declare",
                c.name,
                f.name()
            );
        }
    }
}
