//! Reading Prometheus text from the processes' `/metrics` endpoints.

use std::collections::BTreeMap;

/// One scrape: every series (`name{labels}`) with its value.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    series: BTreeMap<String, f64>,
}

impl Scrape {
    /// Parses Prometheus text exposition format (comments and unparsable lines are skipped).
    pub fn parse(text: &str) -> Self {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                Some((key.trim().to_owned(), value.trim().parse::<f64>().ok()?))
            })
            .collect();
        Self { series }
    }

    /// Fetches and parses `url`; an unreachable endpoint gives an empty scrape.
    pub async fn fetch(http: &reqwest::Client, url: &str) -> Self {
        match http.get(url).send().await {
            Ok(r) => Self::parse(&r.text().await.unwrap_or_default()),
            Err(_) => Self::default(),
        }
    }

    /// The sum of every series of metric `name` (all label sets).
    pub fn sum(&self, name: &str) -> f64 {
        self.series
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))
            .map(|(_, v)| v)
            .sum()
    }

    /// The series of metric `name` by the value of `label`.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let needle = format!("{label}=\"");
        let mut out = BTreeMap::new();
        for (k, v) in &self.series {
            let Some(labels) = k.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else { continue };
            let Some(start) = labels.find(&needle) else { continue };
            let rest = &labels[start + needle.len()..];
            if let Some(end) = rest.find('"') {
                *out.entry(rest[..end].to_owned()).or_insert(0.0) += v;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE ordo_relay_events_published_total counter\n\
        ordo_relay_events_published_total 1200\n\
        ordo_relay_lag_events 3\n\
        ordo_projector_events_applied_total{projection=\"orders\"} 10\n\
        ordo_projector_events_applied_total{projection=\"catalog\"} 32\n\
        ordo_projector_events_applied_total_other 5\n";

    #[test]
    fn unlabelled_and_labelled_series_are_summed_by_exact_metric_name() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.sum("ordo_relay_events_published_total"), 1200.0);
        assert_eq!(s.sum("ordo_projector_events_applied_total"), 42.0);
        assert_eq!(s.sum("missing"), 0.0);
    }

    #[test]
    fn series_are_grouped_by_a_label_value() {
        let s = Scrape::parse(TEXT);
        let by = s.by_label("ordo_projector_events_applied_total", "projection");
        assert_eq!(by.get("orders"), Some(&10.0));
        assert_eq!(by.get("catalog"), Some(&32.0));
        assert_eq!(by.len(), 2);
    }
}
