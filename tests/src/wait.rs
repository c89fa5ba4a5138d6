//! Waiting for a condition by polling it, with a deadline and a useful failure.

use std::fmt::Display;
use std::thread;
use std::time::{Duration, Instant};

/// The first pause between polls; it doubles up to [`MAX_POLL_INTERVAL`], so a condition
/// that is almost true is seen quickly and a slow one does not burn a core.
const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(5);
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Polls `poll` until it returns `Ok`, and returns that value. `poll` returns `Err` with
/// what it observed instead; if `within` passes first, panics naming `description` (what
/// was awaited, e.g. "eth0 in ns-a has carrier") and the last observation.
///
/// Deadlines should be generous (seconds, not milliseconds): the machine may be busy, and
/// a passing test waits only as long as the condition takes.
pub fn wait_until<T, E: Display>(
    within: Duration,
    description: &str,
    mut poll: impl FnMut() -> Result<T, E>,
) -> T {
    let started = Instant::now();
    let mut interval = FIRST_POLL_INTERVAL;
    loop {
        // Checked before polling, so the last poll happens after the deadline has passed
        // and a condition that became true meanwhile still counts.
        let expired = started.elapsed() >= within;
        match poll() {
            Ok(value) => return value,
            Err(observed) if expired => panic!(
                "timed out after {:.1?} waiting until {description}; last observed: {observed}",
                started.elapsed()
            ),
            Err(_) => {
                let remaining = within.saturating_sub(started.elapsed());
                thread::sleep(interval.min(remaining));
                interval = (interval * 2).min(MAX_POLL_INTERVAL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut polls = 0;
        let value = wait_until(Duration::from_secs(30), "three polls", || {
            polls += 1;
            if polls == 3 {
                Ok(polls * 10)
            } else {
                Err(format!("{polls} polls"))
            }
        });
        assert_eq!(value, 30);
    }

    #[test]
    #[should_panic(expected = "waiting until the impossible; last observed: still false")]
    fn panics_with_the_description_and_the_last_observation() {
        wait_until(Duration::from_millis(20), "the impossible", || {
            Err::<(), _>("still false")
        });
    }
}
