//! Prometheus metrics (`GET /metrics` on the admin listener), with the prometheus-client
//! crate: requests by endpoint, service and verdict; policy evaluation latency and
//! failures by kind; STS AssumeRole calls and cache hits; pending approvals; reloads and
//! rejected reloads; upstream latency and status classes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Totals other parts keep, read when metrics are rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub pending_approvals: usize,
    pub sts_assume_role: u64,
    pub sts_cache_hits: u64,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    policy_seconds: Histogram,
    policy_failures: Family<Labels, Counter>,
    sts_assume_role: Counter,
    sts_cache_hits: Counter,
    approvals_pending: Gauge,
    reloads: Family<Labels, Counter>,
    upstream_seconds: Histogram,
    upstream_responses: Family<Labels, Counter>,
    /// `upstream_responses` for 1xx … 5xx, looked up once rather than per response.
    status_classes: [Counter; 5],
    /// What the counters kept elsewhere (STS caches, reloads) showed last time.
    seen: [AtomicU64; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::for_replica(None)
    }

    /// Every metric labelled `replica="NAME"` when more than one sigward shares state.
    pub fn for_replica(replica: Option<String>) -> Self {
        let mut registry = match replica {
            Some(name) => Registry::with_prefix_and_labels(
                "sigward",
                [(
                    std::borrow::Cow::Borrowed("replica"),
                    std::borrow::Cow::Owned(name),
                )]
                .into_iter(),
            ),
            None => Registry::with_prefix("sigward"),
        };
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests by endpoint, service and verdict (refused: before a verdict)",
            requests.clone(),
        );
        // 1 µs … ~1 s
        let policy_seconds = Histogram::new(exponential_buckets(1e-6, 2.0, 20));
        registry.register(
            "policy_evaluation_seconds",
            "One policy set's evaluation, every policy in a fresh sandbox",
            policy_seconds.clone(),
        );
        let policy_failures = Family::<Labels, Counter>::default();
        registry.register(
            "policy_failures",
            "Policy evaluations that produced no verdict, by kind (deadline, fuel, memory, trap, …)",
            policy_failures.clone(),
        );
        let sts_assume_role = Counter::default();
        registry.register(
            "sts_assume_role",
            "AssumeRole calls made",
            sts_assume_role.clone(),
        );
        let sts_cache_hits = Counter::default();
        registry.register(
            "sts_cache_hits",
            "Requests served with cached assumed-role credentials",
            sts_cache_hits.clone(),
        );
        let approvals_pending = Gauge::default();
        registry.register(
            "approvals_pending",
            "Requests waiting for a human",
            approvals_pending.clone(),
        );
        let reloads = Family::<Labels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads by result (applied, rejected)",
            reloads.clone(),
        );
        // 100 µs … ~100 s
        let upstream_seconds = Histogram::new(exponential_buckets(1e-4, 2.0, 20));
        registry.register(
            "upstream_seconds",
            "Time to the upstream's response head",
            upstream_seconds.clone(),
        );
        let upstream_responses = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_responses",
            "Upstream responses by status class (2xx, 4xx, 5xx …)",
            upstream_responses.clone(),
        );
        let status_classes =
            std::array::from_fn(|i| status_class(&upstream_responses, i as u16 + 1));
        Self {
            registry,
            requests,
            policy_seconds,
            policy_failures,
            sts_assume_role,
            sts_cache_hits,
            approvals_pending,
            reloads,
            upstream_seconds,
            upstream_responses,
            status_classes,
            seen: Default::default(),
        }
    }

    pub fn request(&self, endpoint: &str, service: &str, verdict: &str) {
        self.requests
            .get_or_create(&vec![
                ("endpoint", endpoint.to_string()),
                ("service", service.to_string()),
                ("verdict", verdict.to_string()),
            ])
            .inc();
    }

    pub fn policy_evaluation(&self, took: Duration, failures: impl Iterator<Item = &'static str>) {
        self.policy_seconds.observe(took.as_secs_f64());
        for kind in failures {
            self.policy_failures
                .get_or_create(&vec![("kind", kind.to_string())])
                .inc();
        }
    }

    pub fn upstream(&self, took: Duration, status: u16) {
        self.upstream_seconds.observe(took.as_secs_f64());
        match status / 100 {
            class @ 1..=5 => self.status_classes[usize::from(class - 1)].inc(),
            class => status_class(&self.upstream_responses, class).inc(),
        };
    }

    /// The text exposition, with the totals kept elsewhere brought up to date first.
    pub fn render(&self, totals: &Totals) -> String {
        self.approvals_pending
            .set(i64::try_from(totals.pending_approvals).unwrap_or(i64::MAX));
        let applied = self
            .reloads
            .get_or_create(&vec![("result", "applied".to_string())])
            .clone();
        let rejected = self
            .reloads
            .get_or_create(&vec![("result", "rejected".to_string())])
            .clone();
        let counters = [
            (&self.sts_assume_role, totals.sts_assume_role),
            (&self.sts_cache_hits, totals.sts_cache_hits),
            (&applied, totals.reloads_applied),
            (&rejected, totals.reloads_rejected),
        ];
        for (i, (counter, total)) in counters.into_iter().enumerate() {
            let before = self.seen[i].swap(total, Ordering::AcqRel);
            counter.inc_by(total.saturating_sub(before));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// The `upstream_responses` counter for `class` (2 → `2xx`).
fn status_class(family: &Family<Labels, Counter>, class: u16) -> Counter {
    family
        .get_or_create(&vec![("class", format!("{class}xx"))])
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_responses_are_counted_by_status_class() {
        let metrics = Metrics::new();
        for status in [200, 204, 403, 404, 404, 503, 100, 999] {
            metrics.upstream(Duration::from_micros(10), status);
        }
        let text = metrics.render(&Totals::default());
        for (class, count) in [
            ("1xx", 1),
            ("2xx", 2),
            ("3xx", 0),
            ("4xx", 3),
            ("5xx", 1),
            ("9xx", 1),
        ] {
            let line = format!("sigward_upstream_responses_total{{class=\"{class}\"}} {count}");
            assert!(text.contains(&line), "no `{line}` in:\n{text}");
        }
        assert!(text.contains("sigward_upstream_seconds_count 8"), "{text}");
    }
}
