//! The link between the edge daemon and the motor-controller firmware.
//!
//! - [`protocol`] (`no_std`, shared with the firmware): the messages and their
//!   framing — version byte, postcard payload, CRC-32, COBS, `0x00` delimiter.
//! - [`link`] (host side): a serial port, a reader thread that keeps the latest
//!   joint state, telemetry and e-stop state and runs the link watchdog, and the
//!   command port the control thread writes its motor commands through.
//! - [`sim`]: a firmware simulator (arm dynamics, motor heating, gripper, e-stop)
//!   that speaks the same protocol over a serial port or pseudo-terminal.
#![cfg_attr(not(feature = "std"), no_std)]
// Nothing here may stop a real-time thread: no unwrap, expect or panic
// outside tests (`clippy.toml` also disallows `f32::clamp`).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod protocol;

#[cfg(feature = "std")]
pub mod link;
#[cfg(feature = "std")]
pub mod sim;
