//! Gantry's safety kernel: what decides whether a command may reach the motors.
//!
//! - [`governor`]: every check a command must pass, the controlled-stop
//!   substitute when one fails, and the [`governor::Incident`] that says why;
//! - [`shaper`]: turns a policy goal into per-tick steps within the limits;
//! - [`kinematics`]: forward kinematics of the configured arm;
//! - [`zone`]: whether a depth frame shows anything but the arm inside the
//!   safety zone, and how near it is;
//! - [`separation`]: the protective separation distance and the speed it allows.
//!
//! Data enters as plain values (a proposed [`governor::Command`], a sampled
//! [`governor::RobotState`], a depth slice) and leaves as a
//! [`governor::Verdict`] or a [`zone::ZoneReading`]. Nothing here knows
//! threads, clocks, files or allocation, so the same code can run in the
//! motor firmware; `gantry-edge` wires it to the control thread.
#![no_std]
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod governor;
pub mod kinematics;
pub mod mode;
pub mod separation;
pub mod shaper;
pub mod zone;

/// The most joints an arm may have; arrays are sized by it so nothing allocates.
pub const MAX_JOINTS: usize = 8;

/// Inside the bounds, inclusive. False for NaN, so a non-number never passes.
pub(crate) fn within<T: PartialOrd>(x: T, lo: T, hi: T) -> bool {
    x >= lo && x <= hi
}

/// `x` within `lo..=hi` without `f32::clamp`'s panics (NaN or crossed bounds):
/// a NaN `x` gives `lo`, crossed bounds give `hi`. Callers keep non-finite
/// values away; this only makes sure none of them can stop a thread.
pub fn limit(x: f32, lo: f32, hi: f32) -> f32 {
    x.max(lo).min(hi)
}
