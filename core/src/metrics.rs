//! The metrics registry: numbers parts of the engine register as they start (a source its
//! counters, the reloader its generation) and `/metrics` renders in the Prometheus text format
//! when scraped. It lives here, below every part that registers, so that a source can register
//! its own metrics without importing the admin endpoint that serves them.

use std::sync::{Arc, Mutex};

/// A number `/metrics` reports, read when scraped.
///
/// Metrics registered under one `name` with different `labels` are the samples of one family
/// (`sluice_http_source_requests_total{outcome="accepted"}`, `…{outcome="unauthorized"}`): they
/// are rendered together under one `HELP` and `TYPE`, as the text format requires, so `help`
/// and `kind` should agree between them.
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// `(label, value)` pairs of this sample; empty for a family of one. Static, and written
    /// as they are: they must not need escaping (no `"`, `\` or newline).
    pub labels: &'static [(&'static str, &'static str)],
    pub read: Box<dyn Fn() -> f64 + Send + Sync>,
}

/// One sample of a [`DynamicFamily`]: its `(label, value)` pairs and its value.
pub type Sample = (Vec<(&'static str, String)>, f64);

/// A family whose samples are only known when scraped (one per disabled node, say): each
/// sample is `(labels, value)`, label values escaped as the text format requires.
pub struct DynamicFamily {
    pub name: &'static str,
    pub help: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    pub samples: Box<dyn Fn() -> Vec<Sample> + Send + Sync>,
}

/// Metrics parts of the engine register as they start (a source after it connects).
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Vec<Metric>>>, Arc<Mutex<Vec<DynamicFamily>>>, Arc<Mutex<Vec<HistogramFamily>>>);

/// A histogram's observations: how many fell at or under each of `bounds` (not cumulative:
/// the renderer sums them), how many in all, and their sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

/// One histogram of a [`HistogramFamily`]: its `(label, value)` pairs and its observations.
pub type HistogramSample = (Vec<(&'static str, String)>, Histogram);

/// A family of histograms known when scraped: one per label set (a node's call latency).
pub struct HistogramFamily {
    pub name: &'static str,
    pub help: &'static str,
    /// The buckets' upper bounds, ascending (`+Inf` is added).
    pub bounds: &'static [f64],
    pub samples: Box<dyn Fn() -> Vec<HistogramSample> + Send + Sync>,
}

impl Metrics {
    pub fn register(&self, metric: Metric) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(metric);
    }

    /// Registers a family rendered after the fixed ones; with no samples, only its `HELP` and
    /// `TYPE` lines are written (so a scraper sees it exists).
    pub fn register_dynamic(&self, family: DynamicFamily) {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).push(family);
    }

    /// Registers a histogram family, rendered after the others.
    pub fn register_histogram(&self, family: HistogramFamily) {
        self.2.lock().unwrap_or_else(|p| p.into_inner()).push(family);
    }

    /// The Prometheus text exposition of every metric: families in the order their first
    /// sample was registered, each family's samples together under one `HELP` and `TYPE`.
    pub fn render(&self) -> String {
        let metrics = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut families: Vec<&str> = Vec::new();
        for (i, first) in metrics.iter().enumerate() {
            if families.contains(&first.name) {
                continue;
            }
            families.push(first.name);
            out.push_str(&format!("# HELP {} {}\n# TYPE {} {}\n", first.name, first.help, first.name, first.kind));
            for m in metrics[i..].iter().filter(|m| m.name == first.name) {
                out.push_str(m.name);
                if !m.labels.is_empty() {
                    let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                    out.push_str(&format!("{{{}}}", labels.join(",")));
                }
                out.push_str(&format!(" {}\n", (m.read)()));
            }
        }
        for family in self.1.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let (name, kind) = (family.name, family.kind);
            out.push_str(&format!("# HELP {name} {}\n# TYPE {name} {kind}\n", family.help));
            for (labels, value) in (family.samples)() {
                out.push_str(name);
                if !labels.is_empty() {
                    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                    out.push_str(&format!("{{{}}}", labels.join(",")));
                }
                out.push_str(&format!(" {value}\n"));
            }
        }
        for family in self.2.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let name = family.name;
            out.push_str(&format!("# HELP {name} {}\n# TYPE {name} histogram\n", family.help));
            for (labels, histogram) in (family.samples)() {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                let with = |extra: Option<String>| {
                    let all: Vec<String> = labels.iter().cloned().chain(extra).collect();
                    if all.is_empty() { String::new() } else { format!("{{{}}}", all.join(",")) }
                };
                let mut below = 0;
                for (i, bound) in family.bounds.iter().enumerate() {
                    below += histogram.counts.get(i).copied().unwrap_or(0);
                    out.push_str(&format!("{name}_bucket{} {below}\n", with(Some(format!("le=\"{bound}\"")))));
                }
                out.push_str(&format!("{name}_bucket{} {}\n", with(Some("le=\"+Inf\"".into())), histogram.count));
                out.push_str(&format!("{name}_sum{} {}\n", with(None), histogram.sum));
                out.push_str(&format!("{name}_count{} {}\n", with(None), histogram.count));
            }
        }
        out
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Labels of a sample (see [`Metric::labels`]).
pub type Labels = &'static [(&'static str, &'static str)];

/// One sample read from a component's stats `S`: `(name, help, kind, labels, read)`.
pub type StatMetric<S> = (&'static str, &'static str, &'static str, Labels, fn(&S) -> u64);

impl Metrics {
    /// Registers numbers of a component's stats, each `read` picking its number out of the
    /// shared stats at every scrape (nothing is copied in between).
    pub fn register_stats<S: Send + Sync + 'static, const N: usize>(&self, stats: &Arc<S>, table: [StatMetric<S>; N]) {
        for (name, help, kind, labels, read) in table {
            let stats = stats.clone();
            self.register(Metric { name, help, kind, labels, read: Box::new(move || read(&stats) as f64) });
        }
    }
}
