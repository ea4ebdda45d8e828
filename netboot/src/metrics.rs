//! Counters per protocol and outcome, rendered as Prometheus text at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Outcome counters.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    /// Counts one `outcome` of protocol `proto` (`dhcp`, `tftp`, `http`).
    pub fn inc(&self, proto: &'static str, outcome: &'static str) {
        self.add(proto, outcome, 1);
    }

    /// Adds `n`.
    pub fn add(&self, proto: &'static str, outcome: &'static str, n: u64) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((proto, outcome)).or_insert(0) += n;
    }

    /// The current value.
    pub fn get(&self, proto: &str, outcome: &str) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            .find(|((p, o), _)| *p == proto && *o == outcome)
            .map_or(0, |(_, v)| *v)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let mut last = "";
        for ((proto, outcome), v) in c.iter() {
            if *proto != last {
                let _ = writeln!(
                    out,
                    "# HELP ferrox_netboot_{proto}_total {proto} decisions by outcome."
                );
                let _ = writeln!(out, "# TYPE ferrox_netboot_{proto}_total counter");
                last = proto;
            }
            let _ = writeln!(
                out,
                "ferrox_netboot_{proto}_total{{outcome=\"{outcome}\"}} {v}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn render() {
        let m = super::Metrics::default();
        m.inc("dhcp", "offer");
        m.inc("dhcp", "offer");
        m.inc("tftp", "sent");
        assert_eq!(m.get("dhcp", "offer"), 2);
        assert_eq!(
            m.render(),
            "# HELP ferrox_netboot_dhcp_total dhcp decisions by outcome.\n# TYPE ferrox_netboot_dhcp_total counter\nferrox_netboot_dhcp_total{outcome=\"offer\"} 2\n\
             # HELP ferrox_netboot_tftp_total tftp decisions by outcome.\n# TYPE ferrox_netboot_tftp_total counter\nferrox_netboot_tftp_total{outcome=\"sent\"} 1\n"
        );
    }
}
