//! The work queue: which host to reconcile next.
//!
//! Keyed and deduplicated like kube-runtime's scheduler: a host is queued at most once, at its
//! earliest due time; a host being reconciled is never handed to a second worker — a request that
//! arrives meanwhile is kept and served right after. So N workers bound the concurrency, and a
//! burst of agent events for one host costs one reconcile, not one each.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A deduplicating delay queue of keys.
#[derive(Debug)]
pub struct Queue<K> {
    inner: Mutex<Inner<K>>,
    notify: Notify,
}

#[derive(Debug)]
struct Inner<K> {
    /// Due time of each queued key (its earliest).
    due: HashMap<K, (Instant, u64)>,
    /// Ordered by due time, then insertion sequence.
    order: BTreeSet<(Instant, u64, K)>,
    /// Keys handed to a worker and not yet done.
    busy: HashSet<K>,
    /// Keys requested while busy, with their due time.
    again: HashMap<K, Instant>,
    seq: u64,
    closed: bool,
}

impl<K: Clone + Eq + Hash + Ord> Default for Queue<K> {
    fn default() -> Self {
        Queue {
            inner: Mutex::new(Inner {
                due: HashMap::new(),
                order: BTreeSet::new(),
                busy: HashSet::new(),
                again: HashMap::new(),
                seq: 0,
                closed: false,
            }),
            notify: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> Queue<K> {
    /// Asks for `key` to be reconciled after `delay` (or sooner, if already asked for sooner).
    pub fn schedule(&self, key: K, delay: Duration) {
        let at = Instant::now() + delay;
        let mut g = self.inner.lock().unwrap();
        if g.busy.contains(&key) {
            let e = g.again.entry(key).or_insert(at);
            *e = (*e).min(at);
            return;
        }
        g.put(key, at);
        drop(g);
        self.notify.notify_one();
    }

    /// Asks for `key` now.
    pub fn now(&self, key: K) {
        self.schedule(key, Duration::ZERO)
    }

    /// Waits for the next due key and marks it busy; `None` once closed.
    pub async fn next(&self) -> Option<K> {
        loop {
            let wait = {
                let mut g = self.inner.lock().unwrap();
                if g.closed {
                    return None;
                }
                let now = Instant::now();
                match g.order.first().cloned() {
                    Some((at, seq, key)) if at <= now => {
                        g.order.remove(&(at, seq, key.clone()));
                        g.due.remove(&key);
                        g.busy.insert(key.clone());
                        // Let another worker look at the next key.
                        if !g.order.is_empty() {
                            self.notify.notify_one();
                        }
                        return Some(key);
                    }
                    Some((at, _, _)) => Some(at),
                    None => None,
                }
            };
            match wait {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.notify.notified() => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    /// Marks `key` done; if it was asked for meanwhile, queues it again.
    pub fn done(&self, key: &K) {
        let mut g = self.inner.lock().unwrap();
        g.busy.remove(key);
        if let Some(at) = g.again.remove(key) {
            g.put(key.clone(), at);
            drop(g);
            self.notify.notify_one();
        }
    }

    /// Wakes every waiter with `None`.
    pub fn close(&self) {
        self.inner.lock().unwrap().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Keys queued or busy.
    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap();
        g.due.len() + g.busy.len()
    }

    /// Nothing queued or busy.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Clone + Eq + Hash + Ord> Inner<K> {
    fn put(&mut self, key: K, at: Instant) {
        if let Some(&(old, seq)) = self.due.get(&key) {
            if old <= at {
                return;
            }
            self.order.remove(&(old, seq, key.clone()));
        }
        self.seq += 1;
        let seq = self.seq;
        self.due.insert(key.clone(), (at, seq));
        self.order.insert((at, seq, key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn keys_are_deduplicated_and_ordered_by_due_time() {
        let q = Queue::default();
        q.schedule("b", Duration::from_secs(2));
        q.schedule("a", Duration::from_secs(5));
        q.schedule("a", Duration::from_secs(1)); // sooner wins
        q.schedule("b", Duration::from_secs(9)); // later loses
        assert_eq!(q.len(), 2);
        let t0 = Instant::now();
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
        assert_eq!(q.next().await, Some("b"));
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_key_is_not_handed_out_twice_but_rerun_after() {
        let q = Queue::default();
        q.now(1);
        assert_eq!(q.next().await, Some(1));
        q.now(1);
        q.now(2);
        assert_eq!(q.next().await, Some(2), "1 is busy: 2 goes first");
        q.done(&2);
        let waiting = tokio::time::timeout(Duration::from_secs(60), q.next()).await;
        assert!(waiting.is_err(), "1 is still busy");
        q.done(&1);
        assert_eq!(
            q.next().await,
            Some(1),
            "asked for while busy: queued again"
        );
    }

    #[tokio::test]
    async fn close_wakes_waiters() {
        let q = std::sync::Arc::new(Queue::<u32>::default());
        let w = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(w.await.unwrap(), None);
    }
}
