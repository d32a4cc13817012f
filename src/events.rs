//! How domain code reports events without knowing who listens: a cloneable callback. The
//! binding layer wraps a ThreadsafeFunction into one; tests wrap a channel.

use std::sync::Arc;

pub struct EventSink<E>(Arc<dyn Fn(E) + Send + Sync>);

impl<E> EventSink<E> {
    pub fn new(f: impl Fn(E) + Send + Sync + 'static) -> Self {
        EventSink(Arc::new(f))
    }

    pub fn emit(&self, event: E) {
        (self.0)(event)
    }
}

impl<E> Clone for EventSink<E> {
    fn clone(&self) -> Self {
        EventSink(self.0.clone())
    }
}

impl<E> std::fmt::Debug for EventSink<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSink")
    }
}

type Listeners<E> = Vec<(u64, EventSink<E>)>;

/// Several listeners of one source (a shared manager that every JS object of its kind hears).
/// Each listener stays until its [`Subscription`] is dropped.
pub struct Subscribers<E> {
    sinks: std::sync::Arc<std::sync::Mutex<Listeners<E>>>,
    next: std::sync::atomic::AtomicU64,
}

impl<E> Default for Subscribers<E> {
    fn default() -> Self {
        Subscribers {
            sinks: Default::default(),
            next: Default::default(),
        }
    }
}

impl<E: Clone + 'static> Subscribers<E> {
    pub fn subscribe(&self, sink: EventSink<E>) -> Subscription {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::sync::lock(&self.sinks).push((id, sink));
        let sinks = std::sync::Arc::downgrade(&self.sinks);
        Subscription(Some(Box::new(move || {
            if let Some(sinks) = sinks.upgrade() {
                crate::sync::lock(&sinks).retain(|(i, _)| *i != id);
            }
        })))
    }

    pub fn emit(&self, event: E) {
        emit_to(&self.sinks, event);
    }

    /// One sink that reaches every listener of the moment it emits (for code that needs a
    /// sink it can own, such as a child process's line reader).
    pub fn sink(&self) -> EventSink<E>
    where
        E: Send + Sync,
    {
        let sinks = self.sinks.clone();
        EventSink::new(move |event| emit_to(&sinks, event))
    }
}

fn emit_to<E: Clone>(sinks: &std::sync::Mutex<Listeners<E>>, event: E) {
    let sinks: Vec<_> = crate::sync::lock(sinks)
        .iter()
        .map(|(_, s)| s.clone())
        .collect();
    for sink in sinks {
        sink.emit(event.clone());
    }
}

/// Ends a subscription when dropped.
pub struct Subscription(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Subscription {
    /// Keeps the listener for as long as the source lives.
    pub fn detach(mut self) {
        self.0 = None;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(end) = self.0.take() {
            end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_hears_each_event_until_it_unsubscribes() {
        let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let subscribers = Subscribers::default();
        let listen = |name: &'static str| {
            let heard = heard.clone();
            subscribers.subscribe(EventSink::new(move |e: u32| {
                heard.lock().unwrap().push((name, e))
            }))
        };
        let a = listen("a");
        let b = listen("b");
        subscribers.emit(1);
        drop(a);
        subscribers.emit(2);
        drop(b);
        subscribers.emit(3);
        assert_eq!(*heard.lock().unwrap(), [("a", 1), ("b", 1), ("b", 2)]);
    }
}
