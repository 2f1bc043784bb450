//! `docs/metrics.md` against the registry: every family a registered collector declares has a
//! row (with the right type), and every row names a family some collector declares.
use std::collections::BTreeMap;

use nvmeof_agent::collectors::registry;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");

#[derive(Debug)]
struct Row {
    kind: String,
    line: usize,
}

/// Every row of the page's metric tables, those headed `| name | type | labels | source | series |`
/// (other tables, such as the map memory one, are prose).
fn rows(text: &str) -> Result<BTreeMap<String, Row>, String> {
    let mut out = BTreeMap::new();
    let mut in_metric_table = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_metric_table = false;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells[0].starts_with("---") {
            continue;
        }
        if !in_metric_table {
            // The first row of a table is its header.
            in_metric_table = cells == ["name", "type", "labels", "source", "series"];
            continue;
        }
        if cells.len() != 5 {
            return Err(format!(
                "line {}: {} cells, 5 expected: {line}",
                i + 1,
                cells.len()
            ));
        }
        let name = cells[0].trim_matches('`').to_owned();
        let row = Row {
            kind: cells[1].to_owned(),
            line: i + 1,
        };
        if let Some(first) = out.insert(name.clone(), row) {
            return Err(format!(
                "{name} listed twice (lines {} and {})",
                first.line,
                i + 1
            ));
        }
    }
    Ok(out)
}

#[test]
fn every_family_is_documented_and_every_row_is_a_family() {
    let text = std::fs::read_to_string(DOC).expect("docs/metrics.md");
    let doc = rows(&text).unwrap();
    let mut declared = BTreeMap::new();
    for r in registry() {
        for f in r.families {
            declared.insert(f.name, (r.name, f.kind.as_str()));
        }
    }
    let mut problems = Vec::new();
    for (name, (collector, kind)) in &declared {
        match doc.get(*name) {
            None => problems.push(format!(
                "{name} (collector {collector}) is missing from docs/metrics.md"
            )),
            Some(row) if row.kind != *kind => problems.push(format!(
                "{name}: docs/metrics.md line {} says {}, collector {collector} declares {kind}",
                row.line, row.kind
            )),
            Some(_) => {}
        }
    }
    for (name, row) in &doc {
        if !declared.contains_key(name.as_str()) {
            problems.push(format!(
                "{name} (docs/metrics.md line {}) is declared by no registered collector",
                row.line
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(doc.len(), declared.len());
    // At least the sysfs collectors' 12 + 3 + 10 families and the exporter's 6.
    assert!(declared.len() >= 31, "{}", declared.len());
}

#[test]
fn the_parser_catches_both_directions() {
    let page = "| name | type | labels | source | series |\n| --- | --- | --- | --- | --- |\n\
                | `a_total` | counter | `x` | s | 1 |\n| b | gauge | | s | 1 |\n";
    let r = rows(page).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r["a_total"].kind, "counter");
    assert_eq!(r["b"].line, 4);
    let head = "| name | type | labels | source | series |\n| --- | --- | --- | --- | --- |\n";
    assert!(rows(&format!(
        "{head}| a | gauge | x | s | 1 |\n| a | gauge | x | s | 1 |\n"
    ))
    .unwrap_err()
    .contains("twice"));
    assert!(rows(&format!("{head}| a | gauge |\n"))
        .unwrap_err()
        .contains("5 expected"));
    // Other tables are prose, not families.
    assert!(rows("| map | kind |\n| --- | --- |\n| OPS | hash |\n")
        .unwrap()
        .is_empty());
}
