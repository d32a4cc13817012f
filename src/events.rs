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
