//! The faults that take more than a kill or a pause: the broker back empty, the relay leader
//! frozen with a standby next to it, a session sitting on the event log's writer lock. Each
//! runs under the suite's load and returns what it measured; the suite's checks follow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_tests::{metric_sum, signal, Service};
use sqlx::{Connection, PgConnection, PgPool};

use crate::checks::{self, Mark};
use crate::faults::Injected;
use crate::rig::Rig;
use crate::workload::{Cmd, Failure, Outcome};

/// How long the read models and the saga get after the broker came back empty. The log holds
/// everything, so a system that converges does so well within this; one that skips what the
/// new broker numbers below its old offsets never does.
const WIPED_CONVERGE: Duration = Duration::from_secs(90);

/// How soon after the relay leader froze the events appended since must reach the read models.
const TAKEOVER: Duration = Duration::from_secs(30);

/// Commands acknowledged after the freeze before the mark is taken: their events were appended
/// after the leader froze, so only another relay can publish them.
const AFTER_FREEZE: usize = 20;

/// How long the read models and the saga get after a recovery that is not in doubt.
const CONVERGE: Duration = Duration::from_secs(180);

/// SIGKILLs the broker, keeps it away while the load goes on, and starts a new one on the same
/// port with empty storage: no topics, no offsets, no producer state. Everything appended must
/// still reach the read models and the saga, from the log.
pub async fn wipe_broker(rig: &mut Rig) -> Injected {
    let pool = rig.stack.db.pool.clone();
    let killed = Instant::now();
    rig.stack.broker.stop().await;
    let at_kill = (relay_checkpoint(&pool).await, last_position(&pool).await);
    tokio::time::sleep(rig.profile.down).await;
    rig.stack.broker.restart().await;
    let recovered = Instant::now();
    let down = recovered - killed;
    let mark = Mark::now(&pool).await;
    if let Err(behind) = checks::drain(&rig.stack, &mark, WIPED_CONVERGE).await {
        let projectors = rig.stack.metrics(&rig.stack.ops(Service::Projectors, "/metrics")).await;
        panic!(
            "broker back empty: not converged {WIPED_CONVERGE:?} after the broker came back: {behind} events appended \
             before then still unprojected or orders placed before then undecided; relay checkpoint {} of {} events \
             now ({} of {} when the broker died), projectors skipped {} messages below their stored offsets \
             (logs in {:?})",
            relay_checkpoint(&pool).await,
            last_position(&pool).await,
            at_kill.0,
            at_kill.1,
            metric_sum(&projectors, "ordo_projector_offsets_skipped_total"),
            rig.stack.log_dir(),
        );
    }
    let note = format!("relay checkpoint {} of {} events when the broker died", at_kill.0, at_kill.1);
    Injected { down, converged: recovered.elapsed(), note }
}

/// Starts a standby relay, SIGSTOPs the leading one and requires the events appended after the
/// freeze to reach the read models within [`TAKEOVER`]. Then SIGCONTs the old leader (after
/// `relay_frozen` at least) and requires it to stay out of the way: one leader, the relay
/// checkpoint never moving backwards, and the suite's checks after the round.
pub async fn freeze_relay_leader(rig: &mut Rig) -> Injected {
    let pool = rig.stack.db.pool.clone();
    let standby = rig.stack.start_extra(Service::Relay).await;
    let urls = [rig.stack.ops(Service::Relay, "/metrics"), standby.url("/metrics")];
    let pids = [rig.stack.pid(Service::Relay), standby.pid()];
    rig.extras.push(standby);
    let leader = rig.stack.sole_relay_leader(&urls).await;
    let pid = pids[leader].expect("the leading relay runs");
    let standby_url = &urls[1 - leader];

    let watch = CheckpointWatch::start(pool.clone());
    signal(pid, "STOP").await;
    let frozen = Instant::now();
    rig.acked(rig.api.ledger.acked(), AFTER_FREEZE).await;
    let mark = Mark::now(&pool).await;
    let mut took_over = None;
    let visible = loop {
        if took_over.is_none() && rig.stack.relay_leads(standby_url).await {
            took_over = Some(frozen.elapsed());
        }
        let behind = mark.behind(&pool).await;
        if behind == 0 {
            break frozen.elapsed();
        }
        if frozen.elapsed() > TAKEOVER {
            let standby = match took_over {
                Some(t) => format!("the standby took the lead {:.1}s after the freeze", t.as_secs_f64()),
                None => "the standby never took the lead: the frozen leader still holds its lock".into(),
            };
            panic!(
                "relay leader frozen: {behind} events appended or orders placed after the freeze not projected or \
                 decided {TAKEOVER:?} after it; {standby} (logs in {:?})",
                rig.stack.log_dir()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took_over = took_over.unwrap_or(visible);
    eprintln!(
        "chaos | relay leader frozen: the standby leads {:.2}s after the freeze, events appended after the freeze \
         projected and decided {:.2}s after it",
        took_over.as_secs_f64(),
        visible.as_secs_f64()
    );

    tokio::time::sleep(rig.profile.relay_frozen.saturating_sub(frozen.elapsed())).await;
    signal(pid, "CONT").await;
    let resumed = Instant::now();
    let down = resumed - frozen;
    // The old leader wakes up under load, with a lock it no longer holds.
    rig.acked(rig.api.ledger.acked(), AFTER_FREEZE).await;
    let now_leads = rig.stack.sole_relay_leader(&urls).await;
    let mark = Mark::now(&pool).await;
    checks::drained(&rig.stack, &mark, CONVERGE).await;
    let converged = resumed.elapsed();
    let old = if leader == 0 {
        match rig.stack.exited().into_iter().find(|(s, _)| *s == Service::Relay) {
            Some((_, status)) => {
                rig.stack.start_service(Service::Relay).await;
                format!("exited ({status}) and was started again")
            }
            None => "stands by".to_owned(),
        }
    } else if rig.extras.last_mut().is_some_and(|e| e.is_running()) {
        "stands by".to_owned()
    } else {
        "exited".to_owned()
    };
    let watched = watch.stop().await;
    assert!(
        watched.backwards.is_empty(),
        "relay leader frozen: the relay checkpoint moved backwards: {:?}",
        watched.backwards
    );
    assert_ne!(now_leads, leader, "relay leader frozen: the resumed relay leads again over the one that took over");
    let note = format!(
        "takeover {:.1}s and events visible {:.1}s after the freeze, resumed old leader {old}, checkpoint {} -> {} \
         never backwards",
        took_over.as_secs_f64(),
        visible.as_secs_f64(),
        watched.first,
        watched.last,
    );
    Injected { down, converged, note }
}

/// A session of its own takes the event log's writer lock and sits on it, idle, for
/// `writer_stuck`. Commands that wait for it must be answered `503` problem+json with
/// `Retry-After` (not a 500, not a hang); afterwards everything converges.
pub async fn stuck_writer(rig: &mut Rig) -> Injected {
    let pool = rig.stack.db.pool.clone();
    let mut session = PgConnection::connect(&rig.stack.db.url).await.expect("connect the stuck session");
    sqlx::query("SET application_name = 'chaos-stuck-writer'").execute(&mut session).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(ordo_writer_lock_key())").execute(&mut session).await.unwrap();
    let held = Instant::now();
    // One command of our own that surely meets the lock, whatever the clients are busy with
    // (most wait for confirmations the saga cannot append meanwhile): a keyed restock, retried
    // until it is answered 2xx.
    let probe = tokio::spawn({
        let (api, world) = (rig.api.clone(), rig.world.clone());
        async move {
            let merchant = &world.merchants[0];
            let cmd = Cmd {
                path: format!("/v1/products/{}/stock", merchant.products[0].id),
                token: &merchant.party.token,
                scope: merchant.party.id,
                body: serde_json::json!({"delta": 1, "reason": "restock"}),
                event_type: "StockAdjusted",
                category: "product",
                keyed: true,
                repeat: false,
                impatient: None,
            };
            api.command(cmd).await
        }
    });
    tokio::time::sleep(rig.profile.writer_stuck).await;
    sqlx::query("SELECT pg_advisory_unlock(ordo_writer_lock_key())").execute(&mut session).await.unwrap();
    let _ = session.close().await;
    let released = Instant::now();
    let probed = probe.await.expect("the probe command panicked");
    assert!(matches!(probed, Outcome::Acked), "writer lock stuck: the probe restock ended {probed:?}");
    let mark = Mark::now(&pool).await;
    checks::drained(&rig.stack, &mark, CONVERGE).await;
    let converged = released.elapsed();

    let failures = rig.api.ledger.failures_since(held);
    let bad: Vec<&Failure> = failures.iter().filter(|f| !f.impatient && !well_formed_503(f)).collect();
    assert!(
        bad.is_empty(),
        "writer lock stuck: {} failed attempts not answered 503 problem+json with Retry-After, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    let answered: Vec<&Failure> = failures.iter().filter(|f| f.at < released && well_formed_503(f)).collect();
    assert!(
        !answered.is_empty(),
        "writer lock stuck: no command was answered 503 while the lock was held for {:?}; did anything wait?",
        rig.profile.writer_stuck
    );
    let longest = answered.iter().map(|f| f.took).max().unwrap_or_default();
    let mut codes: Vec<&str> = answered.iter().map(|f| f.code.as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    let note = format!(
        "{} attempts answered 503 problem+json with Retry-After while it was held (code {}, longest wait {:.1}s)",
        answered.len(),
        codes.join("/"),
        longest.as_secs_f64()
    );
    Injected { down: released - held, converged, note }
}

fn well_formed_503(f: &Failure) -> bool {
    f.status == Some(503) && f.problem && f.retry_after.as_deref().is_some_and(|v| v.parse::<u64>().is_ok())
}

async fn relay_checkpoint(pool: &PgPool) -> i64 {
    read_relay_checkpoint(pool).await.unwrap()
}

async fn read_relay_checkpoint(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(position), 0)::bigint FROM checkpoints WHERE name = 'relay'")
        .fetch_one(pool)
        .await
}

async fn last_position(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(position), 0)::bigint FROM events").fetch_one(pool).await.unwrap()
}

/// Polls the relay checkpoint until stopped, noting every move backwards.
struct CheckpointWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Watched>,
}

struct Watched {
    first: i64,
    last: i64,
    backwards: Vec<(i64, i64)>,
}

impl CheckpointWatch {
    fn start(pool: PgPool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let first = relay_checkpoint(&pool).await;
                let mut w = Watched { first, last: first, backwards: Vec::new() };
                while !stop.load(Ordering::SeqCst) {
                    // Errors are skipped: a failing test drops the database under this task.
                    if let Ok(now) = read_relay_checkpoint(&pool).await {
                        if now < w.last {
                            w.backwards.push((w.last, now));
                        }
                        w.last = now;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                w
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> Watched {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the checkpoint watch panicked")
    }
}
