//! A checked model of the lease protocol, tied to the real scripts.
//! See docs/design.md, "A checked model".

mod support;

#[path = "model/conformance.rs"]
mod conformance;
#[path = "model/redis.rs"]
mod redis;
#[path = "model/resp.rs"]
mod resp;
#[path = "model/system.rs"]
mod system;

use std::time::Instant;

use stateright::{Checker, Model};
use system::*;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Longer runs (CI runs the short ones): `LEASEHOLD_MODEL_LONG=1 cargo test
/// --release --test model`.
fn long() -> bool {
    std::env::var("LEASEHOLD_MODEL_LONG").is_ok()
}

/// No run explores more than this many states (a guard for the machine's
/// memory; the bounded checks stay far below it).
const STATE_CAP: usize = 30_000_000;

const SAFETY: &[&str] = &[
    "never more inside their work than allowed",
    "the fenced resource never goes back",
    "a free lease with a live waiter is taken",
];

/// Explores `sys` exhaustively, depth first (memory: a fingerprint per
/// state); `shortest`: breadth first instead, so that a counterexample is a
/// shortest one (memory: the whole frontier). Returns the checker.
fn explore(sys: Sys, shortest: bool, stop_at: Option<&'static str>) -> Box<dyn Checker<Sys>> {
    let label = sys.label;
    let t = Instant::now();
    let mut b = sys.checker().threads(2).target_state_count(STATE_CAP);
    if let Some(p) = stop_at {
        b = b.finish_when(stateright::HasDiscoveries::AnyOf([p].into_iter().collect()));
    }
    let c: Box<dyn Checker<Sys>> = if shortest {
        Box::new(b.spawn_bfs().join())
    } else {
        Box::new(b.spawn_dfs().join())
    };
    eprintln!(
        "model {label}: {} states ({} unique), depth {}, {:.1?}",
        c.state_count(),
        c.unique_state_count(),
        c.max_depth(),
        t.elapsed()
    );
    c
}

/// No property fails; the `sometimes` ones were seen.
fn verify(sys: Sys) {
    let m = sys.clone();
    let c = explore(sys, false, None);
    for p in SAFETY {
        if let Some(path) = c.discovery(p) {
            panic!(
                "model {}: counterexample to '{p}':\n{}",
                m.label,
                m.trace(&path.into_vec())
            );
        }
    }
    assert!(
        c.discovery("two tenures").is_some(),
        "model {}: never reached a second tenure (bounds too small?)",
        m.label
    );
}

/// `property` fails; prints the counterexample.
fn refute(sys: Sys, property: &'static str) -> String {
    let m = sys.clone();
    let shortest = std::env::var("DFS").is_err();
    let c = explore(sys, shortest, Some(property));
    let path = c
        .discovery(property)
        .unwrap_or_else(|| panic!("model {}: no counterexample to '{property}'", m.label));
    let trace = m.trace(&path.into_vec());
    eprintln!("model {}: counterexample to '{property}':\n{trace}", m.label);
    trace
}

#[test]
fn lease_no_faults() {
    verify(Sys::base("lease, no faults", 1000));
}

/// The model's Redis steps and the real scripts agree on random sequences of
/// operations, faults and clock moves (replies, published messages, keys).
#[test]
fn conformance_with_real_scripts() {
    if !conformance::supported() {
        eprintln!("SKIPPED: the conformance test needs Redis 7.0+ (PEXPIRETIME)");
        return;
    }
    let seeds: Vec<u64> = match env_u64("LEASEHOLD_MODEL_SEED") {
        Some(s) => vec![s],
        None if long() => (1..=40).collect(),
        None => (1..=4).collect(),
    };
    let steps = if long() { 5000 } else { 1500 };
    let mut total: std::collections::BTreeMap<&str, usize> = Default::default();
    for seed in seeds {
        for (k, v) in conformance::run(seed, steps) {
            *total.entry(k).or_default() += v;
        }
    }
    eprintln!("conformance coverage: {total:#?}");
}


fn mutant_deadline_from_reply() -> Sys {
    let mut s = Sys::base("mutant: deadline from the reply", 1000);
    s.clients = vec![
        ClientCfg::new(1000).rate(Rate::Slow),
        ClientCfg::new(1000).rate(Rate::Slow),
    ];
    s.faults = Faults {
        budget: 1,
        lose: true,
        ..Faults::default()
    };
    s.horizon = 1500;
    s.mutants.deadline_from_reply = true;
    s
}

fn stale_grant() -> Sys {
    let mut s = Sys::base("stale grant after a pause", 1000);
    s.clients = vec![ClientCfg::new(1000).acquisitions(2), ClientCfg::new(1000)];
    s.faults = Faults {
        budget: 1,
        pause: 300,
        ..Faults::default()
    };
    s.horizon = 1500;
    s
}

fn uptime_restart() -> Sys {
    let mut s = Sys::base("restart, Redis's uptime", 1000);
    s.uptime = Uptime::Redis;
    s.faults = Faults {
        budget: 1,
        restart_empty: true,
        ..Faults::default()
    };
    s.horizon = 2000;
    s
}

fn sem_wipe() -> Sys {
    let mut s = Sys::base("semaphore, restart, mixed TTLs", 1000);
    s.mode = Mode::Sem { limit: 1 };
    s.clients = vec![ClientCfg::supervisor(5000), ClientCfg::new(1000)];
    s.faults = Faults {
        budget: 1,
        restart_empty: true,
        ..Faults::default()
    };
    s.horizon = 2500;
    s
}

#[test]
fn scratch() {
    let which = std::env::var("WHICH").unwrap_or_default();
    let sys = match which.as_str() {
        "reply" => mutant_deadline_from_reply(),
        "stale" => stale_grant(),
        "uptime" => uptime_restart(),
        "semwipe" => sem_wipe(),
        _ => return,
    };
    refute(sys, SAFETY[0]);
}
