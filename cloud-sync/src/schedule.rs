//! The weekly bulk-upload schedule: each robot gets a slot inside the fleet's
//! window (`uploads.window_day`, from `window_start_hour` UTC for
//! `window_hours`), staggered so that at most `fleet / robot` bandwidth's worth
//! of robots upload at once and the fleet stays under its cap.
//!
//! The same slot recurs every day as the robot's catch-up slot: a robot that
//! missed its weekly slot (offline, or not finished) uploads in the next one.
//! Since every robot's slot is reserved daily, catch-ups never push the fleet
//! over the cap either. An operator can also open a robot's window now.

use gantry_config::cloud::{Uploads, Weekday};
pub use gantry_config::wire::UploadWindow;

use gantry_config::wire::{DAY_NS, WEEK_NS};

fn weekday_index(d: Weekday) -> u64 {
    match d {
        Weekday::Monday => 0,
        Weekday::Tuesday => 1,
        Weekday::Wednesday => 2,
        Weekday::Thursday => 3,
        Weekday::Friday => 4,
        Weekday::Saturday => 5,
        Weekday::Sunday => 6,
    }
}

/// How many robots may upload at once.
pub fn concurrency(u: &Uploads) -> usize {
    ((u.fleet_bandwidth_mbps / u.robot_bandwidth_mbps).floor() as usize).max(1)
}

/// Each robot's window (in `robots`' order; pass them sorted for a stable
/// schedule), for the fleet window that ends after `now`.
pub fn windows(u: &Uploads, robots: &[String], now: u64) -> Vec<UploadWindow> {
    let window_ns = u64::from(u.window_hours) * 3_600_000_000_000;
    // 1970-01-01 was a Thursday.
    let days = now / DAY_NS;
    let weekday = (days + 3) % 7;
    let this_week_monday = days - weekday;
    let mut start =
        (this_week_monday + weekday_index(u.window_day)) * DAY_NS + u64::from(u.window_start_hour) * 3_600_000_000_000;
    while start + window_ns <= now {
        start += WEEK_NS;
    }
    while start > now + WEEK_NS {
        start -= WEEK_NS;
    }
    let per_slot = concurrency(u);
    let slots = robots.len().div_ceil(per_slot).max(1) as u64;
    let slot_ns = window_ns / slots;
    let rate_kbps = (u.robot_bandwidth_mbps * 1000.0 / 8.0) as u64;
    (0..robots.len())
        .map(|k| {
            let slot_start = start + (k as u64 % slots) * slot_ns;
            UploadWindow {
                start_unix_ns: slot_start,
                end_unix_ns: slot_start + slot_ns,
                daily_start_s: (slot_start % DAY_NS) / 1_000_000_000,
                daily_length_s: slot_ns / 1_000_000_000,
                rate_kbps,
                now_until_unix_ns: 0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn robots(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("robot-{i:03}")).collect()
    }

    // 2026-11-24 (a Tuesday) 12:00 UTC.
    const TUESDAY_NOON: u64 = 1_795_521_600_000_000_000;

    #[test]
    fn the_window_is_next_sunday_night() {
        let u = Uploads::default();
        let w = windows(&u, &robots(1), TUESDAY_NOON);
        // Sunday 2026-11-29 22:00 UTC.
        assert_eq!(w[0].start_unix_ns, 1_795_989_600_000_000_000);
        assert_eq!(w[0].end_unix_ns - w[0].start_unix_ns, 8 * 3_600_000_000_000);
        assert_eq!(w[0].daily_start_s, 22 * 3600);
        // Inside the window the current one is given, not next week's.
        let inside = w[0].start_unix_ns + 3_600_000_000_000;
        assert_eq!(windows(&u, &robots(1), inside)[0].start_unix_ns, w[0].start_unix_ns);
    }

    #[test]
    fn the_fleet_stays_under_its_bandwidth_cap() {
        let u = Uploads { fleet_bandwidth_mbps: 1000.0, robot_bandwidth_mbps: 100.0, ..Uploads::default() };
        let fleet = robots(137);
        let w = windows(&u, &fleet, TUESDAY_NOON);
        assert_eq!(w.len(), 137);
        // Sweep the window minute by minute: never more than 10 robots at once.
        let (first, last) =
            (w.iter().map(|x| x.start_unix_ns).min().unwrap(), w.iter().map(|x| x.end_unix_ns).max().unwrap());
        assert!(8 * 3_600_000_000_000 - (last - first) < 1_000, "slots fill the window (to rounding)");
        let mut t = first;
        while t < last {
            let open = w.iter().filter(|x| x.open(t, false)).count();
            assert!(open <= 10, "{open} robots at once");
            assert!(open >= 1);
            assert!(open as f64 * rate_mbps(&w[0]) <= 1000.0 + 1e-9);
            t += 60_000_000_000;
        }
    }

    fn rate_mbps(w: &UploadWindow) -> f64 {
        w.rate_kbps as f64 * 8.0 / 1000.0
    }

    #[test]
    fn a_robot_behind_catches_up_in_its_daily_slot_only() {
        let u = Uploads::default();
        let w = windows(&u, &robots(20), TUESDAY_NOON)[7].clone();
        let next_day_slot = w.start_unix_ns - 5 * DAY_NS + 60_000_000_000;
        assert!(w.open(next_day_slot, true), "behind: the daily slot is open");
        assert!(!w.open(next_day_slot, false), "up to date: it waits for Sunday");
        assert!(!w.open(next_day_slot - 2 * 3_600_000_000_000, true), "outside its slot");
        assert!(w.open(w.start_unix_ns, false), "the weekly slot");
        assert!(w.open(w.start_unix_ns + WEEK_NS, false), "and the week after");
        let now = w.start_unix_ns - DAY_NS;
        let forced = UploadWindow { now_until_unix_ns: now + 1, ..w.clone() };
        assert!(forced.open(now, false), "an operator opened it");
        assert_eq!(w.last_weekly_start(w.start_unix_ns + 10), w.start_unix_ns);
        assert_eq!(w.last_weekly_start(w.start_unix_ns - 10), w.start_unix_ns - WEEK_NS);
    }
}
