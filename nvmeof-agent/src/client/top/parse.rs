//! The Prometheus text format (0.0.4), read back: the samples of the families `top` shows, from
//! a body the HTTP client already capped. A line that does not parse is skipped and counted,
//! never a panic: `top` must keep drawing whatever an agent (or a proxy in front of it) sends.
//!
//! Written here rather than taken from a crate: `prometheus-parse`, the one crate for this,
//! pulls `regex` and `chrono` into the static binary, reads the whole body into its own model
//! with no bound on labels, and has seen no release since 2023. What `top` reads is the subset
//! this agent writes (one sample a line, quoted label values with `\\`, `\"` and `\n` escapes,
//! no timestamps), checked below on hand-written and malformed text.

/// Labels kept per sample: the agent's widest I/O series has five (subsystem, controller,
/// queue, opclass, le); anything past this is not one of ours.
const MAX_LABELS: usize = 16;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of `text` whose metric name `keep` accepts, and how many lines were skipped as
/// malformed (comments and blank lines are not counted).
pub fn parse(text: &str, keep: impl Fn(&str) -> bool) -> (Vec<Sample>, usize) {
    let mut samples = Vec::new();
    let mut skipped = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The name first: most lines are of families `top` does not show, and are not parsed
        // further.
        let name_end = line
            .find(|c: char| c == '{' || c.is_ascii_whitespace())
            .unwrap_or(line.len());
        if !keep(&line[..name_end]) {
            continue;
        }
        match sample(line, name_end) {
            Some(s) => samples.push(s),
            None => skipped += 1,
        }
    }
    (samples, skipped)
}

fn sample(line: &str, name_end: usize) -> Option<Sample> {
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (l, after) = label_set(r)?;
        labels = l;
        rest = after;
    }
    // The value, then an optional timestamp (which `top` does not need).
    let mut fields = rest.split_ascii_whitespace();
    let value = number(fields.next()?)?;
    if fields.next().is_some_and(|t| t.parse::<i64>().is_err()) || fields.next().is_some() {
        return None;
    }
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"}` → the pairs and what follows the `}`.
fn label_set(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        if labels.len() == MAX_LABELS {
            return None;
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let (value, after) = quoted(s[eq + 1..].trim_start())?;
        labels.push((key.to_owned(), value));
        s = after.trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// `"text with \" escapes"rest` → the unescaped text and `rest`.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                // The format defines no other escape; keep it as written.
                other => {
                    out.push('\\');
                    out.push(other);
                }
            },
            c => out.push(c),
        }
    }
    None
}

/// A sample value: Go's float syntax plus `+Inf`, `-Inf`, `NaN`.
pub(super) fn number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_labels_escapes_and_infinities() {
        let text = r#"# HELP x_bytes_total Bytes.
# TYPE x_bytes_total counter
x_bytes_total{subsystem="nqn.a:b",controller="nvme0",queue="1"} 4096
x_latency_seconds_bucket{controller="nvme0",le="+Inf"} 17
x_odd{v="a\"b\\c\nd",w="x,y}z"} 1.5e-3
x_up 1 1700000000000
"#;
        let (s, skipped) = parse(text, |_| true);
        assert_eq!(skipped, 0);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "x_bytes_total");
        assert_eq!(s[0].label("queue"), Some("1"));
        assert_eq!(s[0].value, 4096.0);
        assert_eq!(s[1].label("le"), Some("+Inf"));
        assert_eq!(s[2].label("v"), Some("a\"b\\c\nd"));
        assert_eq!(s[2].label("w"), Some("x,y}z"));
        assert_eq!(s[2].value, 0.0015);
        assert_eq!(s[3].labels, vec![]);
        assert_eq!(s[3].value, 1.0);
        assert_eq!(number("+Inf"), Some(f64::INFINITY));
        assert!(number("NaN").unwrap().is_nan());
    }

    #[test]
    fn only_the_kept_families_are_read() {
        let (s, skipped) = parse("a 1\nb{x=broken 2\nc 3\n", |n| n != "b");
        assert_eq!(skipped, 0, "b is not parsed at all");
        assert_eq!(
            s.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let text = "x{a=\"1\" 2\nx{a=\"unterminated} 2\nx{=\"v\"} 1\nx{a=b} 1\nx 1 2 3\nx notanumber\nx\nx{} 7\nx 1 1e9\n\u{0}\u{fffd} 1\n{a=\"1\"} 1\nx{a=\"\\";
        let (s, skipped) = parse(text, |_| true);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].value, 7.0);
        assert_eq!(skipped, 11);
    }

    #[test]
    fn too_many_labels_are_refused() {
        let labels: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}=\"v\"")).collect();
        let line = format!("x{{{}}} 1", labels.join(","));
        assert_eq!(parse(&line, |_| true), (vec![], 1));
        let fits = format!("x{{{}}} 1", labels[..MAX_LABELS].join(","));
        assert_eq!(parse(&fits, |_| true).0[0].labels.len(), MAX_LABELS);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Every prefix of a valid body, and every line cut at every byte: a body cut by the
        // size limit or a broken proxy ends anywhere.
        let text =
            "x_total{subsystem=\"nqn:a\",controller=\"nvme0\",queue=\"1\",le=\"+Inf\"} 12 34\n";
        for i in 0..=text.len() {
            let _ = parse(&text[..i], |_| true);
            let _ = parse(&text[i..], |_| true);
        }
    }
}
