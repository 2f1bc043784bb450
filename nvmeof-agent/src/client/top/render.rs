//! How `top` lays its rows out: one fixed-width table of 80 columns, the same for the plain
//! `--once` text and for the terminal view, where cells get colours.
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

use super::model::{ControllerRow, SortKey, Stats};

/// The columns: header, width, and the sort key each one shows. Eleven single spaces between
/// twelve columns make 80.
pub const COLUMNS: [(&str, usize, Option<SortKey>); 12] = [
    ("CTRL", 7, Some(SortKey::Name)),
    ("STATE", 10, None),
    ("TR", 4, None),
    ("IOPS", 7, Some(SortKey::Iops)),
    ("MB/s", 7, Some(SortKey::Mbps)),
    ("P50", 6, Some(SortKey::P50)),
    ("P99", 6, Some(SortKey::P99)),
    ("MAX", 6, Some(SortKey::Max)),
    ("INFL", 4, Some(SortKey::Inflight)),
    ("UTL%", 4, Some(SortKey::Util)),
    ("ERR", 4, Some(SortKey::Errors)),
    ("RECN", 4, None),
];

/// What a cell's colour depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tint {
    Plain,
    /// A controller state: green when live, red otherwise.
    State(bool),
    /// A latency in seconds.
    Latency(f64),
    /// A total that grew in this interval.
    Moved(bool),
    /// A queue row's name, set off from its controller's.
    Queue,
}

struct Cell {
    text: String,
    tint: Tint,
}

/// One table row's cells, `COLUMNS` wide.
struct Row(Vec<Cell>);

fn plain(text: String) -> Cell {
    Cell {
        text,
        tint: Tint::Plain,
    }
}

fn stats_cells(s: &Stats) -> [Cell; 7] {
    let lat = |v: Option<f64>| Cell {
        text: v.map_or_else(|| "-".into(), latency),
        tint: v.map_or(Tint::Plain, Tint::Latency),
    };
    [
        plain(count(s.iops, 7)),
        plain(mbps(s.mbps)),
        lat(s.p50),
        lat(s.p99),
        lat(s.max),
        plain(count(s.inflight, 4)),
        plain(format!("{:.0}", s.util * 100.0)),
    ]
}

fn rows(ctrls: &[ControllerRow]) -> impl Iterator<Item = Row> + '_ {
    ctrls.iter().flat_map(|c| {
        let state = c.state.as_deref().unwrap_or("-");
        let mut cells = vec![
            plain(c.name.clone()),
            Cell {
                // "deleting (no IO)" is the kernel's longest; the column holds 10.
                text: state.trim_end_matches(" (no IO)").into(),
                tint: Tint::State(state == "live"),
            },
            plain(c.transport.clone().unwrap_or_else(|| "-".into())),
        ];
        cells.extend(stats_cells(&c.stats));
        cells.push(Cell {
            text: count(c.errors, 4),
            tint: Tint::Moved(c.errors_moved),
        });
        cells.push(Cell {
            text: c.reconnects.map_or_else(|| "-".into(), |r| count(r, 4)),
            tint: Tint::Moved(c.reconnects_moved),
        });
        let queues = c.queues.iter().map(|q| {
            let mut cells = vec![
                Cell {
                    text: format!(" q{}", q.qid),
                    tint: Tint::Queue,
                },
                plain(String::new()),
                plain(String::new()),
            ];
            cells.extend(stats_cells(&q.stats));
            cells.push(plain(String::new()));
            cells.push(plain(String::new()));
            Row(cells)
        });
        std::iter::once(Row(cells)).chain(queues)
    })
}

/// A cell padded to its column: names and states to the left, figures to the right; cut to the
/// column when longer, so that one odd value cannot shift the others.
fn pad(text: &str, col: usize) -> String {
    let (_, width, _) = COLUMNS[col];
    let text: String = text.chars().take(width).collect();
    match col {
        0..=2 => format!("{text:<width$}"),
        _ => format!("{text:>width$}"),
    }
}

/// The header line of the table.
pub fn header() -> String {
    let cells: Vec<String> = (0..COLUMNS.len()).map(|i| pad(COLUMNS[i].0, i)).collect();
    cells.join(" ")
}

/// The `--once` table: the header, then a line per controller with its queues beneath, no
/// escape codes.
pub fn text(ctrls: &[ControllerRow]) -> String {
    let mut out = header();
    out.push('\n');
    for Row(cells) in rows(ctrls) {
        let line: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| pad(&c.text, i))
            .collect();
        out.push_str(line.join(" ").trim_end());
        out.push('\n');
    }
    out
}

/// The terminal view's table lines, at most `height` of them (the header included): a table
/// longer than the screen ends with a line saying how many rows are not shown.
pub fn lines(ctrls: &[ControllerRow], sort: SortKey, height: usize) -> Vec<Line<'static>> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let header: Vec<Span> = COLUMNS
        .iter()
        .enumerate()
        .flat_map(|(i, (name, _, key))| {
            let style = match *key == Some(sort) {
                true => bold.fg(Color::Cyan).add_modifier(Modifier::UNDERLINED),
                false => bold,
            };
            let sep = (i > 0).then(|| Span::raw(" "));
            sep.into_iter().chain([Span::styled(pad(name, i), style)])
        })
        .collect();
    let mut out = vec![Line::from(header)];
    if height <= 1 {
        return out;
    }
    let total: usize = ctrls.iter().map(|c| 1 + c.queues.len()).sum();
    // Only the rows that fit are formatted: a node with thousands of queues costs no more
    // per refresh than the screen shows.
    let room = height - 1;
    let shown = if total > room { room - 1 } else { total };
    for Row(cells) in rows(ctrls).take(shown) {
        let spans: Vec<Span> = cells
            .into_iter()
            .enumerate()
            .flat_map(|(i, c)| {
                let sep = (i > 0).then(|| Span::raw(" "));
                sep.into_iter()
                    .chain([Span::styled(pad(&c.text, i), style(c.tint))])
            })
            .collect();
        out.push(Line::from(spans));
    }
    if total > shown {
        out.push(Line::styled(
            format!(
                "... {} more rows (a taller terminal shows them)",
                total - shown
            ),
            Style::default().add_modifier(Modifier::DIM),
        ));
    }
    out
}

fn style(t: Tint) -> Style {
    let s = Style::default();
    match t {
        Tint::Plain => s,
        Tint::State(true) => s.fg(Color::Green),
        Tint::State(false) => s.fg(Color::Red).add_modifier(Modifier::BOLD),
        Tint::Latency(v) if v >= 0.01 => s.fg(Color::Red),
        Tint::Latency(v) if v >= 0.001 => s.fg(Color::Yellow),
        Tint::Latency(_) => s.fg(Color::Green),
        Tint::Moved(true) => s.fg(Color::Red).add_modifier(Modifier::BOLD),
        Tint::Moved(false) => s,
        Tint::Queue => s.add_modifier(Modifier::DIM),
    }
}

/// A count or rate in at most `width` characters: whole numbers while they fit, then k, M, G.
pub fn count(v: f64, width: usize) -> String {
    let whole = format!("{v:.0}");
    if whole.len() <= width {
        return whole;
    }
    for (unit, scale) in [("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)] {
        for digits in [1, 0] {
            let s = format!("{:.*}{unit}", digits, v / scale);
            if s.len() <= width {
                return s;
            }
        }
    }
    "big".into()
}

/// MB/s (10^6 bytes) in the 7 characters of its column: two decimals while they fit.
pub fn mbps(v: f64) -> String {
    for digits in [2, 1, 0] {
        let s = format!("{v:.digits$}");
        if s.len() <= 7 {
            return s;
        }
    }
    count(v, 7)
}

/// A latency in seconds, in at most 6 characters: `954us`, `1.23ms`, `12.3ms`, `123ms`,
/// `1.23s`; the unit chosen after rounding, so `999.7us` reads `1.00ms`.
pub fn latency(s: f64) -> String {
    if s.is_infinite() {
        return "inf".into();
    }
    let us = s * 1e6;
    if us < 999.5 {
        format!("{us:.0}us")
    } else if us < 9_995.0 {
        format!("{:.2}ms", us / 1e3)
    } else if us < 99_950.0 {
        format!("{:.1}ms", us / 1e3)
    } else if us < 999_500.0 {
        format!("{:.0}ms", us / 1e3)
    } else if s < 9.995 {
        format!("{s:.2}s")
    } else if s < 99.95 {
        format!("{s:.1}s")
    } else {
        format!("{s:.0}s")
    }
}
