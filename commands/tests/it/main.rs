//! The command service against a real Postgres (a fresh database per test): lanes and their
//! trusted state, hot streams, replicas, snapshots.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod lanes;
mod replicas;
mod snapshots;

use ordo_commands::{CommandContext, CommandService};
use ordo_event_store::testing::TestDb;
use ordo_schemas::{
    Actor, AdjustStock, Currency, ListProduct, Money, RegisterMerchant, Role, Sku, StockAdjustmentReason,
};
use uuid::Uuid;

/// A database with a registered merchant.
pub struct World {
    pub db: TestDb,
    pub service: CommandService,
    pub merchant: Uuid,
}

impl World {
    pub async fn start() -> Self {
        let db = TestDb::new().await;
        ordo_commands::migrate(&db.pool).await.unwrap();
        let service = CommandService::new(db.store());
        let merchant = Uuid::new_v4();
        let world = Self { db, service, merchant };
        let register = RegisterMerchant { merchant_id: merchant, name: "Shop".into() };
        world.service.register_merchant(&world.as_merchant(), register).await.unwrap();
        world
    }

    pub fn as_merchant(&self) -> CommandContext {
        CommandContext::new(Actor { id: self.merchant, role: Role::Merchant }, Uuid::new_v4())
    }

    /// Lists a product with `stock` units through `service`.
    pub async fn product(&self, stock: u32) -> Uuid {
        let product = Uuid::new_v4();
        let listing = ListProduct {
            product_id: product,
            merchant_id: self.merchant,
            sku: Sku::parse(&format!("SKU-{}", product.simple())).unwrap(),
            name: "Lamp".into(),
            description: None,
            price: Money::new(1_000, Currency::parse("EUR").unwrap()),
            initial_stock: stock,
        };
        self.service.list_product(&self.as_merchant(), listing).await.unwrap();
        product
    }
}

pub fn adjust(delta: i64) -> AdjustStock {
    AdjustStock {
        delta,
        reason: if delta > 0 { StockAdjustmentReason::Restock } else { StockAdjustmentReason::WriteOff },
    }
}
