//! Metrics through the `metrics` facade: the library records, the application
//! chooses the exporter (`leasehold run --metrics-addr` serves Prometheus).
//! Without an installed recorder these calls cost next to nothing.
//!
//! This module has no public items: install a `metrics` recorder (e.g.
//! `metrics-exporter-prometheus`) in your application and these appear.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `leasehold_is_holder` | gauge (1/0) | name |
//! | `leasehold_fencing_token` | gauge | name |
//! | `leasehold_acquisitions_total` | counter | name |
//! | `leasehold_losses_total` | counter | name, reason (`refused`, `unconfirmed`) |
//! | `leasehold_acquire_wait_seconds` | histogram | name |
//! | `leasehold_renew_duration_seconds` | histogram | — (one sample per renewal round trip) |
//! | `leasehold_containment` | gauge (1) | mode (`pidns`, `cgroup`, `group`): what holds the job's processes together |

use std::time::Duration;

pub(crate) fn acquired(name: &str, token: u64, waited: Duration) {
    let name = name.to_string();
    metrics::counter!("leasehold_acquisitions_total", "name" => name.clone()).increment(1);
    metrics::gauge!("leasehold_is_holder", "name" => name.clone()).set(1.0);
    metrics::gauge!("leasehold_fencing_token", "name" => name.clone()).set(token as f64);
    metrics::histogram!("leasehold_acquire_wait_seconds", "name" => name)
        .record(waited.as_secs_f64());
}

pub(crate) fn released(name: &str) {
    metrics::gauge!("leasehold_is_holder", "name" => name.to_string()).set(0.0);
}

pub(crate) fn lost(name: &str, reason: &'static str) {
    let name = name.to_string();
    metrics::counter!("leasehold_losses_total", "name" => name.clone(), "reason" => reason)
        .increment(1);
    metrics::gauge!("leasehold_is_holder", "name" => name).set(0.0);
}

pub(crate) fn renewed(took: Duration) {
    metrics::histogram!("leasehold_renew_duration_seconds").record(took.as_secs_f64());
}

pub(crate) fn containment(mode: &'static str) {
    metrics::gauge!("leasehold_containment", "mode" => mode).set(1.0);
}
