//! Scale-out: two instances each of the command API, the saga and the projectors share the
//! load (the clients alternate between the two command APIs; the workers split the partitions
//! of their consumer groups). Then one instance of each is SIGKILLed and its work moves to the
//! other: commands keep succeeding on the survivor, orders keep being decided, read models
//! converge.

use std::time::{Duration, Instant};

use ordo_tests::{eventually, metric_sum, Extra, Service, Stack};

use crate::checks::{self, Mark};
use crate::rig::{Profile, Rig};
use crate::workload::Sent;

/// The work counter of a worker behind `url` (its `/metrics`): events handled by a saga, events
/// applied by projectors.
async fn work(stack: &Stack, service: Service, url: &str) -> f64 {
    let name = match service {
        Service::Saga => "ordo_saga_outcomes_total",
        _ => "ordo_projector_events_applied_total",
    };
    metric_sum(&stack.metrics(url).await, name)
}

fn acked_by(sent: &[Sent], url: &str) -> usize {
    sent.iter().filter(|s| s.ack.as_ref().is_some_and(|a| a.url == url)).count()
}

async fn scenario(profile: Profile) {
    let _serial = crate::SERIAL.lock().await;
    let mut rig = Rig::start(profile).await;
    let mut extras: Vec<Extra> = Vec::new();
    for s in [Service::CommandApi, Service::Saga, Service::Projectors] {
        extras.push(rig.stack.start_extra(s).await);
    }
    let urls = [rig.stack.command(""), extras[0].url("")];
    rig.api.set_urls(urls.to_vec());

    // Two of each: both command APIs answer, both sagas and both projectors do work.
    let since = rig.api.ledger.len();
    let load = rig.load();
    rig.acked(rig.api.ledger.acked(), 2 * profile.warmup_acks).await;
    for (service, extra) in [(Service::Saga, &extras[1]), (Service::Projectors, &extras[2])] {
        let (main, other) = (rig.stack.ops(service, "/metrics"), extra.url("/metrics"));
        let what = format!("both {} instances to do work", service.binary());
        eventually(&what, Duration::from_secs(60), || async {
            (work(&rig.stack, service, &main).await > 0.0 && work(&rig.stack, service, &other).await > 0.0)
                .then_some(())
        })
        .await;
    }
    load.stop().await;
    let sent = rig.api.ledger.sent();
    let split = (acked_by(&sent, &urls[0]), acked_by(&sent, &urls[1]));
    assert!(split.0 > 0 && split.1 > 0, "both command APIs answer: {split:?}");
    let mut figures = Vec::new();
    for (service, extra) in [(Service::Saga, &extras[1]), (Service::Projectors, &extras[2])] {
        let main = work(&rig.stack, service, &rig.stack.ops(service, "/metrics")).await;
        figures.push(format!(
            "{} {main}/{}",
            service.binary(),
            work(&rig.stack, service, &extra.url("/metrics")).await
        ));
    }
    let extra = format!("command APIs acknowledged {}/{}, work split {}, ", split.0, split.1, figures.join(", "));
    rig.check("two instances of each", since, &extra).await;

    // One instance of each SIGKILLed under load: the survivors take the work over.
    let since = rig.api.ledger.len();
    let load = rig.load();
    rig.acked(rig.api.ledger.acked(), profile.warmup_acks).await;
    let before: Vec<f64> = vec![
        work(&rig.stack, Service::Saga, &extras[1].url("/metrics")).await,
        work(&rig.stack, Service::Projectors, &extras[2].url("/metrics")).await,
    ];
    let killed_at = Instant::now();
    for s in [Service::CommandApi, Service::Saga, Service::Projectors] {
        rig.stack.kill(s).await;
    }
    rig.api.set_urls(vec![urls[1].clone()]);
    let at_kill = rig.api.ledger.len();
    let mark = Mark::now(&rig.stack.db.pool).await;
    let took_over = checks::drained(&rig.stack, &mark, Duration::from_secs(180)).await;
    rig.acked(rig.api.ledger.acked(), profile.warmup_acks).await;
    load.stop().await;
    for e in &mut extras {
        assert!(e.is_running(), "the surviving {} exited (logs in {:?})", e.service.binary(), rig.stack.log_dir());
    }
    let after: Vec<f64> = vec![
        work(&rig.stack, Service::Saga, &extras[1].url("/metrics")).await,
        work(&rig.stack, Service::Projectors, &extras[2].url("/metrics")).await,
    ];
    assert!(after[0] > before[0] && after[1] > before[1], "the survivors keep working: {before:?} -> {after:?}");
    let sent = rig.api.ledger.sent();
    let on_survivor = sent[at_kill..].iter().filter(|s| s.ack.as_ref().is_some_and(|a| a.url == urls[1])).count();
    assert!(on_survivor > 0, "commands succeed on the surviving command API");
    let extra = format!(
        "after the kill: {on_survivor} commands acknowledged by the survivor, survivor saga {} -> {} and projectors \
         {} -> {}, work before the kill projected and decided {:.2}s after it, ",
        before[0],
        after[0],
        before[1],
        after[1],
        took_over.as_secs_f64(),
    );
    rig.check("one of each killed", since, &extra).await;
    eprintln!("chaos | scale-out done {:.0}s after the kill", killed_at.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_each_worker_share_the_load_and_a_survivor_takes_over_from_a_killed_one() {
    scenario(Profile::REDUCED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the longer scale-out run: make chaos"]
async fn two_instances_of_each_worker_share_a_heavier_load_and_survivors_take_over_from_killed_ones() {
    scenario(Profile::FULL).await;
}
