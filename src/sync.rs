//! Locking the crate's short critical sections. Owns nothing else; names no other module.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking the data of a poisoned lock as it is. Only for critical sections
/// that are plain reads, assignments or single collection operations, which a panic cannot
/// leave half-done.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
