//! The safety governor's findings in a technician's words: what happened, what
//! the arm does about it, and what to do. One sentence each, for the status
//! page and `/api/status`'s `reasons`.

use crate::governor::{Check, Incident, Measure};

/// A number with its unit, or nothing for a yes/no condition.
pub fn quantity(v: f64, m: Measure) -> String {
    if !v.is_finite() {
        return "not a number".into();
    }
    match m {
        Measure::Flag | Measure::Code | Measure::Count | Measure::Index => format!("{v:.0}"),
        Measure::AgeMs | Measure::ClearForMs | Measure::BlindPixels => format!("{v:.0} {}", m.unit()),
        Measure::Celsius | Measure::KPa => format!("{v:.1} {}", m.unit()),
        _ => format!("{v:.2} {}", m.unit()),
    }
}

fn joint(i: &Incident) -> String {
    i.joint.map_or(String::new(), |j| format!(" {}", j + 1))
}

/// What an incident means and what to do, as one sentence.
pub fn incident(i: &Incident) -> String {
    let (v, l, m) = (i.value, i.limit, i.measure);
    let q = |x| quantity(x, m);
    match i.check {
        Check::EStop if v > 0.0 => {
            "The e-stop was pressed, or not yet reported by the motor controller: the arm stayed still.".into()
        }
        Check::EStop => "The e-stop was latched after a press: the arm stayed still until it was reset.".into(),
        Check::RealtimeThreads => {
            "A real-time thread stopped making progress: the arm is held; restart the daemon and send its log to support."
                .into()
        }
        Check::FirmwareLink => "The firmware link is down: check the motor controller's power and serial cable.".into(),
        Check::FirmwareFault => format!(
            "The motor controller reports fault {}{}: check its display, clear the cause, then reset the e-stop.",
            q(v),
            i.joint.map_or(String::new(), |j| format!(" on joint {}", j + 1))
        ),
        Check::FirmwareStopped => {
            "The motor controller stopped the arm for want of commands; the arm starts again from where it stopped.".into()
        }
        Check::JointStateFresh => format!(
            "No fresh joint readings from the motor controller (last {} old, {} allowed): check its cable; the arm holds.",
            q(v),
            q(l)
        ),
        Check::JointCount => format!(
            "The motor controller reports {} joints, the configuration says {}: check control.joints; the arm holds.",
            q(v),
            q(l)
        ),
        Check::JointPositionsFinite => format!(
            "Joint{} reports joint positions that are not numbers: check its encoder cable; the arm holds.",
            joint(i)
        ),
        Check::JointVelocitiesFinite => format!(
            "Joint{} reports joint velocities that are not numbers: check its encoder cable; the arm holds.",
            joint(i)
        ),
        Check::EncodersOk => {
            "The motor controller reports a failed joint encoder: check the encoder cables; the arm holds.".into()
        }
        Check::MeasuredVelocity => format!(
            "Joint{} was measured moving at {}, above its limit of {}: the arm is stopped; inspect it before going on.",
            joint(i),
            q(v.abs()),
            q(l)
        ),
        Check::InferenceDeadline => {
            "The policy missed its deadline: the arm holds for that step; if this repeats, check CPU and GPU load below."
                .into()
        }
        Check::PolicyOutputFresh => format!(
            "No fresh action from the policy (last {} old, {} allowed): the arm holds; check the camera and the model.",
            q(v),
            q(l)
        ),
        Check::PolicyOutputFinite => {
            "The policy produced an action that is not a number: refused, the arm holds; report the model version.".into()
        }
        Check::WorkspaceClear => match m {
            Measure::AgeMs => format!(
                "No fresh depth frame (last {} old, {} allowed): check the depth camera's cable; the arm waits.",
                q(v),
                q(l)
            ),
            Measure::BlindPixels => format!(
                "The depth camera cannot see the work cell ({} of {} without depth): clean the lens or remove what covers it; the arm waits.",
                q(v),
                q(l)
            ),
            Measure::ClearForMs => format!(
                "The work cell has been clear for {}: the arm resumes once it has been clear for {}.",
                q(v),
                q(l)
            ),
            _ => format!(
                "A person or object is inside the work cell, {} from the arm (stop distance {}): the arm waits until it is clear.",
                q(v),
                q(l)
            ),
        },
        Check::SeparationDistance => format!(
            "A person is near the arm: it moves slowly ({} allowed, {} asked) until they step back.",
            q(l),
            q(v)
        ),
        Check::JointPosition => format!(
            "The policy asked joint{} to go to {}, beyond its limit of {}: refused, the arm holds.",
            joint(i),
            q(v),
            q(l)
        ),
        Check::JointVelocity => format!(
            "The policy asked joint{} to move at {}, above its limit of {}: refused, the arm holds.",
            joint(i),
            q(v.abs()),
            q(l)
        ),
        Check::JointAcceleration => format!(
            "The policy asked joint{} to accelerate at {}, above its limit of {}: refused, the arm holds.",
            joint(i),
            q(v.abs()),
            q(l)
        ),
        Check::ToolAboveTable => format!(
            "The policy asked the gripper down to {}, below the table at {}: refused, the arm holds.",
            q(v),
            q(l)
        ),
        Check::ArmAboveTable => format!(
            "The policy asked link{} of the arm down to {}, below the table at {}: refused, the arm holds.",
            joint(i),
            q(v),
            q(l)
        ),
        Check::ToolInBox => "The policy asked the gripper out of its allowed box: refused, the arm holds.".into(),
        Check::KeepOut => format!(
            "The policy asked the arm into keep-out zone {}: refused, the arm holds.",
            q(v + 1.0)
        ),
        Check::TelemetryFresh => format!(
            "No temperature or pressure readings from the motor controller (last {} old, {} allowed): check its cable; the arm holds.",
            q(v),
            q(l)
        ),
        Check::TelemetryFinite => {
            "The motor controller reports temperatures or pressure that are not numbers: check its sensors; the arm holds."
                .into()
        }
        Check::MotorTemperature => format!(
            "Motor{} is at {}, above its limit of {}: the arm waits to cool down; check for overload or blocked cooling.",
            joint(i),
            q(v),
            q(l)
        ),
        Check::GripperPressure => format!(
            "The gripper pressure is {}, outside its limit of {}: check the air supply and hoses; the arm holds.",
            q(v),
            q(l)
        ),
        Check::SafetyModel => "The safety model refused the action: the arm holds.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::Command;

    fn at(check: Check, value: f64, limit: f64, measure: Measure) -> Incident {
        Incident {
            time_ns: 0,
            check,
            failed: check.bit(),
            value,
            limit,
            measure,
            joint: Some(1),
            rejected: Command::default(),
            substituted: Command::default(),
            frame_seq: 0,
        }
    }

    #[test]
    fn each_workspace_cause_reads_differently_and_with_units() {
        let person = incident(&at(Check::WorkspaceClear, 0.42, 0.8, Measure::DistanceM));
        assert!(person.starts_with("A person or object is inside the work cell, 0.42 m"), "{person}");
        let blind = incident(&at(Check::WorkspaceClear, 49104.0, 50000.0, Measure::BlindPixels));
        assert!(blind.contains("49104 pixels of 50000 pixels") && blind.contains("clean the lens"), "{blind}");
        let stale = incident(&at(Check::WorkspaceClear, 250.0, 100.0, Measure::AgeMs));
        assert!(stale.contains("250 ms old"), "{stale}");
        let hot = incident(&at(Check::MotorTemperature, 92.5, 80.0, Measure::Celsius));
        assert!(hot.starts_with("Motor 2 is at 92.5 °C, above its limit of 80.0 °C"), "{hot}");
        assert_eq!(quantity(f64::NAN, Measure::Rad), "not a number");
    }
}
