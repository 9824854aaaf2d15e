//! The platform's metrics, one set of names in every mode: counters and
//! histograms kept in-process (`Metrics`, shared by the engine and the
//! API), shown as Prometheus text at `/metrics` in the embedded mode, and
//! written as CloudWatch Embedded Metric Format lines by the Lambda
//! functions after each invocation. Gauges (active runs, slots, streams,
//! the hot store's state, open circuits, the oldest queued step) are read
//! when shown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

/// What a metric counts, and in what unit (CloudWatch's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: &'static str,
}

pub const RUNS_STARTED: Metric = Metric {
    name: "agentrun_runs_started_total",
    help: "Runs started",
    unit: "Count",
};
pub const RUNS_ENDED: Metric = Metric {
    name: "agentrun_runs_ended_total",
    help: "Runs ended, by status and stop reason",
    unit: "Count",
};
pub const STEPS_COMMITTED: Metric = Metric {
    name: "agentrun_steps_committed_total",
    help: "Agent steps committed",
    unit: "Count",
};
pub const TOKENS: Metric = Metric {
    name: "agentrun_llm_tokens_total",
    help: "LLM tokens of committed steps, by model and kind (input, output)",
    unit: "Count",
};
pub const COST: Metric = Metric {
    name: "agentrun_cost_micros_total",
    help: "What ended runs cost (run fee and tokens at the model's price), in micro-units",
    unit: "None",
};
pub const STEP_SECONDS: Metric = Metric {
    name: "agentrun_step_duration_seconds",
    help: "Wall time of an agent step (one attempt), by outcome",
    unit: "Seconds",
};
pub const LLM_SECONDS: Metric = Metric {
    name: "agentrun_llm_call_duration_seconds",
    help: "LLM calls, by model and outcome (ok, error)",
    unit: "Seconds",
};
pub const TOOL_SECONDS: Metric = Metric {
    name: "agentrun_tool_call_duration_seconds",
    help: "Tool calls with their retries, by kind (http, builtin) and outcome (ok, error)",
    unit: "Seconds",
};
pub const WEBHOOK_ATTEMPTS: Metric = Metric {
    name: "agentrun_webhook_attempts_total",
    help: "Webhook delivery attempts, by outcome (delivered, failed)",
    unit: "Count",
};
pub const CIRCUITS_OPENED: Metric = Metric {
    name: "agentrun_llm_circuits_opened_total",
    help: "Times an LLM circuit opened",
    unit: "Count",
};
pub const RUNS_ACTIVE: Metric = Metric {
    name: "agentrun_runs_active",
    help: "Runs not yet ended, by status (queued, running)",
    unit: "Count",
};
pub const SLOTS_IN_USE: Metric = Metric {
    name: "agentrun_run_slots_in_use",
    help: "Concurrent-run slots held, all teams",
    unit: "Count",
};
pub const OLDEST_QUEUED_STEP: Metric = Metric {
    name: "agentrun_oldest_queued_step_age_seconds",
    help: "How long the step waiting longest to execute has waited",
    unit: "Seconds",
};
pub const SSE_CONNECTIONS: Metric = Metric {
    name: "agentrun_sse_connections",
    help: "Open event streams",
    unit: "Count",
};
pub const HOT_STORE_DEGRADED: Metric = Metric {
    name: "agentrun_hot_store_degraded",
    help: "1 while the hot store cannot be reached (answers come from the ledger)",
    unit: "None",
};
pub const CIRCUITS_OPEN: Metric = Metric {
    name: "agentrun_llm_circuits_open",
    help: "LLM circuits open now",
    unit: "Count",
};

/// Upper bounds of the latency histograms' buckets, in seconds.
const BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

type Labels = Vec<(&'static str, String)>;
type Key = (Metric, Labels);

#[derive(Clone, Debug, Default)]
struct Histogram {
    /// One count per bucket of `BUCKETS`, and one past the last.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    max: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.max = self.max.max(seconds);
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[derive(Debug, Default)]
struct Series {
    counters: BTreeMap<Key, u64>,
    histograms: BTreeMap<Key, Histogram>,
}

#[derive(Debug, Default)]
struct State {
    /// Since the process started (Prometheus).
    total: Series,
    /// Since the last EMF flush.
    pending: Series,
    /// Model names seen as labels (at most `MAX_MODEL_LABELS`).
    models: std::collections::BTreeSet<String>,
}

/// Distinct `model` label values; later models are counted as `other`
/// (teams name models freely, and each value is a series kept forever).
pub const MAX_MODEL_LABELS: usize = 50;

/// Times something into a histogram when dropped: with the outcome set by
/// `finish`, or `cut` when it never finished (its future was dropped: a
/// timeout around it, a closed task).
pub struct Timer<'a> {
    metrics: &'a Metrics,
    metric: Metric,
    labels: Vec<(&'static str, String)>,
    started: std::time::Instant,
    outcome: &'static str,
}

impl<'a> Timer<'a> {
    pub fn start(metrics: &'a Metrics, metric: Metric, labels: &[(&'static str, &str)]) -> Self {
        Self {
            metrics,
            metric,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            started: std::time::Instant::now(),
            outcome: "cut",
        }
    }

    /// How it ended (`ok`, `error`), recorded when the timer is dropped.
    pub fn finish(&mut self, outcome: &'static str) {
        self.outcome = outcome;
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let mut pairs: Vec<(&'static str, &str)> =
            self.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pairs.push(("outcome", self.outcome));
        self.metrics
            .observe(self.metric, &pairs, self.started.elapsed());
    }
}

/// A gauge's value, read when the metrics are shown.
#[derive(Clone, Debug)]
pub struct Gauge {
    pub metric: Metric,
    pub labels: Labels,
    pub value: f64,
    /// A count kept elsewhere (shown as a counter).
    pub counter: bool,
}

impl Gauge {
    pub fn new(metric: Metric, value: f64) -> Self {
        Self {
            metric,
            labels: Vec::new(),
            value,
            counter: false,
        }
    }

    /// A counter another part keeps, read when shown.
    pub fn counted(metric: Metric, value: u64) -> Self {
        Self {
            counter: true,
            ..Self::new(metric, value as f64)
        }
    }

    pub fn with(mut self, label: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((label, value.into()));
        self
    }
}

/// This process's metrics; cheap to clone (one shared set).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    state: Arc<Mutex<State>>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` to a counter.
    pub fn count(&self, metric: Metric, pairs: &[(&'static str, &str)], n: u64) {
        let key = (metric, labels(pairs));
        if let Ok(mut state) = self.state.lock() {
            *state.total.counters.entry(key.clone()).or_default() += n;
            *state.pending.counters.entry(key).or_default() += n;
        }
    }

    /// Records one duration in a histogram.
    pub fn observe(&self, metric: Metric, pairs: &[(&'static str, &str)], took: Duration) {
        let key = (metric, labels(pairs));
        let seconds = took.as_secs_f64();
        if let Ok(mut state) = self.state.lock() {
            state
                .total
                .histograms
                .entry(key.clone())
                .or_default()
                .observe(seconds);
            state
                .pending
                .histograms
                .entry(key)
                .or_default()
                .observe(seconds);
        }
    }

    /// The `model` label for `model`: itself while fewer than
    /// `MAX_MODEL_LABELS` models have been seen, else `other`.
    pub fn model_label(&self, model: &str) -> String {
        let Ok(mut state) = self.state.lock() else {
            return "other".to_owned();
        };
        if state.models.contains(model) {
            return model.to_owned();
        }
        if state.models.len() < MAX_MODEL_LABELS {
            state.models.insert(model.to_owned());
            return model.to_owned();
        }
        "other".to_owned()
    }

    /// A counter's value since the process started (tests, the CLI).
    pub fn counter(&self, metric: Metric, pairs: &[(&'static str, &str)]) -> u64 {
        let key = (metric, labels(pairs));
        self.state
            .lock()
            .ok()
            .and_then(|state| state.total.counters.get(&key).copied())
            .unwrap_or(0)
    }

    /// The Prometheus text exposition of every metric, with `gauges`.
    pub fn prometheus(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        let Ok(state) = self.state.lock() else {
            return out;
        };
        let described = |out: &mut String, metric: &Metric, kind: &str, last: &mut &str| {
            if *last != metric.name {
                let _ = writeln!(out, "# HELP {} {}", metric.name, metric.help);
                let _ = writeln!(out, "# TYPE {} {kind}", metric.name);
                *last = metric.name;
            }
        };
        let mut last = "";
        for ((metric, labels), value) in &state.total.counters {
            described(&mut out, metric, "counter", &mut last);
            let _ = writeln!(
                out,
                "{}{} {value}",
                metric.name,
                render_labels(labels, None)
            );
        }
        for ((metric, labels), histogram) in &state.total.histograms {
            described(&mut out, metric, "histogram", &mut last);
            let mut cumulative = 0;
            for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
                cumulative += count;
                let le = Some(("le", format_bound(*bound)));
                let _ = writeln!(
                    out,
                    "{}_bucket{} {cumulative}",
                    metric.name,
                    render_labels(labels, le)
                );
            }
            let inf = Some(("le", "+Inf".to_owned()));
            let count = histogram.count();
            let _ = writeln!(
                out,
                "{}_bucket{} {count}",
                metric.name,
                render_labels(labels, inf)
            );
            let _ = writeln!(
                out,
                "{}_sum{} {}",
                metric.name,
                render_labels(labels, None),
                histogram.sum
            );
            let _ = writeln!(
                out,
                "{}_count{} {count}",
                metric.name,
                render_labels(labels, None)
            );
        }
        let mut gauges = gauges.to_vec();
        gauges.sort_by(|a, b| (a.metric, &a.labels).cmp(&(b.metric, &b.labels)));
        for gauge in &gauges {
            let kind = if gauge.counter { "counter" } else { "gauge" };
            described(&mut out, &gauge.metric, kind, &mut last);
            let _ = writeln!(
                out,
                "{}{} {}",
                gauge.metric.name,
                render_labels(&gauge.labels, None),
                gauge.value
            );
        }
        out
    }

    /// What changed since the last call, as CloudWatch Embedded Metric
    /// Format lines (one per set of labels, namespace `agentrun`), and
    /// `gauges` as they are now. Empty when nothing happened.
    pub fn take_emf(&self, gauges: &[Gauge]) -> Vec<String> {
        let pending = match self.state.lock() {
            Ok(mut state) => std::mem::take(&mut state.pending),
            Err(_) => return Vec::new(),
        };
        // One document per label set: EMF dimensions are per document.
        let mut documents: BTreeMap<Labels, Vec<(Metric, Value)>> = BTreeMap::new();
        for ((metric, labels), value) in pending.counters {
            documents
                .entry(labels)
                .or_default()
                .push((metric, json!(value)));
        }
        for ((metric, labels), histogram) in pending.histograms {
            let (mut values, mut counts) = (Vec::new(), Vec::new());
            for (index, count) in histogram.counts.iter().enumerate() {
                if *count > 0 {
                    values.push(BUCKETS.get(index).copied().unwrap_or(histogram.max));
                    counts.push(*count);
                }
            }
            documents
                .entry(labels)
                .or_default()
                .push((metric, json!({"Values": values, "Counts": counts})));
        }
        for gauge in gauges {
            documents
                .entry(gauge.labels.clone())
                .or_default()
                .push((gauge.metric, json!(gauge.value)));
        }
        let timestamp = chrono::Utc::now().timestamp_millis();
        documents
            .into_iter()
            .map(|(labels, metrics)| {
                let mut document = Map::new();
                let dimensions: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
                for (key, value) in &labels {
                    document.insert((*key).to_owned(), json!(value));
                }
                let definitions: Vec<Value> = metrics
                    .iter()
                    .map(|(metric, _)| json!({"Name": metric.name, "Unit": metric.unit}))
                    .collect();
                for (metric, value) in metrics {
                    document.insert(metric.name.to_owned(), value);
                }
                document.insert(
                    "_aws".to_owned(),
                    json!({
                        "Timestamp": timestamp,
                        "CloudWatchMetrics": [{
                            "Namespace": "agentrun",
                            "Dimensions": [dimensions],
                            "Metrics": definitions,
                        }],
                    }),
                );
                Value::Object(document).to_string()
            })
            .collect()
    }
}

fn format_bound(bound: f64) -> String {
    let text = bound.to_string();
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// `{a="x",b="y"}` (values escaped), or nothing without labels.
fn render_labels(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
        .collect();
    if let Some((key, value)) = extra {
        pairs.push(format!("{key}=\"{value}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_counters_histograms_and_gauges() {
        let metrics = Metrics::new();
        metrics.count(
            RUNS_ENDED,
            &[("status", "succeeded"), ("stop_reason", "completed")],
            2,
        );
        metrics.observe(
            STEP_SECONDS,
            &[("outcome", "ok")],
            Duration::from_millis(30),
        );
        metrics.observe(STEP_SECONDS, &[("outcome", "ok")], Duration::from_secs(400));
        let text = metrics.prometheus(&[Gauge::new(SSE_CONNECTIONS, 3.0)]);
        assert!(
            text.contains("# TYPE agentrun_runs_ended_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "agentrun_runs_ended_total{status=\"succeeded\",stop_reason=\"completed\"} 2\n"
        ));
        assert!(
            text.contains("agentrun_step_duration_seconds_bucket{outcome=\"ok\",le=\"0.025\"} 0\n")
        );
        assert!(
            text.contains("agentrun_step_duration_seconds_bucket{outcome=\"ok\",le=\"0.05\"} 1\n")
        );
        assert!(
            text.contains("agentrun_step_duration_seconds_bucket{outcome=\"ok\",le=\"300.0\"} 1\n")
        );
        assert!(
            text.contains("agentrun_step_duration_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 2\n")
        );
        assert!(text.contains("agentrun_step_duration_seconds_count{outcome=\"ok\"} 2\n"));
        assert!(
            text.contains("# TYPE agentrun_sse_connections gauge\nagentrun_sse_connections 3\n")
        );
        assert_eq!(
            text.matches("# TYPE agentrun_step_duration_seconds")
                .count(),
            1
        );
    }

    #[test]
    fn model_labels_are_bounded() {
        let metrics = Metrics::new();
        for n in 0..MAX_MODEL_LABELS {
            assert_eq!(metrics.model_label(&format!("m{n}")), format!("m{n}"));
        }
        assert_eq!(metrics.model_label("one-too-many"), "other");
        assert_eq!(
            metrics.model_label("m0"),
            "m0",
            "a model seen keeps its label"
        );
    }

    #[test]
    fn emf_lines_carry_what_changed_since_the_last_flush() {
        let metrics = Metrics::new();
        metrics.count(RUNS_STARTED, &[], 1);
        metrics.observe(
            LLM_SECONDS,
            &[("model", "m"), ("outcome", "ok")],
            Duration::from_millis(200),
        );
        let lines = metrics.take_emf(&[]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let documents: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let plain = documents.iter().find(|d| d.get("model").is_none()).unwrap();
        assert_eq!(plain["agentrun_runs_started_total"], 1);
        assert_eq!(
            plain["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "agentrun"
        );
        assert_eq!(
            plain["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
        let llm = documents.iter().find(|d| d["model"] == "m").unwrap();
        assert_eq!(
            llm["agentrun_llm_call_duration_seconds"]["Values"],
            json!([0.25])
        );
        assert_eq!(
            llm["agentrun_llm_call_duration_seconds"]["Counts"],
            json!([1])
        );
        assert_eq!(
            llm["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["model", "outcome"]])
        );
        assert!(metrics.take_emf(&[]).is_empty(), "flushed twice");
        assert_eq!(metrics.counter(RUNS_STARTED, &[]), 1, "the total stays");
    }
}
