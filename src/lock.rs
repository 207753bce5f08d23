//! The one way dockwarden takes a `std::sync::Mutex`.
//!
//! A lock is poisoned when a thread panicked while holding it. Handlers run
//! under `catch_unwind` (a panic is counted as an `error` outcome and the
//! container's lane goes on), so the data behind a poisoned lock is still
//! the best state there is: take it rather than propagate the panic.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering the guard of a poisoned lock.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
