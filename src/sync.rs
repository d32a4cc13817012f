//! Locking that survives a panic elsewhere.

use std::sync::{Mutex, MutexGuard};

/// A poisoned lock only means another thread panicked while holding it; the values we guard
/// (state records, lists, rings) stay whole, so we keep using them rather than failing too.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
