//! The orders whose reservation of a product was released or committed, most recent first
//! out: a bounded memory, so a product's state stays small however many orders it served.

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// How many settled orders a product remembers. The saga reserves only for pending orders and
/// rejects an order before releasing its lines, so this memory guards a narrow race only; it
/// needs to cover what a saga may still redeliver, not every order ever settled.
pub const REMEMBERED: usize = 256;

/// The most recent [`REMEMBERED`] settled orders, oldest forgotten first. Serialised as a list,
/// oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettledOrders {
    order: VecDeque<Uuid>,
    set: HashSet<Uuid>,
}

impl SettledOrders {
    pub fn contains(&self, order_id: &Uuid) -> bool {
        self.set.contains(order_id)
    }

    /// Remembers `order_id`, forgetting the oldest one beyond [`REMEMBERED`].
    pub fn insert(&mut self, order_id: Uuid) {
        if !self.set.insert(order_id) {
            return;
        }
        self.order.push_back(order_id);
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl Serialize for SettledOrders {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.order.iter())
    }
}

impl<'de> Deserialize<'de> for SettledOrders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ids = Vec::<Uuid>::deserialize(deserializer)?;
        let mut settled = SettledOrders::default();
        for id in ids {
            settled.insert(id);
        }
        Ok(settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_most_recent_settled_orders_are_remembered() {
        let ids: Vec<Uuid> = (0..REMEMBERED as u128 + 10).map(Uuid::from_u128).collect();
        let mut settled = SettledOrders::default();
        for id in &ids {
            settled.insert(*id);
            settled.insert(*id);
        }
        assert_eq!(settled.len(), REMEMBERED);
        assert!(!settled.contains(&ids[9]));
        assert!(settled.contains(&ids[10]));
        assert!(settled.contains(ids.last().unwrap_or(&Uuid::nil())));
        let round_trip: SettledOrders =
            serde_json::from_value(serde_json::to_value(&settled).unwrap_or_default()).unwrap_or_default();
        assert_eq!(round_trip, settled);
    }
}
