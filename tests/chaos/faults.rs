//! The fault suite: a steady mixed workload runs while each process in turn is SIGKILLed and
//! restarted, the broker is frozen, and (in the full suite) PostgreSQL restarts. After each
//! fault: no acknowledged command lost, none applied twice, no stock oversold, the saga idle
//! and every read model equal to a replay of the log.

use std::time::{Duration, Instant};

use ordo_tests::{restart_postgres, Service};

use crate::checks::{self, Mark};
use crate::rig::{secs, Profile, Rig};

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(Service),
    FreezeBroker,
    RestartPostgres,
}

impl Fault {
    fn label(self) -> String {
        match self {
            Fault::Kill(s) => format!("kill -9 {}", s.binary()),
            Fault::FreezeBroker => "broker frozen".into(),
            Fault::RestartPostgres => "postgres restart".into(),
        }
    }
}

/// Injects `fault` under load and recovers from it; returns the time from the recovery (the
/// process started again, the broker resumed, Postgres back) until everything appended before
/// it was projected and every order pending then was decided, with the load still running.
async fn inject(rig: &mut Rig, fault: Fault) -> (Duration, Duration) {
    let p = rig.profile;
    let down_since = Instant::now();
    let recovered = match fault {
        Fault::Kill(s) => {
            rig.stack.kill(s).await;
            tokio::time::sleep(p.down).await; // the outage itself; the load goes on meanwhile
            let at = Instant::now();
            rig.stack.start_service(s).await;
            at
        }
        Fault::FreezeBroker => {
            rig.stack.broker.pause().await;
            tokio::time::sleep(p.broker_down).await;
            rig.stack.broker.resume().await;
            Instant::now()
        }
        Fault::RestartPostgres => {
            restart_postgres().await;
            Instant::now()
        }
    };
    let down = down_since.elapsed();
    let mark = Mark::now(&rig.stack.db.pool).await;
    checks::drained(&rig.stack, &mark, Duration::from_secs(180)).await;
    (down, recovered.elapsed())
}

async fn suite(profile: Profile) {
    let _serial = crate::SERIAL.lock().await;
    let started = Instant::now();
    let mut rig = Rig::start(profile).await;
    let mut faults: Vec<Fault> = Service::ALL.iter().map(|&s| Fault::Kill(s)).collect();
    faults.push(Fault::FreezeBroker);
    if profile.postgres {
        faults.push(Fault::RestartPostgres);
    }
    let mut summary = Vec::new();
    for fault in faults {
        let since = rig.api.ledger.len();
        let load = rig.load();
        rig.acked(rig.api.ledger.acked(), profile.warmup_acks).await;
        let (down, converged) = inject(&mut rig, fault).await;
        rig.all_alive();
        let during = rig.api.ledger.len() - since;
        load.stop().await;
        let extra = format!(
            "down {:.1}s, {during} commands answered in the round, converged {:.2}s after recovery, ",
            down.as_secs_f64(),
            converged.as_secs_f64()
        );
        rig.check(&fault.label(), since, &extra).await;
        summary.push(format!("{} {:.2}s", fault.label(), converged.as_secs_f64()));
    }
    let events = checks::verify(&rig.stack).await;
    eprintln!(
        "chaos | fault suite done in {:.0}s: hash chains of {events} events verify; convergence: {}",
        secs(started),
        summary.join(", ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_command_is_lost_or_applied_twice_when_each_process_is_killed_once_and_the_broker_pauses() {
    suite(Profile::REDUCED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the full fault suite restarts PostgreSQL: run alone with make chaos"]
async fn no_acknowledged_command_is_lost_or_applied_twice_through_kills_a_30_s_broker_stop_and_a_postgres_restart() {
    suite(Profile::FULL).await;
}
