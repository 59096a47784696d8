//! A checked model of the lease protocol, tied to the real scripts.
//! See docs/design.md, "A checked model".

mod support;

#[path = "model/conformance.rs"]
mod conformance;
#[path = "model/redis.rs"]
mod redis;
#[path = "model/resp.rs"]
mod resp;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The model's Redis steps and the real scripts agree on random sequences of
/// operations, faults and clock moves (replies, published messages, keys).
#[test]
fn conformance_with_real_scripts() {
    if !conformance::supported() {
        eprintln!("SKIPPED: the conformance test needs Redis 7.0+ (PEXPIRETIME)");
        return;
    }
    let long = std::env::var("LEASEHOLD_MODEL_LONG").is_ok();
    let seeds: Vec<u64> = match env_u64("LEASEHOLD_MODEL_SEED") {
        Some(s) => vec![s],
        None if long => (1..=40).collect(),
        None => (1..=4).collect(),
    };
    let steps = if long { 5000 } else { 1500 };
    let mut total: std::collections::BTreeMap<&str, usize> = Default::default();
    for seed in seeds {
        for (k, v) in conformance::run(seed, steps) {
            *total.entry(k).or_default() += v;
        }
    }
    eprintln!("conformance coverage: {total:#?}");
}
