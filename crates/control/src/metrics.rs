//! The one Prometheus registry `/metrics` renders: named families (gauge, counter, histogram)
//! with their help, each sample with its labels, label values escaped as the text format asks.
//! The cluster's families are filled from the store (`api`), each node's from its own state
//! (`alcubierre_storage_node::metrics`), and all are rendered once, each family once.

use std::collections::HashMap;
use std::fmt::Write;

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up.
    Counter,
    /// Observations counted in cumulative buckets.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One family: its samples, rendered after its HELP and TYPE lines.
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    lines: String,
}

/// Label pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// `{a="x",b="y"}` with values escaped (backslash, quote, newline); empty for no labels.
fn labels(l: Labels, extra: Option<(&str, &str)>) -> String {
    let mut out = String::new();
    for (i, (k, v)) in l.iter().copied().chain(extra).enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !out.is_empty() {
        out.push('}');
    }
    out
}

impl Family {
    /// A sample of a gauge or counter.
    pub fn sample(&mut self, l: Labels, value: impl std::fmt::Display) -> &mut Self {
        debug_assert!(self.kind != Kind::Histogram, "{}: a histogram", self.name);
        let _ = writeln!(self.lines, "{}{} {value}", self.name, labels(l, None));
        self
    }

    /// A histogram's samples: `counts[i]` observations at most `bounds[i]` (cumulative; one
    /// more count than bounds, the last for `+Inf`), and their `sum`.
    pub fn histogram(&mut self, l: Labels, bounds: &[f64], counts: &[u64], sum: f64) -> &mut Self {
        debug_assert!(
            self.kind == Kind::Histogram,
            "{}: not a histogram",
            self.name
        );
        for (i, c) in counts.iter().enumerate() {
            let le = bounds.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                self.lines,
                "{}_bucket{} {c}",
                self.name,
                labels(l, Some(("le", &le)))
            );
        }
        let ls = labels(l, None);
        let _ = writeln!(self.lines, "{}_sum{ls} {sum}", self.name);
        let _ = writeln!(
            self.lines,
            "{}_count{ls} {}",
            self.name,
            counts.last().copied().unwrap_or(0)
        );
        self
    }
}

/// Families in the order they were first asked for.
#[derive(Default)]
pub struct Registry {
    families: Vec<Family>,
    index: HashMap<&'static str, usize>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) -> &mut Family {
        let i = *self.index.entry(name).or_insert_with(|| {
            self.families.push(Family {
                name,
                help,
                kind,
                lines: String::new(),
            });
            self.families.len() - 1
        });
        let f = &mut self.families[i];
        debug_assert_eq!(f.kind, kind, "{name} registered with two types");
        f
    }

    /// The gauge family `name`.
    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, Kind::Gauge, help)
    }

    /// The counter family `name` (by convention ending in `_total`).
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, Kind::Counter, help)
    }

    /// The histogram family `name`.
    pub fn histogram(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, Kind::Histogram, help)
    }

    /// The text exposition format, each family once.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.name());
            out.push_str(&f.lines);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_once_with_escaped_labels() {
        let mut r = Registry::new();
        r.gauge("a_bytes", "Bytes.").sample(&[("node", "n1")], 5);
        r.counter("b_total", "Things.").sample(&[], 7);
        r.gauge("a_bytes", "Bytes.")
            .sample(&[("node", "say \"hi\"\\\n")], 6);
        r.histogram("c_seconds", "Latency.").histogram(
            &[("op", "read")],
            &[0.001, 0.01],
            &[1, 3, 4],
            0.5,
        );
        assert_eq!(
            r.render(),
            "# HELP a_bytes Bytes.\n# TYPE a_bytes gauge\na_bytes{node=\"n1\"} 5\n\
             a_bytes{node=\"say \\\"hi\\\"\\\\\\n\"} 6\n\
             # HELP b_total Things.\n# TYPE b_total counter\nb_total 7\n\
             # HELP c_seconds Latency.\n# TYPE c_seconds histogram\n\
             c_seconds_bucket{op=\"read\",le=\"0.001\"} 1\nc_seconds_bucket{op=\"read\",le=\"0.01\"} 3\n\
             c_seconds_bucket{op=\"read\",le=\"+Inf\"} 4\nc_seconds_sum{op=\"read\"} 0.5\n\
             c_seconds_count{op=\"read\"} 4\n"
        );
    }
}
