//! The agent's data flows one way: kernel maps → tracers (`bpf`) → snapshots → collectors →
//! exposition. This test reads `src/**/*.rs`, turns every `crate::` and `super::` path into an
//! edge between modules (a top-level module, or a sub-folder of one: `bpf` is the shared runtime,
//! `bpf::io` and `bpf::state` the tracers) and fails on a cycle, naming it. It also fails when a
//! file under `src/collectors/` mentions `aya`: collectors render snapshots, they never touch a
//! program or a map.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The module path of a file: `bpf/io/drain.rs` → `bpf::io::drain`, `bpf/io/mod.rs` → `bpf::io`,
/// `lib.rs` → the crate root (empty).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut m: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// The node a module path belongs to: its top-level module, or the sub-folder of that module it
/// lies in (`bpf::io::model::OpView` → `bpf::io`, `bpf::loader::Loaded` → `bpf`). `None` for the
/// crate root.
fn node(src: &Path, path: &[String]) -> Option<String> {
    let top = path.first()?;
    match path.get(1) {
        Some(sub) if src.join(top).join(sub).is_dir() => Some(format!("{top}::{sub}")),
        _ => Some(top.clone()),
    }
}

/// A file's code without its unit-test module (`#[cfg(test)] mod …`, by convention last):
/// tests may build their inputs with any module (an encoder's tests fill a collector's `Sink`)
/// without that being part of the flow.
fn without_unit_tests(text: &str) -> &str {
    let mut at = 0;
    while let Some(i) = text[at..].find("#[cfg(test)]") {
        let start = at + i;
        let next = text[start + "#[cfg(test)]".len()..].trim_start();
        if next.starts_with("mod ") || next.starts_with("pub(crate) mod ") {
            return &text[..start];
        }
        at = start + 1;
    }
    text
}

/// `text` without comments (doc comments name modules they do not use).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else if rest.starts_with('"') {
            // A string literal is kept whole, so that a `//` inside it is not a comment.
            let end = rest[1..]
                .char_indices()
                .scan(false, |escaped, (i, c)| {
                    let done = c == '"' && !*escaped;
                    *escaped = c == '\\' && !*escaped;
                    Some((i, done))
                })
                .find(|(_, done)| *done)
                .map_or(rest.len(), |(i, _)| i + 2);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a use tree names, from just after a `crate::` or `super::`: `a::b::C` → `[a, b, C]`,
/// `a::{b, c::{self, d}}` → `[a, b]`, `[a, c]`, `[a, c, d]`.
fn use_tree(s: &str) -> Vec<Vec<String>> {
    fn tree(s: &str, pos: &mut usize, prefix: &[String]) -> Vec<Vec<String>> {
        let b = s.as_bytes();
        let skip_ws = |pos: &mut usize| {
            while *pos < b.len() && (b[*pos] as char).is_whitespace() {
                *pos += 1;
            }
        };
        let mut segments = prefix.to_vec();
        loop {
            skip_ws(pos);
            if *pos < b.len() && b[*pos] == b'{' {
                *pos += 1;
                let mut out = Vec::new();
                loop {
                    out.extend(tree(s, pos, &segments));
                    skip_ws(pos);
                    match b.get(*pos) {
                        Some(b',') => *pos += 1,
                        Some(b'}') => {
                            *pos += 1;
                            break;
                        }
                        _ => break,
                    }
                    skip_ws(pos);
                    if b.get(*pos) == Some(&b'}') {
                        *pos += 1;
                        break;
                    }
                }
                return out;
            }
            let start = *pos;
            while *pos < b.len() && is_ident(b[*pos] as char) {
                *pos += 1;
            }
            match &s[start..*pos] {
                "" => return vec![segments],
                "self" => {}
                ident => segments.push(ident.to_owned()),
            }
            if s[*pos..].starts_with("::") {
                *pos += 2;
            } else {
                // `as name` and the rest of the item: this path ends here.
                let mut at = *pos;
                while at < b.len() && !matches!(b[at], b',' | b'}' | b';') {
                    at += 1;
                }
                *pos = at;
                return vec![segments];
            }
        }
    }
    tree(s, &mut 0, &[])
}

/// Every module path `text` (a file of module `module`) names through `crate::` or `super::`.
/// `super::` in the file's trailing `#[cfg(test)] mod tests` resolves from the file's module.
fn referenced(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let text = strip_comments(text);
    // The first inline module under `#[cfg(test)]` (`mod tests {`, `pub(crate) mod testtree {`).
    let inline_tests = text.match_indices("#[cfg(test)]\n").find_map(|(at, _)| {
        let line = text[at..].lines().nth(1)?;
        (line.contains("mod ") && line.trim_end().ends_with('{')).then_some(at)
    });
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let preceded_by_ident = text[..i].chars().next_back().is_some_and(is_ident);
        if !preceded_by_ident && rest.starts_with("crate::") {
            out.extend(use_tree(&rest["crate::".len()..]));
            i += "crate::".len();
        } else if !preceded_by_ident && rest.starts_with("super::") {
            let mut base: Vec<String> = module.to_vec();
            if inline_tests.is_some_and(|t| i > t) {
                base.push("tests".into());
            }
            let mut after = rest;
            while let Some(r) = after.strip_prefix("super::") {
                base.pop();
                after = r;
            }
            let consumed = rest.len() - after.len();
            for p in use_tree(after) {
                out.push(base.iter().cloned().chain(p).collect());
            }
            i += consumed;
        } else {
            i += rest.chars().next().unwrap().len_utf8();
        }
    }
    out
}

/// Node → the nodes it uses, and for each edge one file that makes it.
fn graph(src: &Path) -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let mut g: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for file in rust_files(src) {
        let module = module_of(src, &file);
        let Some(from) = node(src, &module) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let uses = g.entry(from.clone()).or_default();
        for path in referenced(without_unit_tests(&text), &module) {
            if let Some(to) = node(src, &path).filter(|to| *to != from) {
                uses.entry(to).or_insert_with(|| file.clone());
            }
        }
    }
    g
}

/// One cycle of `g`, as the nodes along it (the first repeated at the end), if there is one.
fn find_cycle(g: &BTreeMap<String, BTreeMap<String, PathBuf>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeMap<String, PathBuf>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_owned());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for next in g.get(n).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(next, g, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut done, &mut Vec::new()))
}

#[test]
fn modules_depend_on_each_other_one_way() {
    let src = src();
    let g = graph(&src);
    // The layout this test guards is there: the tracers, the shared runtime, the collectors.
    for n in [
        "bpf",
        "bpf::io",
        "bpf::state",
        "collectors",
        "config",
        "cli",
    ] {
        assert!(g.contains_key(n), "no module {n} in {:?}", g.keys());
    }
    assert!(g["collectors"].contains_key("bpf::io"), "{g:#?}");
    if let Some(cycle) = find_cycle(&g) {
        let edges: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                let file = &g[&w[0]][&w[1]];
                format!("{} → {} ({})", w[0], w[1], file.display())
            })
            .collect();
        panic!("import cycle: {}", edges.join(", "));
    }
}

#[test]
fn collectors_never_touch_aya() {
    let dir = src().join("collectors");
    let files = rust_files(&dir);
    assert!(files.len() > 5, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mentions = text
            .split(|c: char| !is_ident(c))
            .any(|w| w == "aya" || w.starts_with("aya_"));
        assert!(!mentions, "{} mentions aya", file.display());
    }
}

/// The parser on the shapes the sources use, and the cycle finder on a made-up graph.
#[test]
fn paths_and_cycles_are_found() {
    let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        use_tree("bpf::{io::model::{OpView, X}, loader, self as b};"),
        vec![
            m(&["bpf", "io", "model", "OpView"]),
            m(&["bpf", "io", "model", "X"]),
            m(&["bpf", "loader"]),
            m(&["bpf"]),
        ]
    );
    assert_eq!(
        use_tree("sysfs::controller(&root)"),
        vec![m(&["sysfs", "controller"])]
    );
    let text =
        "//! see crate::http\nuse super::model::Model;\nfn f() { crate::sysfs::x(\"//\"); }\n\
                #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::loader;\n}\n";
    assert_eq!(
        referenced(text, &m(&["bpf", "io", "drain"])),
        vec![
            m(&["bpf", "io", "model", "Model"]),
            m(&["sysfs", "x"]),
            m(&["bpf", "io", "drain"]),
            m(&["bpf", "io", "loader"]),
        ]
    );
    let mut g: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for (a, b) in [
        ("cli", "config"),
        ("cli", "collectors"),
        ("collectors", "bpf::io"),
    ] {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), PathBuf::new());
    }
    assert_eq!(find_cycle(&g), None);
    g.entry("bpf::io".into())
        .or_default()
        .insert("collectors".into(), PathBuf::new());
    assert_eq!(
        find_cycle(&g),
        Some(m(&["bpf::io", "collectors", "bpf::io"]))
    );
}
