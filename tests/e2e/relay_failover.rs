//! Two relays: one leads, the other stands by and takes over when the leader is SIGKILLed while
//! commands keep arriving; nothing appended is lost on the way to the read models.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_tests::{eventually, Service, Stack};
use uuid::Uuid;

use crate::client::{Client, Shop};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_relay_takes_over_from_a_killed_leader_and_every_event_reaches_the_read_models() {
    let started = Instant::now();
    let mut stack = Stack::start().await;
    let api = Client::new(&stack);
    let shop = Shop::open(&stack, &api, &[(250, 1_000_000)]).await;
    let product = shop.products[0].id;

    let mut second = stack.start_extra(Service::Relay).await;
    let urls = [stack.ops(Service::Relay, "/metrics"), second.url("/metrics")];
    let leader = stack.sole_relay_leader(&urls).await;
    // Leadership is stable: the standby does not start leading by itself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.sole_relay_leader(&urls).await, leader);

    // A steady stream of orders; every placement must be accepted, whoever relays.
    let stop = Arc::new(AtomicBool::new(false));
    let placed = Arc::new(AtomicUsize::new(0));
    let driver = tokio::spawn({
        let (api, shop, stop, placed) = (api.clone(), shop.clone(), stop.clone(), placed.clone());
        async move {
            let mut ids: Vec<Uuid> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                ids.push(shop.order(&api, &[(product, 1)]).await.id());
                placed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        }
    });
    let at_least = |n: usize| {
        let placed = placed.clone();
        async move {
            eventually(&format!("{n} orders placed"), Duration::from_secs(60), || async {
                (placed.load(Ordering::SeqCst) >= n).then_some(())
            })
            .await
        }
    };
    at_least(15).await;

    let killed_at = Instant::now();
    if leader == 0 {
        stack.kill(Service::Relay).await;
    } else {
        second.kill().await;
    }
    let placed_at_kill = placed.load(Ordering::SeqCst);
    let survivor = &urls[1 - leader];
    eventually("the standby to lead", Duration::from_secs(30), || async {
        stack.relay_leads(survivor).await.then_some(())
    })
    .await;
    let takeover = killed_at.elapsed();
    at_least(placed_at_kill + 15).await;
    stop.store(true, Ordering::SeqCst);
    let orders = driver.await.expect("every order was accepted");

    // Every order placed before, during and after the failover is confirmed in the read model,
    // which the saga (a Kafka consumer) and the projectors only learn about through the relays.
    let settle = Instant::now();
    eventually("every order confirmed in the query api", Duration::from_secs(60), || async {
        let seen = api.customer_orders(&shop).await;
        orders.iter().all(|id| seen.get(id).is_some_and(|s| s == "confirmed")).then_some(())
    })
    .await;
    eventually("every appended event projected", Duration::from_secs(30), || async {
        (stack.unprojected_events().await == 0).then_some(())
    })
    .await;
    let settled_in = settle.elapsed();
    let events = stack.event_count().await;
    // Each order: OrderPlaced, StockReserved, OrderConfirmed; plus the two parties and the listing.
    assert_eq!(events, 3 * orders.len() as i64 + 3);
    let stock = api.settled_product(product).await;
    assert_eq!(stock["reserved"], orders.len() as i64);

    // A replacement replica stands by behind the new leader.
    let third = stack.start_extra(Service::Relay).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.sole_relay_leader(&[survivor.clone(), third.url("/metrics")]).await, 0);
    eprintln!(
        "relay failover: {} orders ({} after the kill), {events} events, takeover {:.2}s, settled {:.2}s after \
         the last command, scenario {:.1}s",
        orders.len(),
        orders.len() - placed_at_kill,
        takeover.as_secs_f64(),
        settled_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
