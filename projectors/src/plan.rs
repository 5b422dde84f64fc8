//! What a batch decided per projection and stream, kept in memory until the read-model writes
//! are done, then recorded: applied events per stream, dead letters and parked streams.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use chrono::Utc;
use sqlx::PgConnection;

use crate::apply::{Applying, Changes};
use crate::batch::BatchStats;
use crate::bookkeeping::{self, Applied, DeadLetter, StreamKey};
use crate::incoming::Incoming;
use crate::model::Target;
use crate::step::{DeadLetterKind, Step, StreamState};
use crate::ProjectorError;

/// An event of the batch or one read from the log to fill a gap.
#[derive(Debug, Clone)]
pub(crate) enum Source<'a> {
    Batch(&'a Incoming),
    Log(Arc<Incoming>),
}

impl Deref for Source<'_> {
    type Target = Incoming;

    fn deref(&self) -> &Incoming {
        match self {
            Source::Batch(e) => e,
            Source::Log(e) => e,
        }
    }
}

/// What a batch decided, before it is recorded.
pub(crate) struct Plan<'t, 'a> {
    targets: &'t [Target],
    /// Per target, the rows its applied events fold into.
    pub changes: Vec<Changes>,
    /// Per (projection, stream), the events folded, in version order.
    applied: BTreeMap<StreamKey, Vec<Source<'a>>>,
    letters: Vec<(usize, DeadLetterKind, bool, Source<'a>, String)>,
    skipped: u64,
}

impl<'t, 'a> Plan<'t, 'a> {
    pub fn new(targets: &'t [Target]) -> Self {
        Plan {
            targets,
            changes: targets.iter().map(|t| Changes::new(t.projection)).collect(),
            applied: BTreeMap::new(),
            letters: Vec::new(),
            skipped: 0,
        }
    }

    /// Carries out `step` for `event` in target `ti`, whose stream is at `state`.
    pub fn settle(&mut self, ti: usize, state: &mut StreamState, event: Source<'a>, step: Step) {
        let error = match step {
            Step::Skip => {
                self.skipped += 1;
                return;
            }
            Step::Hold => {
                self.letters.push((ti, DeadLetterKind::Held, false, event, "stream is parked".to_owned()));
                return;
            }
            Step::Reject { error } => {
                self.letters.push((ti, DeadLetterKind::Poison, false, event, error));
                return;
            }
            Step::Park { error } => error,
            // a gap inside the log's own events: the caller fills gaps before applying
            Step::FillGap { from, to } => format!("versions {from} to {to} before this event are not in the log"),
            Step::Apply => match self.fold(ti, state, &event) {
                Ok(()) => return,
                Err(error) => error,
            },
        };
        state.parked = true;
        self.letters.push((ti, DeadLetterKind::Poison, true, event, error));
    }

    fn fold(&mut self, ti: usize, state: &mut StreamState, event: &Source<'a>) -> Result<(), String> {
        let (Some(stream), Ok(decoded)) = (event.stream, &event.event) else {
            return Err("an event without a stream or not decoded".to_owned());
        };
        let applying = Applying {
            stream,
            version: event.version,
            position: event.position,
            recorded_at: event.recorded_at.unwrap_or_else(Utc::now),
            event: decoded,
        };
        self.changes[ti].fold(&applying)?;
        state.version = event.version;
        self.applied.entry((ti, stream)).or_default().push(event.clone());
        Ok(())
    }

    /// The row of `key` was not at the version its fold started from, so nothing of it was
    /// written: its first folded event is a poison event and the others are held.
    pub fn unapply(&mut self, key: StreamKey) {
        let Some(events) = self.applied.remove(&key) else { return };
        let mut events = events.into_iter();
        let Some(first) = events.next() else { return };
        let what = match &first.event {
            Ok(e) => e.event_type(),
            Err(_) => "event",
        };
        let row = self.targets[key.0].projection;
        let error = if first.version == 1 {
            format!("{what} {} at version 1: the {row} row exists already", key.1)
        } else {
            format!("{what} {} at version {}: no {row} row at version {}", key.1, first.version, first.version - 1)
        };
        self.letters.push((key.0, DeadLetterKind::Poison, true, first, error));
        for held in events {
            self.letters.push((key.0, DeadLetterKind::Held, false, held, "stream is parked".to_owned()));
        }
    }

    /// Writes the bookkeeping of the batch and records its metrics.
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        events: &[Incoming],
        group: Option<&str>,
    ) -> Result<BatchStats, ProjectorError> {
        let mut stats = BatchStats { skipped: self.skipped, ..BatchStats::default() };
        let letters: Vec<DeadLetter<'_>> = self
            .letters
            .iter()
            .map(|(ti, kind, park, event, error)| {
                match kind {
                    DeadLetterKind::Poison => stats.poisoned += 1,
                    DeadLetterKind::Held => stats.parked += 1,
                }
                DeadLetter { target: &self.targets[*ti], kind: *kind, park: *park, event, error: error.clone() }
            })
            .collect();
        bookkeeping::save_dead_letters(&mut *conn, &letters).await?;

        let mut applied = Applied::default();
        for ((ti, stream), folded) in &self.applied {
            let Some(last) = folded.last() else { continue };
            let target = &self.targets[*ti];
            let key = &target.key;
            applied.push(target, *stream, last.version, last.position, folded.len() as i64);
            for e in folded {
                applied.recorded(key, e.recorded_at);
            }
        }
        applied.save(&mut *conn, group, events).await?;

        for (key, count, last_recorded_at) in applied.per_projection() {
            stats.applied += count.unsigned_abs();
            metrics::counter!("ordo_projector_events_applied_total", "projection" => key.to_owned())
                .increment(count.unsigned_abs());
            if let Some(at) = last_recorded_at {
                let age = (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::gauge!("ordo_projection_last_event_age_seconds", "projection" => key.to_owned()).set(age);
            }
        }
        metrics::counter!("ordo_projector_events_skipped_total").increment(stats.skipped);
        if stats.poisoned + stats.parked > 0 {
            metrics::counter!("ordo_projector_dead_letters_total").increment(stats.poisoned + stats.parked);
            metrics::counter!("ordo_projector_streams_parked_total").increment(stats.poisoned);
        }
        Ok(stats)
    }
}
