//! The optional safety model (governor check 6): an ONNX model that sees the
//! robot state and the policy's action and must approve it.
//!
//! Contract: inputs `state` `[1, 2J]` (positions then velocities) and `action`
//! `[1, J+1]`; output `approve` `[1, 1]`, approved at 0.5 or more. It runs on the
//! inference thread right after the policy (tract allocates, so never on the
//! control thread); its verdict travels with the policy output to the governor.

use std::sync::Arc;

use tract_onnx::prelude::*;

use super::InferError;

pub struct SafetyModel {
    state: TypedSimpleState,
    inputs: [Arc<Tensor>; 2],
    joints: usize,
}

fn err(path: &str, e: impl std::fmt::Display) -> InferError {
    InferError::Backend { backend: "safety model", reason: format!("{path}: {e:#}") }
}

impl SafetyModel {
    pub fn load(path: &str, joints: usize) -> Result<Self, InferError> {
        let model = tract_onnx::onnx().model_for_path(path).map_err(|e| err(path, e))?;
        let typed = model.into_typed().map_err(|e| err(path, e))?;
        let names: Vec<String> =
            typed.input_outlets().map_err(|e| err(path, e))?.iter().map(|o| typed.node(o.node).name.clone()).collect();
        if names != ["state", "action"] {
            return Err(err(path, format!("inputs are {names:?}, expected [\"state\", \"action\"]")));
        }
        let plan = typed.into_optimized().and_then(|m| m.into_runnable()).map_err(|e| err(path, e))?;
        let state = plan.spawn().map_err(|e| err(path, e))?;
        let tensor = |n: usize| Tensor::zero::<f32>(&[1, n]).map(Arc::new).map_err(|e| err(path, e));
        Ok(Self { state, inputs: [tensor(2 * joints)?, tensor(joints + 1)?], joints })
    }

    /// Whether the model approves `action` from `positions`/`velocities`.
    pub fn approves(&mut self, positions: &[f32], velocities: &[f32], action: &[f32]) -> Result<bool, InferError> {
        let j = self.joints;
        let [state, act] = &mut self.inputs;
        // The run state may still hold the last inputs; make_mut copies them then.
        let (state, act) = (Arc::make_mut(state), Arc::make_mut(act));
        // SAFETY: both were created by `Tensor::zero::<f32>` with these lengths.
        let s = unsafe { state.as_slice_mut_unchecked::<f32>() };
        s[..j].copy_from_slice(&positions[..j]);
        s[j..].copy_from_slice(&velocities[..j]);
        unsafe { act.as_slice_mut_unchecked::<f32>() }.copy_from_slice(&action[..j + 1]);
        let inputs: TVec<TValue> = self.inputs.iter().map(|t| TValue::from_const(t.clone())).collect();
        let out = self.state.run(inputs).map_err(|e| err("safety model", e))?;
        let approve = &out[0];
        if approve.datum_type() != f32::datum_type() || approve.len() != 1 {
            return Err(err(
                "safety model",
                format!("output is {:?} {:?}, expected f32 [1, 1]", approve.datum_type(), approve.shape()),
            ));
        }
        // SAFETY: checked just above.
        Ok(unsafe { approve.as_slice_unchecked::<f32>() }[0] >= 0.5)
    }
}
