//! The `tract` backend: pure Rust, always available, the on-robot baseline.
//!
//! Inputs live in `Arc<Tensor>`s allocated at load; each run hands tract a clone
//! of the `Arc` (a reference count, no copy) and writes the next inputs in place
//! once tract has let go. tract allocates its intermediate and output tensors on
//! every run; that is contained on the inference thread and counted in the
//! allocation test (`edge/policy/tests/infer_alloc.rs`).

use std::sync::{Arc, Once};

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::DimLike;

use super::{ExecutionPath, InferError, Inputs, PolicyBackend};
use crate::model::{GraphPort, IoShape, Manifest, ModelError, ModelPackage};

pub struct TractBackend {
    manifest: Manifest,
    io: IoShape,
    /// Session state reused across runs, so tract does not rebuild it each time.
    state: TypedSimpleState,
    /// Inputs in graph order: rgb, depth, joints positions resolved at load.
    tensors: [Arc<Tensor>; 3],
    /// Index into `tensors` of the rgb, depth and joints inputs.
    order: [usize; 3],
    action: Vec<f32>,
}

static EXECUTOR: Once = Once::new();

fn backend_error(model: &ModelPackage, e: impl std::fmt::Display) -> ModelError {
    ModelError::Backend { dir: model.dir.clone(), backend: "tract", reason: format!("{e:#}") }
}

impl TractBackend {
    /// Loads, checks against the manifest, optimises. `threads` > 1 runs matrix
    /// products on a pool of that many threads (process-wide, set once).
    pub fn load(model: &ModelPackage, threads: usize) -> Result<Self, InferError> {
        if threads > 1 {
            EXECUTOR.call_once(|| {
                tract_linalg::multithread::set_default_executor(
                    tract_linalg::multithread::Executor::multithread_with_name(threads, "gantry-tract"),
                )
            });
        }
        let io = model.io_shape()?;
        let typed = tract_onnx::onnx()
            .model_for_read(&mut &model.onnx[..])
            .and_then(|m| m.into_typed())
            .map_err(|e| backend_error(model, e))?;
        let facts = |outlets: &[OutletId], is_input: bool| -> Result<Vec<GraphPort>, ModelError> {
            outlets
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    let fact = if is_input { typed.input_fact(i) } else { typed.output_fact(i) };
                    let fact = fact.map_err(|e| backend_error(model, e))?;
                    let name = if is_input {
                        typed.node(o.node).name.clone()
                    } else {
                        typed.outlet_label(*o).map(str::to_owned).unwrap_or_else(|| typed.node(o.node).name.clone())
                    };
                    Ok((name, fact.shape.iter().map(|d| d.to_usize().ok()).collect()))
                })
                .collect()
        };
        let graph_inputs = facts(typed.input_outlets().map_err(|e| backend_error(model, e))?, true)?;
        let graph_outputs = facts(typed.output_outlets().map_err(|e| backend_error(model, e))?, false)?;
        model.check_graph(&graph_inputs, &graph_outputs)?;

        let position = |name: &str| graph_inputs.iter().position(|(n, _)| n == name).unwrap_or(0);
        let order = [position(&model.rgb()?.name), position(&model.depth()?.name), position(&model.joints()?.name)];
        let mut tensors: [Arc<Tensor>; 3] = Default::default();
        for (spec_index, spec) in [model.rgb()?, model.depth()?, model.joints()?].into_iter().enumerate() {
            tensors[order[spec_index]] =
                Arc::new(Tensor::zero::<f32>(&spec.shape).map_err(|e| backend_error(model, e))?);
        }
        let plan = typed.into_optimized().and_then(|m| m.into_runnable()).map_err(|e| backend_error(model, e))?;
        let state = plan.spawn().map_err(|e| backend_error(model, e))?;
        Ok(Self { manifest: model.manifest.clone(), io, state, tensors, order, action: vec![0.0; io.action] })
    }
}

impl PolicyBackend for TractBackend {
    fn execution_path(&self) -> ExecutionPath {
        ExecutionPath::TractCpu
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn io(&self) -> IoShape {
        self.io
    }

    fn inputs(&mut self) -> Inputs<'_> {
        let [a, b, c] = &mut self.tensors;
        let mut slots: [Option<&mut [f32]>; 3] = [None, None, None];
        for (index, t) in [a, b, c].into_iter().enumerate() {
            // Unique once a run has returned (the allocation test counts on it);
            // make_mut copies rather than fail if tract ever keeps a reference.
            let t = Arc::make_mut(t);
            // SAFETY: created in `load` by `Tensor::zero::<f32>`: plain f32 storage.
            slots[index] = Some(unsafe { t.as_slice_mut_unchecked::<f32>() });
        }
        // `order` is a permutation (checked at load); an empty slice would only fail the preprocessing.
        let mut take = |i: usize| slots.get_mut(self.order[i]).and_then(Option::take).unwrap_or_default();
        Inputs { rgb: take(0), depth: take(1), joints: take(2) }
    }

    fn run(&mut self) -> Result<&[f32], InferError> {
        let inputs: TVec<TValue> = self.tensors.iter().map(|t| TValue::from_const(t.clone())).collect();
        let outputs =
            self.state.run(inputs).map_err(|e| InferError::Backend { backend: "tract", reason: format!("{e:#}") })?;
        let out = &outputs[0];
        if out.datum_type() != f32::datum_type() || out.len() != self.action.len() {
            return Err(InferError::Backend {
                backend: "tract",
                reason: format!(
                    "output is {:?} {:?}, expected f32 [1, {}]",
                    out.datum_type(),
                    out.shape(),
                    self.action.len()
                ),
            });
        }
        // SAFETY: checked just above: f32 with the action's length.
        self.action.copy_from_slice(unsafe { out.as_slice_unchecked::<f32>() });
        Ok(&self.action)
    }
}
