//! The wall clock for every time-dependent decision: the leader stamps proposals with it,
//! readers judge expiry with it, backups and restores date their records with it (snapshot
//! file ids alone read `SystemTime` directly). The state machine never calls it (time reaches it inside commands).

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
