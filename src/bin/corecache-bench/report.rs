//! Results of runs and their presentation: a text summary, a markdown table, JSON
//! and SVG bar charts (written by hand: a few rectangles need no plotting crate).

use std::fmt::Write as _;

use serde::Serialize;

use crate::cpu::CpuTimes;
use crate::recorder::Recorder;

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// One (target, workload, pipeline) measurement.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Which round of a `compare --rounds N` (1 otherwise).
    pub round: usize,
    pub target: String,
    pub workload: String,
    pub pipeline: usize,
    pub conns: usize,
    /// "closed" or "open@RATE".
    pub mode: String,
    pub seconds: f64,
    /// Requests completed in the window (a multi-get counts once).
    pub requests: u64,
    pub ops_per_s: f64,
    pub gets: u64,
    pub sets: u64,
    pub keys_requested: u64,
    pub hits: u64,
    pub misses: u64,
    pub hit_ratio: Option<f64>,
    pub errors: u64,
    pub key_mismatches: u64,
    pub conn_errors: u64,
    pub server_cpu_s: Option<f64>,
    /// Of `server_cpu_s`, the time in user space (the rest is the kernel's).
    pub server_user_cpu_s: Option<f64>,
    pub requests_per_server_cpu_s: Option<f64>,
    pub client_cpu_s: f64,
    pub latency_us: Latency,
    pub probe: String,
    pub prefill_errors: u64,
}

impl RunResult {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: &str,
        workload: &str,
        pipeline: usize,
        conns: usize,
        mode: String,
        seconds: f64,
        rec: &Recorder,
        server_cpu: Option<CpuTimes>,
        client_cpu_s: f64,
    ) -> RunResult {
        let server_cpu_s = server_cpu.map(CpuTimes::total);
        let h = &rec.hist;
        let us = |ns: u64| ns as f64 / 1000.0;
        let latency = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50: us(h.value_at_quantile(0.5)),
                p90: us(h.value_at_quantile(0.9)),
                p99: us(h.value_at_quantile(0.99)),
                p999: us(h.value_at_quantile(0.999)),
                max: us(h.max()),
                mean: h.mean() / 1000.0,
            }
        };
        let requests = rec.requests();
        RunResult {
            round: 1,
            target: target.into(),
            workload: workload.into(),
            pipeline,
            conns,
            mode,
            seconds,
            requests,
            ops_per_s: requests as f64 / seconds,
            gets: rec.gets,
            sets: rec.sets,
            keys_requested: rec.keys,
            hits: rec.hits,
            misses: rec.misses,
            hit_ratio: (rec.keys > 0).then(|| rec.hits as f64 / rec.keys as f64),
            errors: rec.errors,
            key_mismatches: rec.key_mismatches,
            conn_errors: rec.conn_errors,
            server_cpu_s,
            server_user_cpu_s: server_cpu.map(|c| c.user),
            requests_per_server_cpu_s: server_cpu_s
                .filter(|&c| c > 0.0)
                .map(|c| requests as f64 / c),
            client_cpu_s,
            latency_us: latency,
            probe: String::new(),
            prefill_errors: 0,
        }
    }

    /// Human-readable summary for `run`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "{} / {}: {} conns, pipeline {}, {} for {:.1} s",
            self.target, self.workload, self.conns, self.pipeline, self.mode, self.seconds
        );
        let _ = writeln!(
            s,
            "  requests {} ({} gets, {} sets) = {:.0} ops/s",
            self.requests, self.gets, self.sets, self.ops_per_s
        );
        let _ = writeln!(
            s,
            "  keys asked {}: hits {}, misses {}{}",
            self.keys_requested,
            self.hits,
            self.misses,
            self.hit_ratio
                .map(|r| format!(" (hit ratio {:.2}%)", r * 100.0))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  errors {}, key mismatches {}, connection errors {}, prefill errors {}",
            self.errors, self.key_mismatches, self.conn_errors, self.prefill_errors
        );
        let _ = writeln!(
            s,
            "  latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        match (self.server_cpu_s, self.requests_per_server_cpu_s) {
            (Some(c), Some(r)) => {
                let _ = writeln!(
                    s,
                    "  server CPU {c:.2} s -> {r:.0} requests per server CPU-second"
                );
            }
            (Some(c), None) => {
                let _ = writeln!(s, "  server CPU {c:.2} s");
            }
            _ => {}
        }
        let _ = writeln!(s, "  client CPU {:.2} s", self.client_cpu_s);
        if !self.probe.is_empty() {
            let _ = writeln!(s, "  probe: {}", self.probe);
        }
        s
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

/// The comparison table in markdown.
pub fn markdown(results: &[RunResult], header: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{header}\n");
    let _ = writeln!(
        s,
        "| target | workload | pipeline | ops/s | server CPU-s | requests / server CPU-s | p50 us | p99 us | p99.9 us | hit ratio | errors | client CPU-s |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let l = &r.latency_us;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.2} |",
            r.target,
            r.workload,
            r.pipeline,
            r.ops_per_s,
            opt(r.server_cpu_s, 2),
            opt(r.requests_per_server_cpu_s, 0),
            l.p50,
            l.p99,
            l.p999,
            r.hit_ratio
                .map(|h| format!("{:.1}%", h * 100.0))
                .unwrap_or_else(|| "-".into()),
            r.errors + r.key_mismatches + r.conn_errors + r.prefill_errors,
            r.client_cpu_s,
        );
    }
    s
}

/// What a run is compared by across rounds: requests per server CPU-second,
/// or throughput where the server's CPU time is unknown.
fn cost_figure(r: &RunResult) -> f64 {
    r.requests_per_server_cpu_s.unwrap_or(r.ops_per_s)
}

/// The (target, workload, pipeline) groups of `results`, in first-seen order,
/// each with its runs in round order.
fn groups(results: &[RunResult]) -> Vec<Vec<&RunResult>> {
    let mut groups: Vec<Vec<&RunResult>> = Vec::new();
    for r in results {
        let same = |g: &&mut Vec<&RunResult>| {
            let f = g[0];
            (&f.target, &f.workload, f.pipeline) == (&r.target, &r.workload, r.pipeline)
        };
        match groups.iter_mut().find(same) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    for g in &mut groups {
        g.sort_by_key(|r| r.round);
    }
    groups
}

/// The median (the mean of the middle two of an even count); NaN for none.
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// For each (target, workload, pipeline), its run of median requests per
/// server CPU-second over the rounds (the lower middle one of an even count):
/// a real run, so its latencies and counters belong together.
pub fn median_runs(results: &[RunResult]) -> Vec<RunResult> {
    groups(results)
        .into_iter()
        .map(|mut g| {
            g.sort_by(|a, b| cost_figure(a).total_cmp(&cost_figure(b)));
            g[(g.len() - 1) / 2].clone()
        })
        .collect()
}

/// The figures of a `compare` of several rounds, round by round: requests per
/// server CPU-second of every target, and corecache's ratio to each other
/// target in the same round (their medians last).
pub fn rounds_markdown(results: &[RunResult], rounds: usize) -> String {
    let mut s = String::new();
    let round_cols: String = (1..=rounds).map(|r| format!(" round {r} |")).collect();
    let align = "---:|".repeat(rounds + 1);
    let _ = writeln!(s, "Requests per server CPU-second, by round:\n");
    let _ = writeln!(s, "| target | workload | pipeline |{round_cols} median |");
    let _ = writeln!(s, "|---|---|---:|{align}");
    let groups = groups(results);
    let by_round =
        |g: &[&RunResult], r: usize| g.iter().find(|x| x.round == r).map(|x| cost_figure(x));
    for g in &groups {
        let cells: String = (1..=rounds)
            .map(|r| format!(" {} |", opt(by_round(g, r), 0)))
            .collect();
        let m = median(g.iter().map(|x| cost_figure(x)).collect());
        let _ = writeln!(
            s,
            "| {} | {} | {} |{cells} {m:.0} |",
            g[0].target, g[0].workload, g[0].pipeline
        );
    }
    let _ = writeln!(s, "\ncorecache / each other target, same round:\n");
    let _ = writeln!(s, "| workload | pipeline | against |{round_cols} median |");
    let _ = writeln!(s, "|---|---|---|{align}");
    for ours in groups.iter().filter(|g| g[0].target == "corecache") {
        let (workload, pipeline) = (&ours[0].workload, ours[0].pipeline);
        for theirs in groups.iter().filter(|g| {
            g[0].target != "corecache" && &g[0].workload == workload && g[0].pipeline == pipeline
        }) {
            let ratios: Vec<Option<f64>> = (1..=rounds)
                .map(|r| Some(by_round(ours, r)? / by_round(theirs, r)?))
                .collect();
            let cells: String = ratios
                .iter()
                .map(|x| format!(" {} |", opt(*x, 2)))
                .collect();
            let m = median(ratios.iter().flatten().copied().collect());
            let _ = writeln!(
                s,
                "| {workload} | {pipeline} | {} |{cells} {m:.2} |",
                theirs[0].target
            );
        }
    }
    s
}

const PALETTE: &[&str] = &[
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A grouped bar chart: one group per category, one bar per series in each.
/// `values[g][s]` may be None (no bar). `log` draws a log10 y axis.
pub fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[String],
    values: &[Vec<Option<f64>>],
    log: bool,
) -> String {
    let bar_w = 18.0;
    let group_gap = 24.0;
    let left = 80.0;
    let top = 40.0;
    let plot_h = 300.0;
    let bottom = 110.0;
    let group_w = bar_w * series.len().max(1) as f64 + group_gap;
    let width = left + group_w * groups.len().max(1) as f64 + 160.0;
    let height = top + plot_h + bottom;
    let all: Vec<f64> = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|v| *v > 0.0)
        .collect();
    let max = all.iter().cloned().fold(0.0, f64::max).max(1e-9);
    let min = all.iter().cloned().fold(f64::INFINITY, f64::min);
    let (lo, hi) = if log {
        let lo = if min.is_finite() {
            min.log10().floor()
        } else {
            0.0
        };
        (lo, max.log10().ceil().max(lo + 1.0))
    } else {
        (0.0, nice_ceiling(max))
    };
    let y = |v: f64| -> f64 {
        let f = if log {
            (v.max(1e-12).log10() - lo) / (hi - lo)
        } else {
            v / hi
        };
        top + plot_h - f.clamp(0.0, 1.0) * plot_h
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    // Y axis and grid.
    let ticks: Vec<f64> = if log {
        (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=5).map(|i| hi * i as f64 / 5.0).collect()
    };
    for t in ticks {
        let yy = y(t);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            width - 150.0,
            left - 6.0,
            yy + 4.0,
            human(t)
        );
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        esc(y_label)
    );
    for (g, name) in groups.iter().enumerate() {
        let gx = left + group_gap / 2.0 + g as f64 * group_w;
        for (si, v) in values[g].iter().enumerate() {
            let Some(v) = v else { continue };
            let x = gx + si as f64 * bar_w;
            let yy = y(*v);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                bar_w - 2.0,
                top + plot_h - yy,
                PALETTE[si % PALETTE.len()],
                esc(&series[si]),
                human(*v)
            );
        }
        let cx = gx + bar_w * series.len() as f64 / 2.0;
        let _ = writeln!(
            s,
            r#"<text transform="translate({cx:.1},{:.1}) rotate(35)" text-anchor="start">{}</text>"#,
            top + plot_h + 14.0,
            esc(name)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        top + plot_h,
        width - 150.0,
        top + plot_h
    );
    for (si, name) in series.iter().enumerate() {
        let ly = top + 14.0 * si as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{ly:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            width - 140.0,
            PALETTE[si % PALETTE.len()],
            width - 125.0,
            ly + 9.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn nice_ceiling(v: f64) -> f64 {
    let e = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * e >= v {
            return m * e;
        }
    }
    10.0 * e
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Throughput and latency charts for a comparison: groups are (workload,
/// pipeline), series are the targets; latency shows p50 / p99 / p99.9 per target.
pub fn charts(results: &[RunResult]) -> (String, String) {
    let mut groups: Vec<String> = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    for r in results {
        let g = format!("{} p{}", r.workload, r.pipeline);
        if !groups.contains(&g) {
            groups.push(g);
        }
        if !targets.contains(&r.target) {
            targets.push(r.target.clone());
        }
    }
    let find = |g: &str, t: &str| {
        results
            .iter()
            .find(|r| format!("{} p{}", r.workload, r.pipeline) == g && r.target == t)
    };
    let thr: Vec<Vec<Option<f64>>> = groups
        .iter()
        .map(|g| {
            targets
                .iter()
                .map(|t| find(g, t).map(|r| r.ops_per_s))
                .collect()
        })
        .collect();
    let per_cpu: Vec<Vec<Option<f64>>> = groups
        .iter()
        .map(|g| {
            targets
                .iter()
                .map(|t| find(g, t).and_then(|r| r.requests_per_server_cpu_s))
                .collect()
        })
        .collect();
    let mut throughput = bar_chart("Throughput", "requests / s", &groups, &targets, &thr, false);
    throughput.push_str(&bar_chart(
        "Requests per server CPU-second",
        "requests / server CPU-s",
        &groups,
        &targets,
        &per_cpu,
        false,
    ));
    // Two <svg> roots in one file is not valid: nest them under one root.
    let throughput = stack_svgs(&throughput);

    let series: Vec<String> = targets
        .iter()
        .flat_map(|t| ["p50", "p99", "p99.9"].map(|p| format!("{t} {p}")))
        .collect();
    let lat: Vec<Vec<Option<f64>>> = groups
        .iter()
        .map(|g| {
            targets
                .iter()
                .flat_map(|t| {
                    let l = find(g, t).map(|r| r.latency_us.clone());
                    [
                        l.as_ref().map(|l| l.p50),
                        l.as_ref().map(|l| l.p99),
                        l.as_ref().map(|l| l.p999),
                    ]
                })
                .collect()
        })
        .collect();
    let latency = bar_chart(
        "Latency percentiles (log scale)",
        "microseconds",
        &groups,
        &series,
        &lat,
        true,
    );
    (throughput, latency)
}

/// Wraps consecutive `<svg>` documents into one, stacked vertically.
fn stack_svgs(docs: &str) -> String {
    let mut parts = Vec::new();
    let (mut w, mut h) = (0f64, 0f64);
    for doc in docs.split("<svg ").skip(1) {
        let attr = |name: &str| -> f64 {
            doc.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let (dw, dh) = (attr("width"), attr("height"));
        parts.push(format!(r#"<svg y="{h:.0}" {}"#, doc.trim_end()));
        w = w.max(dw);
        h += dh;
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\">\n{}\n</svg>\n",
        parts.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: usize, target: &str, per_cpu: f64) -> RunResult {
        RunResult {
            round,
            target: target.into(),
            workload: "default".into(),
            pipeline: 16,
            conns: 50,
            mode: "closed".into(),
            seconds: 1.0,
            requests: per_cpu as u64,
            ops_per_s: per_cpu,
            gets: 0,
            sets: 0,
            keys_requested: 0,
            hits: 0,
            misses: 0,
            hit_ratio: None,
            errors: 0,
            key_mismatches: 0,
            conn_errors: 0,
            server_cpu_s: Some(1.0),
            server_user_cpu_s: Some(0.5),
            requests_per_server_cpu_s: Some(per_cpu),
            client_cpu_s: 1.0,
            latency_us: Latency::default(),
            probe: String::new(),
            prefill_errors: 0,
        }
    }

    #[test]
    fn rounds_pick_median_runs_and_pair_ratios_by_round() {
        let results = vec![
            run(1, "corecache", 900.0),
            run(1, "null", 1000.0),
            run(2, "null", 2000.0),
            run(2, "corecache", 1000.0),
            run(3, "corecache", 1500.0),
            run(3, "null", 1600.0),
        ];
        let medians = median_runs(&results);
        let picked: Vec<(&str, usize)> = medians
            .iter()
            .map(|r| (r.target.as_str(), r.round))
            .collect();
        assert_eq!(picked, [("corecache", 2), ("null", 3)]);
        let md = rounds_markdown(&results, 3);
        assert!(
            md.contains("| corecache | default | 16 | 900 | 1000 | 1500 | 1000 |"),
            "{md}"
        );
        // 900/1000, 1000/2000, 1500/1600: each round against its own.
        assert!(
            md.contains("| default | 16 | null | 0.90 | 0.50 | 0.94 | 0.90 |"),
            "{md}"
        );
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn chart_is_wellformed_enough() {
        let groups = vec!["default p1".to_string(), "seed p16".to_string()];
        let series = vec!["memcached".to_string(), "redis".to_string()];
        let vals = vec![vec![Some(100.0), Some(80.0)], vec![None, Some(1_200_000.0)]];
        let svg = bar_chart("t", "y", &groups, &series, &vals, false);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<title>").count(), 3);
        let svg = bar_chart("t", "y", &groups, &series, &vals, true);
        assert!(!svg.contains("NaN"));
        let two = stack_svgs(&format!("{svg}{svg}"));
        assert_eq!(two.matches("<svg").count(), 3);
        assert!(two.contains(&format!("height=\"{:.0}\"", 2.0 * 450.0)));
    }
}
