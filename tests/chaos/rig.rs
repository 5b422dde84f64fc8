//! A stack with the workload's world on it, and the checks every scenario ends a phase with.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_tests::{eventually, Extra, Stack};

use crate::checks;
use crate::load::{Load, World};
use crate::workload::{tally, Api};

/// How hard and how long a scenario pushes.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Concurrent workload clients.
    pub clients: usize,
    /// Commands acknowledged before a fault is injected.
    pub warmup_acks: usize,
    /// How long a killed process stays down.
    pub down: Duration,
    /// How long the broker stays frozen.
    pub broker_down: Duration,
    /// Whether PostgreSQL itself is restarted (only when nothing else uses the server).
    pub postgres: bool,
    /// How long a client waits for the saga to confirm an order before it stops trying to pay.
    pub pay_wait: Duration,
    /// How long a frozen relay leader stays frozen at least (it stays frozen until a standby
    /// took over and the read models caught up, in any case).
    pub relay_frozen: Duration,
    /// How long a stuck session holds the event log's writer lock.
    pub writer_stuck: Duration,
}

impl Profile {
    /// What `make test` runs: one kill of each process, a short broker pause, the broker back
    /// empty after 3 s, the relay leader frozen until a standby took over, an 8 s stuck writer
    /// lock; no Postgres restart.
    pub const REDUCED: Profile = Profile {
        clients: 4,
        warmup_acks: 60,
        down: Duration::from_secs(3),
        broker_down: Duration::from_secs(5),
        postgres: false,
        pay_wait: Duration::from_secs(8),
        relay_frozen: Duration::from_secs(10),
        writer_stuck: Duration::from_secs(8),
    };

    /// What `make chaos` runs: longer outages, the broker frozen for 30 s, the relay leader
    /// frozen for 40 s, Postgres restarted.
    pub const FULL: Profile = Profile {
        clients: 6,
        warmup_acks: 300,
        down: Duration::from_secs(10),
        broker_down: Duration::from_secs(30),
        postgres: true,
        pay_wait: Duration::from_secs(20),
        relay_frozen: Duration::from_secs(40),
        writer_stuck: Duration::from_secs(8),
    };
}

/// A stack, its world and the ledger of everything the workload sent to it.
pub struct Rig {
    pub stack: Stack,
    pub api: Api,
    pub world: Arc<World>,
    pub profile: Profile,
    /// Replicas started by a scenario, running until the rig is dropped.
    pub extras: Vec<Extra>,
}

/// The figures of one checked phase.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub acked: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub oversold: usize,
    /// From the load stopping until every event was projected and the saga idle.
    pub settled: Duration,
}

impl Rig {
    pub async fn start(profile: Profile) -> Self {
        let stack = Stack::start().await;
        let api = Api::new(vec![stack.command("")]);
        let world = Arc::new(World::open(&stack, &api, 2, profile.clients).await);
        Self { stack, api, world, profile, extras: Vec::new() }
    }

    pub fn load(&self) -> Load {
        Load::start(&self.api, &self.world, self.profile.clients, self.profile.pay_wait)
    }

    /// Waits until `n` more commands were acknowledged after the ledger counted `since`
    /// acknowledgements ([`crate::workload::Ledger::acked`]).
    pub async fn acked(&self, since: usize, n: usize) {
        let ledger = self.api.ledger.clone();
        eventually(&format!("{n} commands acknowledged"), Duration::from_secs(180), || {
            let ledger = ledger.clone();
            async move { (ledger.acked() >= since + n).then_some(()) }
        })
        .await;
    }

    /// Fails if a main process exited by itself.
    pub fn all_alive(&mut self) {
        let gone = self.stack.exited();
        assert!(gone.is_empty(), "processes exited by themselves: {gone:?} (logs in {:?})", self.stack.log_dir());
    }

    /// With the load stopped: waits until the system settles, then checks the whole ledger
    /// against the log, the query API and the read models against a replay. Prints one line
    /// starting with `label` (its figures cover the ledger from `since` on).
    pub async fn check(&self, label: &str, since: usize, extra: &str) -> Checked {
        let (settle, folded) = checks::settled(&self.stack, Duration::from_secs(120), &HashSet::new()).await;
        let pool = &self.stack.db.pool;
        let sent = self.api.ledger.sent();
        let lost = checks::lost(pool, &sent).await;
        let applied = checks::applied(pool, &sent).await;
        let replay = checks::replay(&self.stack).await;
        let visible = self.visible(&folded, &sent).await;
        let shown = visible.as_ref().map_or_else(|_| "not all".to_owned(), usize::to_string);
        let phase = tally(&sent[since.min(sent.len())..]);
        let all = tally(&sent);
        eprintln!(
            "chaos | {label}: sent {}, acknowledged {} ({} keyed; {} retried after an error, {} of them answered as replays), \
             refused {}, unknown {}, lost {}, duplicated {}, oversold {} | {extra}settled {:.2}s after the load stopped | \
             total acknowledged {}, keys stored {} for {} keyed commands applied, deliberate repeats {}, \
             log {} order/product events, orders {:?} | read models equal a replay of the log ({replay}), \
             query api shows {shown} acknowledged orders as the log decided them and every product's stock",
            phase.sent,
            phase.acked,
            phase.keyed_acked,
            phase.retried,
            phase.replayed_after_error,
            phase.refused,
            phase.unknown,
            lost.len(),
            applied.duplicated.len(),
            folded.oversold.len(),
            settle.as_secs_f64(),
            all.acked,
            applied.keys_stored,
            applied.keyed_applied,
            self.api.ledger.repeats(),
            folded.events,
            folded.statuses(),
        );
        assert!(
            lost.is_empty(),
            "{label}: acknowledged commands missing from the log: {:?}",
            &lost[..lost.len().min(10)]
        );
        assert!(applied.duplicated.is_empty(), "{label}: commands applied twice: {:?}", applied.duplicated);
        assert_eq!(applied.keys_stored, applied.keyed_applied, "{label}: one stored key per applied keyed command");
        assert!(folded.oversold.is_empty(), "{label}: stock rules broken: {:?}", folded.oversold);
        let problems = self.api.ledger.problems();
        assert!(problems.is_empty(), "{label}: clients saw contract violations: {problems:?}");
        let visible = visible.unwrap_or_else(|e| panic!("{label}: the query api disagrees with the log: {e}"));
        assert!(visible > 0, "{label}: no acknowledged order to look for in the query api");
        Checked {
            acked: phase.acked,
            lost: lost.len(),
            duplicated: applied.duplicated.len(),
            oversold: folded.oversold.len(),
            settled: settle,
        }
    }

    /// [`checks::visible`], given a few seconds: the query API reads the same tables the
    /// settled check looked at, so it should agree at once.
    async fn visible(&self, folded: &checks::Folded, sent: &[crate::workload::Sent]) -> Result<usize, String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let outcome = checks::visible(&self.stack, &self.world, sent, folded).await;
            if outcome.is_ok() || Instant::now() > deadline {
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Seconds since `t`, for report lines.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
