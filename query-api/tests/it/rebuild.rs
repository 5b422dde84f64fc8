//! Rebuilding projections while the API serves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ordo_projectors::testing::{diff_against_fold, snapshot, wait_caught_up, Workload};
use ordo_projectors::{rebuild, Projection};
use ordo_schemas::Role;

use crate::App;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_the_api_serves_requests_fails_no_request_and_matches_the_live_model() {
    let app = Arc::new(App::spawn().await);
    let store = app.db.store();
    let w = Workload::run(&store, 28).await;
    wait_caught_up(&app.db.pool, Duration::from_secs(30)).await;
    let before = snapshot(&app.db.pool).await;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let customer = w.customers[0];
    let merchant = w.merchants[0];
    let order = w.orders[0];
    let mut loops = Vec::new();
    for worker in 0..4 {
        let (app, stop, served) = (app.clone(), stop.clone(), served.clone());
        loops.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (path, who) = match worker {
                    0 => ("/v1/products?limit=10".to_owned(), None),
                    1 => (format!("/v1/customers/{customer}/orders"), Some((Role::Customer, customer))),
                    2 => (format!("/v1/orders/{order}"), Some((Role::Admin, customer))),
                    _ => (format!("/v1/merchants/{merchant}/sales"), Some((Role::Merchant, merchant))),
                };
                let resp = app.get(&path, who).send().await.unwrap();
                let status = resp.status();
                let body = resp.text().await.unwrap();
                if status != 200 || body.contains("\"items\":[]") {
                    failures.push(format!("{path}: {status} {body}"));
                }
                served.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }
    for _ in 0..3 {
        for p in Projection::ALL {
            rebuild(&app.db.pool, p).await.unwrap();
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for l in loops {
        failures.extend(l.await.unwrap());
    }
    assert_eq!(failures, Vec::<String>::new());
    assert!(served.load(Ordering::SeqCst) > 20, "requests were served during the rebuilds");
    assert_eq!(snapshot(&app.db.pool).await, before, "the rebuilt model equals the live one");
    assert_eq!(diff_against_fold(&app.db.pool, &w).await, Vec::<String>::new());
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("app still shared"),
    }
}
