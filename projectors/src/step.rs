//! What a projection does with one arriving event, decided from the stream's recorded state
//! alone: no I/O, so every case is a unit test (given this stream state, when this event arrives,
//! expect this step). The batch applier records each step with set-based SQL.

/// What a projection has recorded about one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamState {
    /// The last version applied (0: none).
    pub version: i64,
    /// A poison event stopped the stream; later events are held until `retry_parked`.
    pub parked: bool,
}

/// What the decision needs to know about an arriving event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival<'a> {
    /// The stream version; 0 when it could not be read (an undecodable message).
    pub version: i64,
    /// Whether the stream it belongs to is known (from the envelope or the message key).
    pub has_stream: bool,
    /// Why it cannot be applied (undecodable, or its write failed on the data), if so.
    pub error: Option<&'a str>,
}

/// The next thing to do with an arriving event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// At or below the applied version: a redelivery, nothing to do.
    Skip,
    /// The stream is parked: dead-letter the event as held, apply nothing.
    Hold,
    /// A poison event: dead-letter it and park its stream.
    Park { error: String },
    /// A poison event of no known stream: dead-letter it; there is nothing to park.
    Reject { error: String },
    /// Versions `from..=to` are missing: apply them from the log first, then decide again.
    FillGap { from: i64, to: i64 },
    /// The next version of the stream: apply it.
    Apply,
}

/// Dead-letter kinds as stored in `dead_letters.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// The event could not be applied; its stream (when known) is parked.
    Poison,
    /// The event was held back because its stream is parked (stored as `parked`).
    Held,
}

impl DeadLetterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Poison => "poison",
            DeadLetterKind::Held => "parked",
        }
    }
}

/// Decides what to do with `arrival` given the stream's recorded `state`.
pub fn next_step(state: &StreamState, arrival: &Arrival<'_>) -> Step {
    if !arrival.has_stream {
        return Step::Reject { error: arrival.error.unwrap_or("no stream").to_owned() };
    }
    if arrival.version > 0 && arrival.version <= state.version {
        return Step::Skip;
    }
    if state.parked {
        return Step::Hold;
    }
    if let Some(error) = arrival.error {
        return Step::Park { error: error.to_owned() };
    }
    if arrival.version <= 0 {
        return Step::Park { error: "an event without a stream version".to_owned() };
    }
    if arrival.version > state.version + 1 {
        return Step::FillGap { from: state.version + 1, to: arrival.version - 1 };
    }
    Step::Apply
}

/// Decides again once the log's events of a gap were applied: a gap still open means the log
/// does not have the versions the arrival claims to follow, so it is a poison event.
pub fn after_gap(state: &StreamState, arrival: &Arrival<'_>) -> Step {
    match next_step(state, arrival) {
        Step::FillGap { from, to } => {
            Step::Park { error: format!("versions {from} to {to} before this event are not in the log") }
        }
        step => step,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: i64) -> StreamState {
        StreamState { version, parked: false }
    }

    fn parked_at(version: i64) -> StreamState {
        StreamState { version, parked: true }
    }

    fn event(version: i64) -> Arrival<'static> {
        Arrival { version, has_stream: true, error: None }
    }

    fn undecodable(version: i64) -> Arrival<'static> {
        Arrival { version, has_stream: true, error: Some("not an event envelope") }
    }

    #[test]
    fn the_next_version_of_a_stream_is_applied() {
        assert_eq!(next_step(&at(0), &event(1)), Step::Apply);
        assert_eq!(next_step(&at(6), &event(7)), Step::Apply);
    }

    #[test]
    fn a_version_at_or_below_the_applied_one_is_a_redelivery_and_skipped() {
        assert_eq!(next_step(&at(3), &event(3)), Step::Skip);
        assert_eq!(next_step(&at(3), &event(1)), Step::Skip);
    }

    #[test]
    fn a_redelivery_is_skipped_even_when_the_stream_is_parked_or_the_event_failed() {
        assert_eq!(next_step(&parked_at(3), &event(2)), Step::Skip);
        assert_eq!(next_step(&at(3), &undecodable(3)), Step::Skip);
    }

    #[test]
    fn an_event_of_a_parked_stream_is_held() {
        assert_eq!(next_step(&parked_at(3), &event(4)), Step::Hold);
        assert_eq!(next_step(&parked_at(3), &event(9)), Step::Hold);
        assert_eq!(next_step(&parked_at(3), &undecodable(0)), Step::Hold);
    }

    #[test]
    fn an_event_that_cannot_be_applied_parks_its_stream() {
        assert_eq!(next_step(&at(3), &undecodable(4)), Step::Park { error: "not an event envelope".into() });
        // the version of an undecodable message is unknown: it cannot be a redelivery
        assert_eq!(next_step(&at(3), &undecodable(0)), Step::Park { error: "not an event envelope".into() });
    }

    #[test]
    fn a_decoded_event_without_a_version_parks_its_stream() {
        assert!(matches!(next_step(&at(3), &event(0)), Step::Park { .. }));
    }

    #[test]
    fn an_event_of_no_known_stream_is_rejected_without_parking_anything() {
        let arrival = Arrival { version: 0, has_stream: false, error: Some("not an event envelope") };
        assert_eq!(next_step(&at(0), &arrival), Step::Reject { error: "not an event envelope".into() });
        let arrival = Arrival { version: 4, has_stream: false, error: None };
        assert_eq!(next_step(&parked_at(9), &arrival), Step::Reject { error: "no stream".into() });
    }

    #[test]
    fn an_event_ahead_of_the_next_version_fills_the_gap_from_the_log_first() {
        assert_eq!(next_step(&at(0), &event(3)), Step::FillGap { from: 1, to: 2 });
        assert_eq!(next_step(&at(4), &event(9)), Step::FillGap { from: 5, to: 8 });
    }

    #[test]
    fn once_the_gap_is_filled_the_event_is_applied_and_a_gap_the_log_cannot_fill_parks_the_stream() {
        assert_eq!(after_gap(&at(8), &event(9)), Step::Apply);
        assert_eq!(after_gap(&at(8), &event(8)), Step::Skip);
        assert_eq!(after_gap(&parked_at(6), &event(9)), Step::Hold);
        assert_eq!(
            after_gap(&at(6), &event(9)),
            Step::Park { error: "versions 7 to 8 before this event are not in the log".into() }
        );
    }

    #[test]
    fn dead_letter_kinds_keep_their_stored_names() {
        assert_eq!(DeadLetterKind::Poison.as_str(), "poison");
        assert_eq!(DeadLetterKind::Held.as_str(), "parked");
    }
}
