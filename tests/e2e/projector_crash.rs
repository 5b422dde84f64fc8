//! The projectors SIGKILLed in the middle of a steady stream of commands and restarted later:
//! the read models end up exactly where the command answers say they must.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_tests::{eventually, Service, Stack};
use serde_json::json;
use uuid::Uuid;

use crate::client::{Client, Shop};

/// What the workload did to one order, and so the status it must end in.
#[derive(Debug, Clone)]
struct Planned {
    id: Uuid,
    product: usize,
    quantity: i64,
    status: &'static str,
}

/// Places `n` orders one after another and takes each down its own path by `i % 4`: left
/// confirmed, cancelled at once (possibly while the saga reserves), paid, or paid and shipped.
async fn workload(api: Client, shop: Shop, n: usize, done: Arc<AtomicUsize>) -> Vec<Planned> {
    let mut planned = Vec::with_capacity(n);
    for i in 0..n {
        let product = i % 2;
        let p = shop.products[product];
        let quantity = 1 + (i % 3) as i64;
        let id = shop.order(&api, &[(p.id, quantity as u32)]).await.id();
        let status = match i % 4 {
            0 => "confirmed",
            1 => {
                let body = json!({"reason": "ordered by mistake"});
                api.post(&format!("/v1/orders/{id}/cancellation"), &shop.customer, body).await.expect(200, "cancel");
                "cancelled"
            }
            2 => {
                api.pay_when_confirmed(id, &shop.customer, p.price_minor * quantity).await;
                "paid"
            }
            _ => {
                api.pay_when_confirmed(id, &shop.customer, p.price_minor * quantity).await;
                let ship = json!({"carrier": "UPS", "tracking_number": format!("1Z{i:04}")});
                api.post(&format!("/v1/orders/{id}/shipment"), &shop.merchant, ship).await.expect(200, "ship");
                "shipped"
            }
        };
        planned.push(Planned { id, product, quantity, status });
        done.fetch_add(1, Ordering::SeqCst);
    }
    planned
}

/// Events applied by all projections, as `GET /v1/projections` reports them.
async fn events_applied(api: &Client) -> i64 {
    let status = api.admin("/v1/projections").await.expect(200, "projection status");
    status.body["projections"].as_array().unwrap().iter().map(|p| p["events_applied"].as_i64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_reach_the_state_the_commands_imply_after_the_projectors_are_killed_mid_stream() {
    const ORDERS: usize = 48;
    let started = Instant::now();
    let mut stack = Stack::start().await;
    let api = Client::new(&stack);
    let shop = Shop::open(&stack, &api, &[(1200, 500), (350, 500), (999, 2)]).await;

    let done = Arc::new(AtomicUsize::new(0));
    let driver = tokio::spawn(workload(api.clone(), shop.clone(), ORDERS, done.clone()));
    let reached = |n: usize| {
        let done = done.clone();
        async move {
            eventually(&format!("{n} orders handled"), Duration::from_secs(90), || async {
                (done.load(Ordering::SeqCst) >= n).then_some(())
            })
            .await
        }
    };
    reached(ORDERS / 4).await;
    stack.kill(Service::Projectors).await;
    let killed_at = done.load(Ordering::SeqCst);
    // One order that can never be reserved, placed while no projector runs.
    let scarce = shop.products[2];
    let rejected = shop.order(&api, &[(scarce.id, 3)]).await.id();
    reached(ORDERS / 2).await;
    let down_for = done.load(Ordering::SeqCst) - killed_at;
    let applied_before = events_applied(&api).await;
    let restarted_at = Instant::now();
    stack.start_service(Service::Projectors).await;
    eventually("the restarted projectors to apply events", Duration::from_secs(60), || async {
        (events_applied(&api).await > applied_before).then_some(())
    })
    .await;
    let resumed_in = restarted_at.elapsed();
    let planned = driver.await.expect("every command was accepted");

    // Orders: each one visible with the status its commands imply.
    let settle = Instant::now();
    let mut expected: HashMap<Uuid, &str> = planned.iter().map(|p| (p.id, p.status)).collect();
    expected.insert(rejected, "rejected");
    eventually("every order in its final status", Duration::from_secs(90), || async {
        let seen = api.customer_orders(&shop).await;
        (seen.len() == expected.len() && expected.iter().all(|(id, s)| seen.get(id).is_some_and(|got| got == s)))
            .then_some(())
    })
    .await;

    // Stock: shipped quantities left on-hand stock, confirmed and paid ones are still reserved,
    // cancelled and rejected ones hold nothing.
    for (i, p) in shop.products.iter().enumerate() {
        let of = |status: &str| -> i64 {
            planned.iter().filter(|o| o.product == i && o.status == status).map(|o| o.quantity).sum()
        };
        let on_hand = p.stock - of("shipped");
        let reserved = of("confirmed") + of("paid");
        api.product_stock(p.id, on_hand, reserved).await;
    }
    eventually("every appended event projected", Duration::from_secs(30), || async {
        (stack.unprojected_events().await == 0).then_some(())
    })
    .await;
    let settled_in = settle.elapsed();

    // Sales (every event projected by now): every paid order once, with its amount.
    let paid: Vec<&Planned> = planned.iter().filter(|o| o.status == "paid" || o.status == "shipped").collect();
    let revenue: i64 = paid.iter().map(|o| shop.products[o.product].price_minor * o.quantity).sum();
    let sales = api.get(&format!("/v1/merchants/{}/sales", shop.merchant_id), &shop.merchant).await;
    let days = sales.expect(200, "daily sales").body["days"].as_array().unwrap().clone();
    let orders: i64 = days.iter().map(|d| d["orders"].as_i64().unwrap()).sum();
    let amount: i64 = days
        .iter()
        .flat_map(|d| d["revenue"].as_array().unwrap().clone())
        .map(|r| r["amount_minor"].as_i64().unwrap())
        .sum();
    assert_eq!((orders, amount), (paid.len() as i64, revenue));

    let status = api.admin("/v1/projections").await.expect(200, "projection status");
    for p in status.body["projections"].as_array().unwrap() {
        assert_eq!((p["dead_letters"].as_i64(), p["parked_streams"].as_i64()), (Some(0), Some(0)), "{p}");
    }
    eprintln!(
        "projector crash: {} orders, {down_for} handled while the projectors were down, {} events, applying again \
         {:.2}s after the restart, read models settled {:.2}s after the last command, scenario {:.1}s",
        expected.len(),
        stack.event_count().await,
        resumed_in.as_secs_f64(),
        settled_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
