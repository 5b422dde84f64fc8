//! What the relay and the projectors did during a phase, from their `/metrics`: throughput
//! (counter deltas) and the worst lag seen (gauges sampled every second).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::scrape::Scrape;

/// The relay and projector figures of one phase.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Observed {
    pub seconds: f64,
    /// Events the relay published per second (`ordo_relay_events_published_total`).
    pub relay_events_per_s: f64,
    /// Largest `ordo_relay_lag_events` sampled.
    pub relay_lag_events_max: f64,
    /// Largest `ordo_relay_lag_seconds` sampled.
    pub relay_lag_seconds_max: f64,
    /// Events applied per second per projection (`ordo_projector_events_applied_total`).
    pub projector_events_per_s: BTreeMap<String, f64>,
    /// Largest `ordo_projection_lag_events` per projection (the gauge refreshes every 5 s).
    pub projection_lag_events_max: BTreeMap<String, f64>,
    /// Largest `ordo_projection_lag_seconds` per projection.
    pub projection_lag_seconds_max: BTreeMap<String, f64>,
}

/// Where the worker processes publish their metrics (either may be absent).
#[derive(Debug, Clone, Default)]
pub struct MetricsUrls {
    pub relay: Option<String>,
    pub projectors: Option<String>,
}

/// A running observation; [`Observer::finish`] ends it.
pub struct Observer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Observed>,
}

impl Observer {
    /// Takes the first scrape and samples every second until finished.
    pub async fn start(http: reqwest::Client, urls: MetricsUrls) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let urls = Arc::new(urls);
        let first = scrape_both(&http, &urls).await;
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut out = Observed::default();
            loop {
                let stop_now = tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                    _ = stopped.changed() => true,
                };
                let now = scrape_both(&http, &urls).await;
                track_lag(&mut out, &now);
                if stop_now {
                    let seconds = started.elapsed().as_secs_f64().max(1e-9);
                    out.seconds = seconds;
                    let relay = now.0.sum("ordo_relay_events_published_total")
                        - first.0.sum("ordo_relay_events_published_total");
                    out.relay_events_per_s = relay.max(0.0) / seconds;
                    let before = first.1.by_label("ordo_projector_events_applied_total", "projection");
                    for (p, v) in now.1.by_label("ordo_projector_events_applied_total", "projection") {
                        let delta = v - before.get(&p).copied().unwrap_or(0.0);
                        out.projector_events_per_s.insert(p, delta.max(0.0) / seconds);
                    }
                    return out;
                }
            }
        });
        Self { stop, task }
    }

    /// Stops sampling and computes the figures.
    pub async fn finish(self) -> Observed {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

async fn scrape_both(http: &reqwest::Client, urls: &MetricsUrls) -> (Scrape, Scrape) {
    let relay = match &urls.relay {
        Some(u) => Scrape::fetch(http, u).await,
        None => Scrape::default(),
    };
    let projectors = match &urls.projectors {
        Some(u) => Scrape::fetch(http, u).await,
        None => Scrape::default(),
    };
    (relay, projectors)
}

fn track_lag(out: &mut Observed, (relay, projectors): &(Scrape, Scrape)) {
    out.relay_lag_events_max = out.relay_lag_events_max.max(relay.sum("ordo_relay_lag_events"));
    out.relay_lag_seconds_max = out.relay_lag_seconds_max.max(relay.sum("ordo_relay_lag_seconds"));
    for (p, v) in projectors.by_label("ordo_projection_lag_events", "projection") {
        let e = out.projection_lag_events_max.entry(p).or_insert(0.0);
        *e = e.max(v);
    }
    for (p, v) in projectors.by_label("ordo_projection_lag_seconds", "projection") {
        let e = out.projection_lag_seconds_max.entry(p).or_insert(0.0);
        *e = e.max(v);
    }
}
