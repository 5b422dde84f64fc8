//! One at a time per key, any number of keys at once: the saga handles events of different
//! orders concurrently and the events of one order in the order they were delivered.
//!
//! [`KeyedQueue::push`] answers the item to start now when its key is idle; otherwise the item
//! waits behind the key's running one. [`KeyedQueue::finish`] answers the key's next waiting item,
//! or makes the key idle again.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Items waiting per key behind the one running.
#[derive(Debug)]
pub struct KeyedQueue<K, T> {
    /// Every key with a running item, with the items waiting behind it.
    active: HashMap<K, VecDeque<T>>,
    waiting: usize,
}

impl<K, T> Default for KeyedQueue<K, T> {
    fn default() -> Self {
        Self { active: HashMap::new(), waiting: 0 }
    }
}

impl<K: Eq + Hash, T> KeyedQueue<K, T> {
    /// Queues `item` for `key`: answers it back when nothing of `key` runs (start it now),
    /// `None` when it waits behind the key's running item.
    pub fn push(&mut self, key: K, item: T) -> Option<T> {
        match self.active.get_mut(&key) {
            Some(waiting) => {
                waiting.push_back(item);
                self.waiting += 1;
                None
            }
            None => {
                self.active.insert(key, VecDeque::new());
                Some(item)
            }
        }
    }

    /// The running item of `key` finished: answers the next one to start, if any.
    pub fn finish(&mut self, key: &K) -> Option<T> {
        let waiting = self.active.get_mut(key)?;
        match waiting.pop_front() {
            Some(next) => {
                self.waiting -= 1;
                Some(next)
            }
            None => {
                self.active.remove(key);
                None
            }
        }
    }

    /// Drops every waiting item (running ones are not affected); answers how many.
    pub fn abandon_waiting(&mut self) -> usize {
        let dropped = self.waiting;
        for waiting in self.active.values_mut() {
            waiting.clear();
        }
        self.waiting = 0;
        dropped
    }

    /// Keys with a running item.
    pub fn running(&self) -> usize {
        self.active.len()
    }

    /// Items waiting behind a running one.
    pub fn waiting(&self) -> usize {
        self.waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_of_different_keys_start_at_once() {
        let mut q = KeyedQueue::default();
        assert_eq!(q.push("a", 1), Some(1));
        assert_eq!(q.push("b", 2), Some(2));
        assert_eq!((q.running(), q.waiting()), (2, 0));
    }

    #[test]
    fn items_of_one_key_run_one_after_another_in_push_order() {
        let mut q = KeyedQueue::default();
        assert_eq!(q.push("a", 1), Some(1));
        assert_eq!(q.push("a", 2), None);
        assert_eq!(q.push("a", 3), None);
        assert_eq!((q.running(), q.waiting()), (1, 2));
        assert_eq!(q.finish(&"a"), Some(2));
        assert_eq!(q.finish(&"a"), Some(3));
        assert_eq!(q.finish(&"a"), None);
        assert_eq!((q.running(), q.waiting()), (0, 0));
    }

    #[test]
    fn a_key_that_ran_dry_starts_its_next_item_at_once() {
        let mut q = KeyedQueue::default();
        assert_eq!(q.push("a", 1), Some(1));
        assert_eq!(q.finish(&"a"), None);
        assert_eq!(q.push("a", 2), Some(2));
    }

    #[test]
    fn a_waiting_item_does_not_hold_up_other_keys() {
        let mut q = KeyedQueue::default();
        assert_eq!(q.push("a", 1), Some(1));
        assert_eq!(q.push("a", 2), None);
        assert_eq!(q.push("b", 3), Some(3));
        assert_eq!(q.finish(&"b"), None);
        assert_eq!(q.finish(&"a"), Some(2));
    }

    #[test]
    fn abandoning_drops_waiting_items_and_keeps_running_keys() {
        let mut q = KeyedQueue::default();
        q.push("a", 1);
        q.push("a", 2);
        q.push("b", 3);
        q.push("b", 4);
        assert_eq!(q.abandon_waiting(), 2);
        assert_eq!((q.running(), q.waiting()), (2, 0));
        assert_eq!(q.finish(&"a"), None);
        assert_eq!(q.finish(&"unknown"), None);
    }
}
