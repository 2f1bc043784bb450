//! The registry as the binary builds it from the default flags (the command line is what
//! decides the defaults, so this lives outside the collectors).
use nvmeof_agent::collectors::{build_enabled, registry};
use nvmeof_agent::config::Config;

#[test]
fn each_built_collector_declares_its_registered_families() {
    let config = Config::defaults();
    let built = build_enabled(&config).unwrap();
    assert_eq!(built.len(), 9);
    for c in built {
        let r = registry().into_iter().find(|r| r.name == c.name()).unwrap();
        assert_eq!(c.families(), r.families, "{}", r.name);
    }
}
