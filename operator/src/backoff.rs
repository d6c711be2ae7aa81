//! Exponential backoff for failed reconciles, counted by the object's failures in a row
//! (see `queue::retry`).

use std::time::Duration;

/// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`, capped at `cap`.
pub fn delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    base.saturating_mul(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(5);
        let delays: Vec<_> = (1..=6).map(|a| delay(a, base, cap).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(delay(u32::MAX, base, cap), cap);
    }
}
