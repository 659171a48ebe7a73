//! Trunk counters and per-trunk gauges, rendered with the process metrics
//! (`switchboard_trunk_*`).

use std::fmt::Write as _;
use std::sync::{Mutex, Weak};

use super::runtime::Trunks;
use crate::metrics::Counter;

/// Counters of outbound registration and probing, and the table whose
/// trunks get a gauge each.
#[derive(Debug, Default)]
pub struct TrunkMetrics {
    /// REGISTER requests that got a 2xx (refreshes included).
    pub registrations: Counter,
    /// Registration attempts that failed (challenge refused, error, timeout).
    pub registration_failures: Counter,
    /// OPTIONS probes sent.
    pub probes: Counter,
    /// OPTIONS probes that failed (timeout, 408, 5xx, not sent).
    pub probe_failures: Counter,
    table: Mutex<Weak<Trunks>>,
}

impl TrunkMetrics {
    /// Renders per-trunk gauges for this table from now on.
    pub fn attach(&self, trunks: &std::sync::Arc<Trunks>) {
        if let Ok(mut table) = self.table.lock() {
            *table = std::sync::Arc::downgrade(trunks);
        }
    }

    /// Appends the Prometheus text of these metrics to `out`.
    pub fn render(&self, out: &mut String) {
        for (name, counter) in [
            ("switchboard_trunk_registrations_total", &self.registrations),
            (
                "switchboard_trunk_registration_failures_total",
                &self.registration_failures,
            ),
            ("switchboard_trunk_probes_total", &self.probes),
            (
                "switchboard_trunk_probe_failures_total",
                &self.probe_failures,
            ),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", counter.get());
        }
        let Some(trunks) = self.table.lock().ok().and_then(|t| t.upgrade()) else {
            return;
        };
        let reports = trunks.report();
        type Gauge = (&'static str, fn(&super::TrunkReport) -> u64);
        let gauges: [Gauge; 3] = [
            ("switchboard_trunk_up", |r| u64::from(r.up)),
            ("switchboard_trunk_registered", |r| u64::from(r.registered)),
            ("switchboard_trunk_calls", |r| u64::from(r.active_calls)),
        ];
        for (name, value) in gauges {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for report in &reports {
                let _ = writeln!(out, "{name}{{trunk=\"{}\"}} {}", report.name, value(report));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_gauge_per_trunk() {
        let trunks = Trunks::new(vec![
            serde_saphyr::from_str("name: a\nhost: 192.0.2.1\n").unwrap(),
        ]);
        let metrics = TrunkMetrics::default();
        metrics.attach(&trunks);
        metrics.probes.inc();
        trunks
            .get("a")
            .unwrap()
            .update_status(|s| s.registered = true);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("switchboard_trunk_probes_total 1\n"), "{out}");
        assert!(
            out.contains("switchboard_trunk_up{trunk=\"a\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("switchboard_trunk_registered{trunk=\"a\"} 1\n"),
            "{out}"
        );
    }
}
