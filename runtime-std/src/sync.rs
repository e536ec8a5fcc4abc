//! The crate's one locking rule: a poisoned mutex is taken as it is (a
//! panicking handler must not take the worker down with it; every value
//! behind these mutexes is whole at every step).
//!
//! Layering: the bottom; imports nothing of the crate.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
