//! The contract every aggregate fulfils.

use ordo_schemas::DomainEvent;

use crate::error::DomainError;

/// A consistency boundary whose state is a left fold of its events.
///
/// `Default` is the state before the first event (the aggregate does not exist yet). `decide`
/// never mutates: it validates a command against the current state and returns the events to
/// append (possibly none, for idempotent repeats). `evolve` applies one recorded event and must
/// be total: it never fails, because recorded events are facts.
pub trait Aggregate: Default + Clone {
    type Event: DomainEvent;
    type Command;

    /// Decides which events a command produces in the current state.
    ///
    /// # Errors
    /// A [`DomainError`] when the command is invalid or not allowed in the current state.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, DomainError>;

    /// Applies one recorded event.
    fn evolve(&mut self, event: &Self::Event);

    /// Applies recorded events in order.
    fn apply_all<'a>(&mut self, events: impl IntoIterator<Item = &'a Self::Event>)
    where
        Self::Event: 'a,
    {
        for event in events {
            self.evolve(event);
        }
    }

    /// Rebuilds the state from a stream's events (from version 1).
    fn from_events(events: &[Self::Event]) -> Self {
        let mut state = Self::default();
        state.apply_all(events);
        state
    }

    /// Decides and applies the resulting events to `self`; returns the events to append.
    ///
    /// # Errors
    /// As [`Aggregate::decide`]; the state is unchanged on error.
    fn execute(&mut self, command: &Self::Command) -> Result<Vec<Self::Event>, DomainError> {
        let events = self.decide(command)?;
        self.apply_all(&events);
        Ok(events)
    }
}
