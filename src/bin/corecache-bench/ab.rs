//! `ab`: two builds of a memcached-protocol server (two corecache commits, or
//! corecache with and without a flag) measured in alternated rounds: what a
//! request costs each in server CPU time, user and kernel apart.
//!
//! On a shared machine the same binary's cost moves by 15% or more from one run
//! to the next, more than most changes are worth. Alternating the two servers
//! round by round (A B, then B A, ...) puts both under the same drift, and the
//! round's own ratio B/A cancels what the round shared; the medians of those
//! ratios and of each side's costs are what to quote.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::compare::{find_binary, memcached_style_target, next_free_port, Server, Target};
use crate::report::median;
use crate::workload::Workload;
use crate::{client, measure, parse_cpus, LoadArgs, WorkloadArgs};

#[derive(Args)]
pub struct AbArgs {
    /// Server A (the baseline).
    #[arg(long)]
    a: PathBuf,
    /// Server B (the change).
    #[arg(long)]
    b: PathBuf,
    /// Extra arguments for A, whitespace-separated (after `-p -m -t -U 0`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    a_args: String,
    /// Extra arguments for B.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    b_args: String,
    /// Rounds; each runs A and B once, in alternating order (an even count
    /// puts each first equally often).
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Workload profile: default, multiget10, seed.
    #[arg(long, default_value = "default")]
    profile: String,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Memory limit given to both servers, in MB.
    #[arg(long, default_value_t = 256)]
    memory_mb: u64,
    /// CPUs the servers are pinned to; their thread count is the number of CPUs.
    #[arg(long, default_value = "1", value_parser = parse_cpus)]
    server_cpus: ::std::vec::Vec<usize>, // full path: one value parsed to a list
    /// Also write every run and the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for the servers' logs.
    #[arg(long, default_value = "bench-results/ab-logs")]
    logs: PathBuf,
    /// First port to start servers on.
    #[arg(long, default_value_t = 31300)]
    base_port: u16,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    load: LoadArgs,
}

/// What one run of one side cost, per request, in nanoseconds of server CPU.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Cost {
    pub total_ns: f64,
    pub user_ns: f64,
    pub system_ns: f64,
}

#[derive(Debug, Serialize)]
struct Run {
    round: usize,
    side: &'static str,
    requests: u64,
    cost: Cost,
}

/// Medians over the rounds.
#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Each figure the median of its own (so user + kernel need not add up to
    /// the total).
    pub a: Cost,
    pub b: Cost,
    /// Each round's B/A of the total cost, in round order.
    pub ratios: Vec<f64>,
    pub median_ratio: f64,
    /// Rounds in which B cost less than A.
    pub b_cheaper: usize,
    /// Two-sided sign test of those rounds against a coin toss: how likely a
    /// split at least this uneven is when neither side is cheaper. On a noisy
    /// machine the medians move by a few percent either way; a difference
    /// is shown when this is small (below 0.05 takes 6 rounds of 6, 8 of 8 or
    /// 9 of 10).
    pub sign_test_p: f64,
    /// The same round by round comparison of the user and the kernel time
    /// alone. A change to the server's own code moves its user time, while
    /// the kernel's share (most of it on loopback) carries most of the
    /// noise, so the user ratios show such a change when the totals do not.
    pub user: PartRatios,
    pub kernel: PartRatios,
}

/// Each round's B/A of one part of the cost.
#[derive(Debug, Serialize, PartialEq)]
pub struct PartRatios {
    pub ratios: Vec<f64>,
    pub median_ratio: f64,
    /// Rounds in which B's part was the smaller.
    pub b_lower: usize,
}

impl PartRatios {
    fn of(a: &[Cost], b: &[Cost], part: fn(&Cost) -> f64) -> PartRatios {
        let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| part(b) / part(a)).collect();
        PartRatios {
            median_ratio: median(ratios.clone()),
            b_lower: ratios.iter().filter(|&&r| r < 1.0).count(),
            ratios,
        }
    }
}

/// Two-sided sign test: the chance of `k` or a more uneven split of `n` fair
/// coin tosses (rounds with a ratio of exactly 1 are left out by the caller).
pub fn sign_test(k: usize, n: usize) -> f64 {
    debug_assert!(k <= n, "{k} of {n} rounds");
    if n == 0 {
        return 1.0;
    }
    let tail = k.min(n - k);
    // P(X <= tail) for X ~ Binomial(n, 1/2), summed in f64 (n is a few dozen
    // rounds at most, so the binomial coefficients are exact).
    let mut coefficient = 1.0f64;
    let mut sum = 0.0f64;
    for i in 0..=tail {
        if i > 0 {
            coefficient = coefficient * (n - i + 1) as f64 / i as f64;
        }
        sum += coefficient;
    }
    (2.0 * sum / 2f64.powi(n as i32)).min(1.0)
}

fn median_cost(costs: &[Cost]) -> Cost {
    let of = |f: fn(&Cost) -> f64| median(costs.iter().map(f).collect());
    Cost {
        total_ns: of(|c| c.total_ns),
        user_ns: of(|c| c.user_ns),
        system_ns: of(|c| c.system_ns),
    }
}

/// The summary of paired rounds: `a[i]` and `b[i]` ran in the same round.
pub fn summarize(a: &[Cost], b: &[Cost]) -> Summary {
    let total = PartRatios::of(a, b, |c| c.total_ns);
    let decided = total.ratios.iter().filter(|&&r| r != 1.0).count();
    Summary {
        a: median_cost(a),
        b: median_cost(b),
        median_ratio: total.median_ratio,
        b_cheaper: total.b_lower,
        sign_test_p: sign_test(total.b_lower, decided),
        ratios: total.ratios,
        user: PartRatios::of(a, b, |c| c.user_ns),
        kernel: PartRatios::of(a, b, |c| c.system_ns),
    }
}

fn side(name: &str, bin: &std::path::Path, args: &str, opts: &AbArgs) -> Result<Target, String> {
    find_binary(bin).ok_or_else(|| format!("{name}: {} not found", bin.display()))?;
    let extra: Vec<&str> = args.split_whitespace().collect();
    memcached_style_target(
        name,
        bin,
        "",
        opts.memory_mb,
        opts.server_cpus.len(),
        &extra,
    )
}

/// Starts a side, prefills its keys, runs the load; returns its cost per request.
fn run_side(t: &Target, wl: &Workload, opts: &AbArgs, port: u16) -> Result<(u64, Cost), String> {
    let log = opts.logs.join(format!("{}-{port}.log", t.name));
    let server = Server::start(t, port, &opts.server_cpus, &log)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // A side that cannot hold the keys would serve cheap misses and look cheaper.
    let prefill =
        client::prefill(addr, t.protocol, wl).map_err(|e| format!("{} prefill: {e}", t.name))?;
    if prefill.errors > 0 {
        return Err(format!(
            "{}: {} keys of the prefill not stored",
            t.name, prefill.errors
        ));
    }
    let r = measure(
        &t.name,
        t.protocol,
        addr,
        wl,
        opts.pipeline,
        &opts.load,
        Some(server.pid()),
        None,
    )?;
    drop(server);
    let bad = r.errors + r.key_mismatches + r.conn_errors;
    if bad > 0 || r.requests == 0 {
        return Err(format!(
            "{}: {} requests, {} error replies, {} key mismatches, {} connection errors",
            t.name, r.requests, r.errors, r.key_mismatches, r.conn_errors
        ));
    }
    let (Some(total), Some(user)) = (r.server_cpu_s, r.server_user_cpu_s) else {
        return Err(format!("{}: no server CPU time", t.name));
    };
    // /proc counts in clock ticks (10 ms): a window this short measures nothing.
    if total < 0.05 {
        return Err(format!(
            "{}: {total:.2} s of server CPU is too little to measure; lengthen --duration",
            t.name
        ));
    }
    let per = |s: f64| s * 1e9 / r.requests as f64;
    Ok((
        r.requests,
        Cost {
            total_ns: per(total),
            user_ns: per(user),
            system_ns: per(total - user),
        },
    ))
}

pub fn run(opts: AbArgs) -> Result<(), String> {
    if opts.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let wl = opts.workload.apply(Workload::profile(&opts.profile)?);
    std::fs::create_dir_all(&opts.logs).map_err(|e| format!("{}: {e}", opts.logs.display()))?;
    let sides = [
        side("A", &opts.a, &opts.a_args, &opts)?,
        side("B", &opts.b, &opts.b_args, &opts)?,
    ];
    let mut costs: [Vec<Cost>; 2] = Default::default();
    let mut runs = Vec::new();
    let mut failure = None;
    let mut port = opts.base_port;
    'rounds: for round in 0..opts.rounds {
        // A B, then B A: a drift during the round weighs on both alike.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            port = next_free_port(port.wrapping_add(1));
            let (requests, cost) = match run_side(&sides[i], &wl, &opts, port) {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(format!("round {}: {e}", round + 1));
                    break 'rounds;
                }
            };
            let name = if i == 0 { "A" } else { "B" };
            println!(
                "round {} {name}: {:.0} ns per request (user {:.0}, kernel {:.0}), {requests} requests",
                round + 1,
                cost.total_ns,
                cost.user_ns,
                cost.system_ns
            );
            costs[i].push(cost);
            runs.push(Run {
                round: round + 1,
                side: name,
                requests,
                cost,
            });
        }
    }
    // Rounds that ran both sides are reported even when a later one failed.
    let complete = costs[0].len().min(costs[1].len());
    if complete > 0 {
        let s = summarize(&costs[0][..complete], &costs[1][..complete]);
        report(&s);
        if let Some(path) = &opts.json {
            let json = serde_json::json!({
                "a": { "bin": opts.a, "args": opts.a_args },
                "b": { "bin": opts.b, "args": opts.b_args },
                "workload": wl,
                "pipeline": opts.pipeline,
                "memory_mb": opts.memory_mb,
                "server_cpus": opts.server_cpus,
                "client_cpus": opts.load.client_cpus,
                "duration_s": opts.load.duration,
                "warmup_s": opts.load.warmup,
                "runs": runs,
                "summary": s,
            });
            std::fs::write(path, serde_json::to_string_pretty(&json).unwrap())
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    failure.map_or(Ok(()), Err)
}

fn report(s: &Summary) {
    for (name, c) in [("A", s.a), ("B", s.b)] {
        println!(
            "{name} medians: {:.0} ns per request (user {:.0}, kernel {:.0}; each its own median)",
            c.total_ns, c.user_ns, c.system_ns
        );
    }
    let ratios: Vec<String> = s.ratios.iter().map(|r| format!("{r:.3}")).collect();
    println!(
        "B/A by round: {} (median {:.3}; B cheaper in {} of {}, sign test p = {:.3})",
        ratios.join(" "),
        s.median_ratio,
        s.b_cheaper,
        s.ratios.len(),
        s.sign_test_p
    );
    for (name, part) in [("user", &s.user), ("kernel", &s.kernel)] {
        let ratios: Vec<String> = part.ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "{name} B/A by round: {} (median {:.3}; B lower in {} of {})",
            ratios.join(" "),
            part.median_ratio,
            part.b_lower,
            part.ratios.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(total: f64, user: f64) -> Cost {
        Cost {
            total_ns: total,
            user_ns: user,
            system_ns: total - user,
        }
    }

    #[test]
    fn summary_pairs_rounds_and_takes_medians() {
        let a = [cost(500.0, 200.0), cost(600.0, 250.0), cost(550.0, 230.0)];
        let b = [cost(450.0, 150.0), cost(660.0, 260.0), cost(495.0, 200.0)];
        let s = summarize(&a, &b);
        assert_eq!(s.a, cost(550.0, 230.0));
        assert_eq!(
            s.b,
            Cost {
                total_ns: 495.0,
                user_ns: 200.0,
                system_ns: 300.0
            }
        );
        // Rounds: 450/500 = 0.9, 660/600 = 1.1, 495/550 = 0.9, in round order.
        let r: Vec<String> = s.ratios.iter().map(|r| format!("{r:.2}")).collect();
        assert_eq!(r, ["0.90", "1.10", "0.90"]);
        assert!((s.median_ratio - 0.9).abs() < 1e-9);
        assert_eq!(s.b_cheaper, 2);
        // 2 of 3: P(X <= 1) = 4/8, both tails 1.
        assert_eq!(s.sign_test_p, 1.0);
        // User: 150/200, 260/250, 200/230; kernel: 300/300, 400/350, 295/320.
        let r: Vec<String> = s.user.ratios.iter().map(|r| format!("{r:.3}")).collect();
        assert_eq!(r, ["0.750", "1.040", "0.870"]);
        assert!((s.user.median_ratio - 200.0 / 230.0).abs() < 1e-9);
        assert_eq!(s.user.b_lower, 2);
        let r: Vec<String> = s.kernel.ratios.iter().map(|r| format!("{r:.3}")).collect();
        assert_eq!(r, ["1.000", "1.143", "0.922"]);
        assert_eq!(s.kernel.b_lower, 1);
    }

    #[test]
    fn sign_test_matches_the_binomial_tails() {
        // 6 of 6: 2 x (1/64).
        assert!((sign_test(6, 6) - 0.03125).abs() < 1e-12);
        assert!((sign_test(0, 6) - 0.03125).abs() < 1e-12);
        // 5 of 6: 2 x (1 + 6)/64.
        assert!((sign_test(5, 6) - 14.0 / 64.0).abs() < 1e-12);
        // 7 of 8: 2 x (1 + 8)/256; 6 of 8: 2 x (1 + 8 + 28)/256.
        assert!((sign_test(7, 8) - 18.0 / 256.0).abs() < 1e-12);
        assert!((sign_test(6, 8) - 74.0 / 256.0).abs() < 1e-12);
        // An even split, or no rounds, shows nothing.
        assert_eq!(sign_test(4, 8), 1.0);
        assert_eq!(sign_test(0, 0), 1.0);
    }
}
