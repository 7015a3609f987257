//! The robot's operating mode, as the control loop sets it and everyone
//! (status page, recorder, task executor) reads it.

/// The operating mode the status page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Running = 0,
    /// On the baseline policy, or without real-time scheduling.
    Degraded = 1,
    /// No usable policy output: holding position.
    SafeStop = 2,
    EStop = 3,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Running => "running",
            Mode::Degraded => "degraded",
            Mode::SafeStop => "safe_stop",
            Mode::EStop => "estop",
        }
    }

    pub fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Degraded,
            2 => Mode::SafeStop,
            3 => Mode::EStop,
            _ => Mode::Running,
        }
    }
}
