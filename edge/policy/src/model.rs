//! Model packages: a directory with `model.onnx` and `manifest.toml`.
//!
//! The manifest says what the model is (name, version, sha256), what it takes
//! (input names, shapes, normalisation) and what it gives (the action's shape and
//! meaning). Loading checks the sha256 and, in the backend, that the ONNX graph has
//! exactly these inputs and output; any mismatch is an error naming both sides.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The manifest format this code reads.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    Rgb,
    Depth,
    Joints,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub kind: InputKind,
    pub shape: Vec<usize>,
    /// Per-channel mean and std of `rgb` after scaling to 0..1.
    #[serde(default)]
    pub mean: Vec<f32>,
    #[serde(default)]
    pub std: Vec<f32>,
    /// Depth in millimetres is divided by this and clipped to 0..1.
    #[serde(default)]
    pub scale_mm: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub semantics: String,
    pub max_delta_rad: f32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub version: String,
    pub parameters: u64,
    pub sha256: String,
    pub latency_budget_ms: f64,
    pub inputs: Vec<InputSpec>,
    pub output: OutputSpec,
    /// The evaluation the model was published with (e.g. per-task accuracy);
    /// the robot does not act on it, the fleet page shows it.
    #[serde(default)]
    pub metrics: Option<toml::Table>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model package {dir}: cannot read {file}: {error}")]
    Read { dir: PathBuf, file: &'static str, error: std::io::Error },
    #[error("model package {dir}: manifest.toml: {reason}")]
    Manifest { dir: PathBuf, reason: String },
    #[error("model package {dir}: model.onnx has sha256 {actual}, manifest says {expected}")]
    Checksum { dir: PathBuf, expected: String, actual: String },
    #[error("model package {dir}: the ONNX graph does not match the manifest: {reason}")]
    Graph { dir: PathBuf, reason: String },
    #[error("model package {dir}: {backend} cannot load model.onnx: {reason}")]
    Backend { dir: PathBuf, backend: &'static str, reason: String },
}

/// A verified model package: manifest parsed, checksum matched, ONNX bytes in memory.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub onnx: Vec<u8>,
}

/// A graph input or output as a backend reads it: name and shape, with `None`
/// for a symbolic dimension.
pub type GraphPort = (String, Vec<Option<usize>>);

/// The input contract of the policies in `models/`: an RGB image, a depth image
/// and the joint vector; one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoShape {
    pub rgb: (usize, usize),
    pub depth: (usize, usize),
    pub joints: usize,
    pub action: usize,
}

impl ModelPackage {
    /// A package of `manifest` without its graph: for what reads only the
    /// manifest (preprocessing tables, shapes) of a policy already loaded.
    pub fn from_manifest(manifest: Manifest) -> Self {
        Self { dir: PathBuf::new(), manifest, onnx: Vec::new() }
    }

    /// Reads and verifies the package in `dir`.
    /// [`BUILTIN_BASELINE`](gantry_config::edge::BUILTIN_BASELINE) names the
    /// baseline built into the binary.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        let dir = dir.as_ref().to_owned();
        if dir.as_os_str() == gantry_config::edge::BUILTIN_BASELINE {
            return Self::embedded_baseline();
        }
        let read_err = |file, error| ModelError::Read { dir: dir.clone(), file, error };
        let text = std::fs::read_to_string(dir.join("manifest.toml")).map_err(|e| read_err("manifest.toml", e))?;
        let onnx = std::fs::read(dir.join("model.onnx")).map_err(|e| read_err("model.onnx", e))?;
        Self::from_parts(dir, &text, onnx)
    }

    /// The baseline policy built into the binary: always available, whatever is on disk.
    pub fn embedded_baseline() -> Result<Self, ModelError> {
        Self::from_parts(
            PathBuf::from("<built-in baseline>"),
            include_str!("../../../models/baseline/manifest.toml"),
            include_bytes!("../../../models/baseline/model.onnx").to_vec(),
        )
    }

    /// Verifies a package from its manifest text and model bytes; `dir` names it in errors.
    pub fn from_parts(dir: PathBuf, manifest_text: &str, onnx: Vec<u8>) -> Result<Self, ModelError> {
        let manifest: Manifest = toml::from_str(manifest_text)
            .map_err(|e| ModelError::Manifest { dir: dir.clone(), reason: e.message().to_owned() })?;
        if manifest.format_version != MANIFEST_FORMAT {
            return Err(ModelError::Manifest {
                dir,
                reason: format!(
                    "format_version {} is not supported (expected {MANIFEST_FORMAT})",
                    manifest.format_version
                ),
            });
        }
        let actual = sha256_hex(&onnx);
        if !actual.eq_ignore_ascii_case(manifest.sha256.trim()) {
            return Err(ModelError::Checksum { dir, expected: manifest.sha256.clone(), actual });
        }
        let package = Self { dir, manifest, onnx };
        package.io_shape()?;
        Ok(package)
    }

    fn input(&self, kind: InputKind) -> Result<&InputSpec, ModelError> {
        let mut found = self.manifest.inputs.iter().filter(|i| i.kind == kind);
        match (found.next(), found.next()) {
            (Some(i), None) => Ok(i),
            _ => Err(self.manifest_error(format!("needs exactly one input of kind {kind:?}"))),
        }
    }

    fn manifest_error(&self, reason: String) -> ModelError {
        ModelError::Manifest { dir: self.dir.clone(), reason }
    }

    pub fn rgb(&self) -> Result<&InputSpec, ModelError> {
        self.input(InputKind::Rgb)
    }

    pub fn depth(&self) -> Result<&InputSpec, ModelError> {
        self.input(InputKind::Depth)
    }

    pub fn joints(&self) -> Result<&InputSpec, ModelError> {
        self.input(InputKind::Joints)
    }

    /// The tensor geometry the manifest promises, checked for consistency.
    pub fn io_shape(&self) -> Result<IoShape, ModelError> {
        let rgb = self.rgb()?;
        let depth = self.depth()?;
        let joints = self.joints()?;
        let image = |i: &InputSpec, channels: usize| match i.shape.as_slice() {
            [1, c, h, w] if *c == channels && *h > 0 && *w > 0 => Ok((*h, *w)),
            s => {
                Err(self.manifest_error(format!("input {:?} has shape {s:?}, expected [1, {channels}, H, W]", i.name)))
            }
        };
        let rgb_hw = image(rgb, 3)?;
        if rgb.mean.len() != 3 || rgb.std.len() != 3 || rgb.std.iter().any(|s| *s <= 0.0) {
            return Err(self.manifest_error(format!("input {:?} needs 3 means and 3 positive stds", rgb.name)));
        }
        let depth_hw = image(depth, 1)?;
        if !depth.scale_mm.is_some_and(|s| s > 0.0) {
            return Err(self.manifest_error(format!("input {:?} needs a positive scale_mm", depth.name)));
        }
        let joints_n = match joints.shape.as_slice() {
            [1, n] if *n > 0 && n % 2 == 0 => *n,
            s => return Err(self.manifest_error(format!("input {:?} has shape {s:?}, expected [1, 2*J]", joints.name))),
        };
        let action = match self.manifest.output.shape.as_slice() {
            [1, n] if *n == joints_n / 2 + 1 => *n,
            s => {
                return Err(self.manifest_error(format!(
                    "output {:?} has shape {s:?}, expected [1, {}] (J joint deltas and the gripper)",
                    self.manifest.output.name,
                    joints_n / 2 + 1
                )))
            }
        };
        Ok(IoShape { rgb: rgb_hw, depth: depth_hw, joints: joints_n, action })
    }

    /// Checks the graph's declared inputs and outputs against the manifest.
    /// `graph_inputs`/`graph_outputs` are (name, shape) as the backend reads them;
    /// a `None` dimension is symbolic and matches anything.
    pub fn check_graph(&self, graph_inputs: &[GraphPort], graph_outputs: &[GraphPort]) -> Result<(), ModelError> {
        let mut problems = String::new();
        let mut compare =
            |what: &str, name: &str, want: &[usize], graph: &[GraphPort]| match graph.iter().find(|(n, _)| n == name) {
                None => {
                    let names: Vec<&str> = graph.iter().map(|(n, _)| n.as_str()).collect();
                    let _ = write!(problems, "{what} {name:?} is not in the graph (it has {names:?}); ");
                }
                Some((_, shape)) => {
                    let matches =
                        shape.len() == want.len() && shape.iter().zip(want).all(|(g, w)| g.is_none_or(|g| g == *w));
                    if !matches {
                        let _ = write!(
                            problems,
                            "{what} {name:?} has shape {shape:?} in the graph, {want:?} in the manifest; "
                        );
                    }
                }
            };
        for i in &self.manifest.inputs {
            compare("input", &i.name, &i.shape, graph_inputs);
        }
        let o = &self.manifest.output;
        compare("output", &o.name, &o.shape, graph_outputs);
        if graph_inputs.len() != self.manifest.inputs.len() {
            let _ = write!(
                problems,
                "the graph has {} inputs, the manifest {}; ",
                graph_inputs.len(),
                self.manifest.inputs.len()
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Graph { dir: self.dir.clone(), reason: problems.trim_end_matches("; ").to_owned() })
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}
