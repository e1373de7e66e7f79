//! The clock for every time-dependent decision: the leader stamps proposals with it, readers
//! judge expiry with it, backups and restores date their records with it (snapshot file ids
//! alone read `SystemTime` directly). The state machine never calls it (time reaches it inside
//! commands, and it keeps the largest instant it applied: `storage::state_machine`).
//!
//! It starts at the system clock and then runs on the monotonic clock, following the system
//! clock only at [`SLEW_PER_MILLE`] (one ms per second): the ppm drift NTP corrects is
//! followed, but a system clock set an hour forward or back moves this one by at most 3.6 s
//! per hour, so it never expires every TTL key at once nor brings expired keys back. It never
//! goes backwards.

use std::sync::Mutex;
use std::time::Instant;

/// How far, per 1,000 units of elapsed time, the clock may move toward the system clock
/// beyond the monotonic clock's rate.
pub const SLEW_PER_MILLE: u64 = 1;

/// A re-anchoring after at least this long keeps the slew's allowance from rounding away.
const ANCHOR_US: u64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// The clock's value at `at`, in microseconds since the Unix epoch.
    us: u64,
    at: Instant,
    /// The largest value returned: the clock never goes backwards.
    last_us: u64,
}

static ANCHOR: Mutex<Option<Anchor>> = Mutex::new(None);

/// Milliseconds since the Unix epoch, as this process's clock reads them.
pub fn now_ms() -> u64 {
    let system = system_us();
    let mut anchor = ANCHOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let current = anchor.get_or_insert(Anchor {
        us: system,
        at: Instant::now(),
        last_us: system,
    });
    let elapsed = current.at.elapsed().as_micros() as u64;
    let expected = current.us.saturating_add(elapsed);
    let allowance = elapsed / 1000 * SLEW_PER_MILLE;
    let us = system
        .clamp(
            expected.saturating_sub(allowance),
            expected.saturating_add(allowance),
        )
        .max(current.last_us);
    current.last_us = us;
    if elapsed >= ANCHOR_US {
        current.us = us;
        current.at = Instant::now();
    }
    us / 1000
}

/// The system clock in microseconds since the Unix epoch (0 before it), moved by the offset
/// fault injection set.
fn system_us() -> u64 {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    us.saturating_add_signed(crate::fault::system_clock_offset_ms().saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the clock follows real time, and that a system clock set an hour ahead and then
    // two hours back moves it by at most the slew (it never goes backwards).
    #[test]
    fn a_system_clock_jump_moves_the_clock_by_the_slew_only() {
        let start = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let later = now_ms();
        assert!((15..2_000).contains(&(later - start)), "{start} {later}");
        crate::fault::set_system_clock_offset_ms(3_600_000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let ahead = now_ms();
        crate::fault::set_system_clock_offset_ms(-3_600_000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let behind = now_ms();
        crate::fault::set_system_clock_offset_ms(0);
        assert!(ahead - later < 2_000, "jumped ahead: {later} -> {ahead}");
        assert!(behind >= ahead, "went back: {ahead} -> {behind}");
        assert!(behind - ahead < 2_000, "{ahead} -> {behind}");
    }
}
