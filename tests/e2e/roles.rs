//! The services need no right to change the schema: `ordo migrate` is the step that does.

use ordo_tests::{Stack, APP_ROLE};
use sqlx::Connection;

use crate::client::{Client, Shop};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_five_processes_serve_orders_as_a_role_that_cannot_change_the_schema() {
    let stack = Stack::start_as_app_role().await;

    let app_url = stack.db.url.replacen("postgres@", &format!("{APP_ROLE}@"), 1);
    let mut conn = sqlx::PgConnection::connect(&app_url).await.unwrap();
    let denied = sqlx::query("CREATE TABLE not_allowed (id int)").execute(&mut conn).await.unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");

    let api = Client::new(&stack);
    let shop = Shop::open(&stack, &api, &[]).await;
    let (mug, _) = shop.list(&api, "MUG-ROLE", 1000, 5).await;
    let placed = shop.order(&api, &[(mug.id, 2)]).await;
    api.order_in(placed.id(), &shop.customer, "confirmed").await;
    let product = api.settled_product(mug.id).await;
    assert_eq!((product["on_hand"].as_i64(), product["reserved"].as_i64()), (Some(5), Some(2)), "{product}");

    let roles: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT usename::text FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'ordo'",
    )
    .fetch_all(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(roles, [APP_ROLE], "every process connected as the application role");
}
