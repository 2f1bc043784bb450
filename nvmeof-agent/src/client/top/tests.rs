//! `top` on hand-written exposition text: two scrapes as the agent writes them, the figures
//! worked out by hand, and the `--once` table they make.
use std::collections::BTreeMap;

use super::model::{self, Bound, SortKey};
use super::*;

const NQN: &str = "nqn.2026-11.io.nvmeof-exporter.lab:tcp";

/// One scrape's text: nvme0 live over tcp with queues 1 and 2, nvme1 connecting over rdma
/// with queue 1; `reads` and `cum` give queue 1 of nvme0's read count and cumulative buckets
/// at le = 2^-12, 2^-11, 2^-10, +Inf.
fn scrape_text(reads: u64, cum: [u64; 4], busy: f64, errors: u64, reconnects: u64) -> String {
    let q = |c: &str, q: u32| format!("subsystem=\"{NQN}\",controller=\"{c}\",queue=\"{q}\"");
    let les = ["0.000244140625", "0.00048828125", "0.0009765625", "+Inf"];
    // One queue's latency histogram of `opclass`: its cumulative buckets, then its count.
    let histogram = |labels: String, opclass: &str, cum: [u64; 4], count: u64| {
        let mut h = String::new();
        for (le, n) in les.iter().zip(cum) {
            h += &format!(
                "nvmeof_io_latency_seconds_bucket{{{labels},opclass=\"{opclass}\",le=\"{le}\"}} {n}\n"
            );
        }
        h + &format!("nvmeof_io_latency_seconds_count{{{labels},opclass=\"{opclass}\"}} {count}\n")
    };
    let mut t = String::from(
        "# HELP nvmeof_io_latency_seconds Latency.\n# TYPE nvmeof_io_latency_seconds histogram\n",
    );
    t += &histogram(q("nvme0", 1), "read", cum, reads);
    // Writes on queue 2: 10 more each scrape, all in the first bucket.
    let w = 10 * errors;
    t += &histogram(q("nvme0", 2), "write", [w; 4], w);
    // Admin commands (per controller) are not a queue's I/O: they must not count.
    t += &format!("nvmeof_io_latency_seconds_count{{subsystem=\"{NQN}\",controller=\"nvme0\",opclass=\"admin\"}} {}\n", 1000 * errors);
    t += &format!(
        "nvmeof_io_read_bytes_total{{{}}} {}\n",
        q("nvme0", 1),
        reads * 4096
    );
    t += &format!(
        "nvmeof_io_write_bytes_total{{{}}} {}\n",
        q("nvme0", 2),
        w * 512
    );
    t += &format!("nvmeof_queue_depth{{{}}} 3\n", q("nvme0", 1));
    t += &format!(
        "nvmeof_queue_busy_seconds_total{{{}}} {busy}\n",
        q("nvme0", 1)
    );
    t += &format!("nvmeof_queue_busy_seconds_total{{{}}} 0\n", q("nvme0", 2));
    t += &format!("nvmeof_queue_depth{{{}}} 0\n", q("nvme1", 1));
    // The admin queue: no row of its own, nor in the controller's utilisation.
    t += &format!(
        "nvmeof_queue_busy_seconds_total{{{}}} {busy}\n",
        q("nvme0", 0)
    );
    t += &format!("nvmeof_io_errors_total{{subsystem=\"{NQN}\",controller=\"nvme0\",opclass=\"read\",status=\"read_error\"}} {errors}\n");
    for (c, state, tr) in [("nvme0", "live", "tcp"), ("nvme1", "connecting", "rdma")] {
        for s in ["live", "connecting", "deleting (no IO)"] {
            let v = u8::from(s == state);
            t += &format!("nvmeof_subsystem_state{{subsystem=\"{NQN}\",controller=\"{c}\",state=\"{s}\"}} {v}\n");
        }
        t += &format!("nvmeof_transport_type{{subsystem=\"{NQN}\",controller=\"{c}\",transport=\"{tr}\"}} 1\n");
    }
    t += &format!(
        "nvmeof_reconnect_attempts_total{{subsystem=\"{NQN}\",controller=\"nvme1\"}} {reconnects}\n"
    );
    // Families top does not read, and a line no parser should accept.
    t += "nvmeof_exporter_scrapes_total 12\nnvmeof_io_read_bytes_total{controller=\"nvme0\",queue=\"1\" 5\n";
    t
}

fn snapshot(text: &str) -> model::Snapshot {
    let (samples, _) = parse::parse(text, model::wanted);
    model::Snapshot::from_samples(&samples)
}

fn two_scrapes() -> Vec<model::ControllerRow> {
    // Over 2 s: 1000 reads on nvme0/q1, 100 at most 2^-12 s, 400 more at most 2^-11, 480 more
    // at most 2^-10, 20 past it (cumulative deltas 100, 500, 980, 1000); 20 writes on q2, all
    // at most 2^-12; 1.5 s busy on q1; 2 new errors on nvme0; one reconnect of nvme1.
    let before = snapshot(&scrape_text(500, [50, 250, 490, 500], 10.0, 1, 4));
    let after = snapshot(&scrape_text(1500, [150, 750, 1470, 1500], 11.5, 3, 5));
    let mut rows = model::rates(&before, &after, 2.0);
    model::sort(&mut rows, SortKey::Iops, false);
    rows
}

#[test]
fn rates_and_quantiles_from_two_scrapes() {
    let rows = two_scrapes();
    assert_eq!(rows.len(), 2);
    let c = &rows[0];
    assert_eq!(c.name, "nvme0");
    assert_eq!(c.state.as_deref(), Some("live"));
    assert_eq!(c.transport.as_deref(), Some("tcp"));
    assert_eq!((c.errors, c.errors_moved), (3.0, true));
    assert_eq!(c.reconnects, None);
    // q1: 1000 reads in 2 s; 4096 bytes each.
    let q1 = &c.queues[0];
    assert_eq!(q1.qid, 1);
    assert_eq!(q1.stats.iops, 500.0);
    assert_eq!(q1.stats.mbps, 1000.0 * 4096.0 / 2.0 / 1e6);
    // Rank 500 falls in the second bucket (100 below it, 400 in it) at 400/400 of its width.
    assert_eq!(q1.stats.p50, Some(2f64.powi(-11)));
    // Rank 990 is past the third bucket's 980: in +Inf, which gives the highest finite bound.
    assert_eq!(q1.stats.p99, Some(2f64.powi(-10)));
    assert_eq!(q1.stats.max, Some(f64::INFINITY));
    assert_eq!(q1.stats.inflight, 3.0);
    assert_eq!(q1.stats.util, 0.75);
    // q2: 20 writes, every one in the first bucket: p50 half way into it from 0.
    let q2 = &c.queues[1];
    assert_eq!(q2.stats.iops, 10.0);
    assert_eq!(q2.stats.p50, Some(2f64.powi(-12) / 2.0));
    assert_eq!(q2.stats.max, Some(2f64.powi(-12)));
    // The controller: its queues together (admin commands left out), utilisation their mean.
    assert_eq!(c.stats.iops, 510.0);
    assert_eq!(c.stats.util, 0.375);
    assert_eq!(c.stats.inflight, 3.0);
    let n = &rows[1];
    assert_eq!(
        (n.name.as_str(), n.state.as_deref()),
        ("nvme1", Some("connecting"))
    );
    assert_eq!((n.reconnects, n.reconnects_moved), (Some(5.0), true));
    assert_eq!((n.stats.iops, n.stats.p50), (0.0, None));
}

#[test]
fn quantile_interpolates_inside_a_bucket() {
    let b: BTreeMap<Bound, f64> = [(0.001, 10.0), (0.002, 30.0), (f64::INFINITY, 30.0)]
        .into_iter()
        .map(|(le, n)| (Bound(le), n))
        .collect();
    // Rank 15: 5 of the 20 in (1 ms, 2 ms].
    assert_eq!(model::quantile(&b, 0.5), Some(0.00125));
    assert_eq!(model::quantile(&b, 1.0), Some(0.002));
    assert_eq!(model::highest(&b), Some(0.002));
    assert_eq!(model::quantile(&BTreeMap::new(), 0.5), None);
    let none: BTreeMap<Bound, f64> = [(Bound(f64::INFINITY), 0.0)].into_iter().collect();
    assert_eq!(
        (model::quantile(&none, 0.5), model::highest(&none)),
        (None, None)
    );
}

#[test]
fn a_reset_counter_counts_from_zero() {
    // The agent restarted between the scrapes: its counters start again below the old ones.
    let before = snapshot(&scrape_text(5000, [1000, 2000, 4000, 5000], 50.0, 1, 4));
    let after = snapshot(&scrape_text(100, [100, 100, 100, 100], 0.5, 1, 4));
    let rows = model::rates(&before, &after, 1.0);
    let q1 = &rows[0].queues[0];
    assert_eq!(q1.stats.iops, 100.0);
    assert_eq!(q1.stats.util, 0.5);
    assert_eq!(q1.stats.p50, Some(2f64.powi(-12) / 2.0));
}

#[test]
fn sorting_by_key_and_reversed() {
    let mut rows = two_scrapes();
    model::sort(&mut rows, SortKey::Iops, false);
    let order = |r: &[model::ControllerRow]| -> Vec<String> {
        r.iter()
            .flat_map(|c| {
                std::iter::once(c.name.clone())
                    .chain(c.queues.iter().map(|q| format!("q{}", q.qid)))
            })
            .collect()
    };
    assert_eq!(order(&rows), ["nvme0", "q1", "q2", "nvme1", "q1"]);
    model::sort(&mut rows, SortKey::Iops, true);
    assert_eq!(order(&rows), ["nvme1", "q1", "nvme0", "q2", "q1"]);
    model::sort(&mut rows, SortKey::Name, false);
    assert_eq!(order(&rows), ["nvme0", "q1", "q2", "nvme1", "q1"]);
    assert_eq!(SortKey::Name.step(1), SortKey::Iops);
    assert_eq!(SortKey::Iops.step(-1), SortKey::Name);
    assert_eq!(SortKey::parse("p99"), Ok(SortKey::P99));
    assert!(SortKey::parse("latency").is_err());
}

/// The width the table keeps to: a terminal's default.
const WIDTH: usize = 80;

#[test]
fn once_table_fits_80_columns_with_a_stable_header() {
    let rows = two_scrapes();
    let o = Options {
        agent: "127.0.0.1:9856".into(),
        interval: Duration::from_secs(2),
        sort: SortKey::Iops,
        reverse: false,
        once: true,
    };
    let text = once_text(&format!("agent {}", o.agent), 2.0, &o, &rows);
    let want = "\
# nvmeof-exporter top: agent 127.0.0.1:9856, interval 2.000 s, sort iops
CTRL    STATE      TR      IOPS    MB/s    P50    P99    MAX INFL UTL%  ERR RECN
nvme0   live       tcp      510    2.05  482us  977us    inf    3   38    3    -
 q1                         500    2.05  488us  977us    inf    3   75
 q2                          10    0.01  122us  242us  244us    0    0
nvme1   connecting rdma       0    0.00      -      -      -    0    0    0    5
 q1                           0    0.00      -      -      -    0    0
";
    assert_eq!(text, want);
    for line in text.lines().skip(1) {
        assert!(line.len() <= WIDTH, "{line:?}");
        assert!(line.is_ascii(), "{line:?}");
    }
    assert_eq!(render::header().len(), WIDTH);
}

#[test]
fn terminal_lines_are_bounded_by_the_screen() {
    let rows = two_scrapes();
    // Header and 5 rows fit in 6; in 4, the header, 2 rows and a line for the 3 others.
    assert_eq!(render::lines(&rows, SortKey::Iops, 6).len(), 6);
    let short = render::lines(&rows, SortKey::Iops, 4);
    assert_eq!(short.len(), 4);
    assert!(short[3].to_string().contains("3 more rows"), "{}", short[3]);
    assert_eq!(render::lines(&rows, SortKey::Iops, 1).len(), 1);
    assert_eq!(render::lines(&rows, SortKey::Iops, 2).len(), 2);
}

#[test]
fn figures_keep_to_their_columns() {
    assert_eq!(render::count(1234567.0, 7), "1234567");
    assert_eq!(render::count(12345678.0, 7), "12346k");
    assert_eq!(render::count(1234567890.0, 7), "1234.6M");
    assert_eq!(render::count(12345.0, 4), "12k");
    assert_eq!(render::mbps(12345.678), "12345.7");
    assert_eq!(render::latency(0.000954), "954us");
    assert_eq!(render::latency(0.0009997), "1.00ms");
    assert_eq!(render::latency(0.0123), "12.3ms");
    assert_eq!(render::latency(0.09996), "100ms");
    assert_eq!(render::latency(2.5), "2.50s");
    assert_eq!(render::latency(256.0), "256s");
}

#[test]
fn malformed_scrapes_give_rows_not_panics() {
    for text in [
        "",
        "nvmeof_queue_depth{controller=\"nvme0\",queue=\"x\"} 1\n",
        "nvmeof_queue_depth{controller=\"nvme0\",queue=\"1\"} NaN\n",
        "nvmeof_io_latency_seconds_bucket{controller=\"nvme0\",queue=\"1\",opclass=\"read\",le=\"abc\"} 1\n",
        "nvmeof_io_latency_seconds_bucket{controller=\"nvme0\",queue=\"1\",opclass=\"read\",le=\"NaN\"} -1\n",
        "nvmeof_io_latency_seconds_count{controller=\"nvme0\",queue=\"99999999999\"} 1e308\n",
        "nvmeof_subsystem_state{controller=\"nvme0\"} 1\n",
    ] {
        let a = snapshot(text);
        let mut rows = model::rates(&model::Snapshot::default(), &a, 0.0);
        model::sort(&mut rows, SortKey::P99, false);
        let out = render::text(&rows);
        assert!(out.lines().all(|l| l.len() <= WIDTH), "{out}");
    }
}

#[test]
fn flags() {
    let o = Options::try_parse_from(["--once", "--sort=p99", "--interval=2s"]).unwrap();
    assert!(o.once && !o.reverse);
    assert_eq!((o.sort, o.interval), (SortKey::P99, Duration::from_secs(2)));
    assert_eq!(o.agent, "127.0.0.1:9856");
    assert!(Options::try_parse_from(["--sort=latency"]).is_err());
}
