//! Reading a configuration: TOML text → typed struct → environment overrides →
//! validation, with every failure turned into contract-shaped problem lines.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::problem::{Checker, Problem};
use crate::{CloudConfig, EdgeConfig};

/// Looks up an environment variable; tests pass a closure instead of touching the
/// process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A `GANTRY_…` variable that operators set per robot, and the key it replaces.
pub struct EnvOverride<T> {
    pub var: &'static str,
    pub key: &'static str,
    pub apply: fn(&mut T, String),
}

/// What the edge and cloud configurations share: a commented default file, a few
/// environment overrides, and validation.
pub trait Configuration: Sized + Default + Serialize + DeserializeOwned + 'static {
    /// The full default configuration as commented TOML (`print-default-config`).
    const DEFAULT_TOML: &'static str;
    fn env_overrides() -> &'static [EnvOverride<Self>];
    fn validate(&self, c: &mut Checker);
}

impl Configuration for EdgeConfig {
    const DEFAULT_TOML: &'static str = include_str!("../default-edge.toml");

    fn env_overrides() -> &'static [EnvOverride<Self>] {
        &[
            EnvOverride { var: "GANTRY_ROBOT_ID", key: "robot.id", apply: |c, v| c.robot.id = v },
            EnvOverride { var: "GANTRY_DATA_DIR", key: "robot.data_dir", apply: |c, v| c.robot.data_dir = v },
            EnvOverride { var: "GANTRY_BROKER_URL", key: "uplink.broker_url", apply: |c, v| c.uplink.broker_url = v },
            EnvOverride {
                var: "GANTRY_CREDENTIALS_PATH",
                key: "uplink.credentials_path",
                apply: |c, v| c.uplink.credentials_path = v,
            },
        ]
    }

    fn validate(&self, c: &mut Checker) {
        self.check(c, disk_size_bytes(Path::new(&self.robot.data_dir)));
    }
}

impl Configuration for CloudConfig {
    const DEFAULT_TOML: &'static str = include_str!("../default-cloud.toml");

    fn env_overrides() -> &'static [EnvOverride<Self>] {
        &[
            EnvOverride { var: "GANTRY_DATA_DIR", key: "service.data_dir", apply: |c, v| c.service.data_dir = v },
            EnvOverride { var: "GANTRY_BROKER_URL", key: "broker.url", apply: |c, v| c.broker.url = v },
            EnvOverride {
                var: "GANTRY_CREDENTIALS_PATH",
                key: "broker.credentials_path",
                apply: |c, v| c.broker.credentials_path = v,
            },
        ]
    }

    fn validate(&self, c: &mut Checker) {
        self.check(c);
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source} (expected a readable TOML file)", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render(source_name, problems))]
    Invalid { source_name: String, problems: Vec<Problem> },
}

impl LoadError {
    /// The problems, one per line in the contract's form, for stderr.
    pub fn lines(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_owned).collect()
    }
}

fn render(source_name: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{source_name}: {p}"));
    }
    out
}

/// Loads `path` (or the built-in defaults when `None`), applies the environment
/// overrides and validates.
pub fn load<T: Configuration>(path: Option<&Path>, env: Env<'_>) -> Result<T, LoadError> {
    match path {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
            load_str(&text, &path.display().to_string(), env)
        }
        None => finish(T::default(), "<built-in defaults>", env),
    }
}

/// Like [`load`] for TOML text; `source_name` names it in problem lines.
pub fn load_str<T: Configuration>(text: &str, source_name: &str, env: Env<'_>) -> Result<T, LoadError> {
    let invalid = |problems| LoadError::Invalid { source_name: source_name.to_owned(), problems };
    let de = toml::Deserializer::parse(text).map_err(|e| invalid(vec![syntax_problem(text, &e)]))?;
    let config: T = serde_path_to_error::deserialize(de).map_err(|e| invalid(vec![type_problem(text, &e)]))?;
    finish(config, source_name, env)
}

fn finish<T: Configuration>(mut config: T, source_name: &str, env: Env<'_>) -> Result<T, LoadError> {
    let mut overridden = Vec::new();
    for o in T::env_overrides() {
        if let Some(value) = env(o.var) {
            (o.apply)(&mut config, value);
            overridden.push(o);
        }
    }
    let mut checker = Checker::new();
    config.validate(&mut checker);
    let mut problems = checker.into_problems();
    if problems.is_empty() {
        return Ok(config);
    }
    // A bad value that came from the environment is blamed on the variable.
    for p in &mut problems {
        if let Some(o) = overridden.iter().find(|o| o.key == p.key) {
            p.key = format!("{} (from {})", p.key, o.var);
        }
    }
    Err(LoadError::Invalid { source_name: source_name.to_owned(), problems })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    let at = e.span().map(|s| line_col(text, s.start));
    let key = at.map_or_else(|| "<file>".to_owned(), |(l, c)| format!("line {l}, column {c}"));
    Problem::new(key, format!("invalid TOML: {}", e.message().trim()), "TOML syntax, e.g. key = value")
}

/// Turns a serde error at a key path into a problem naming that key. Serde's own
/// messages already carry the allowed values ("expected one of …", "expected u32").
fn type_problem(text: &str, e: &serde_path_to_error::Error<toml::de::Error>) -> Problem {
    let inner = e.inner();
    let message = inner.message().trim();
    let mut key = e.path().to_string();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        // serde_path_to_error ends the path at the unknown key itself on some formats.
        if key == "." || key.is_empty() {
            key = field.to_owned();
        } else if !key.ends_with(field) {
            key = format!("{key}.{field}");
        }
    }
    if key == "." || key.is_empty() {
        key = inner.span().map_or_else(
            || "<file>".to_owned(),
            |s| {
                let (l, c) = line_col(text, s.start);
                format!("line {l}, column {c}")
            },
        );
    }
    let (problem, expected) = match message.split_once(", expected ") {
        Some((p, x)) => (p.to_owned(), x.to_owned()),
        None => (message.to_owned(), "a value of the documented type".to_owned()),
    };
    let problem = if problem.starts_with("unknown field") { "unknown key".to_owned() } else { problem };
    Problem::new(key, problem, expected)
}

/// Size of the file system that holds `dir` (or its nearest existing ancestor).
pub fn disk_size_bytes(dir: &Path) -> Option<u64> {
    let mut probe = if dir.is_absolute() { dir.to_owned() } else { std::env::current_dir().ok()?.join(dir) };
    while !probe.exists() {
        probe = probe.parent()?.to_owned();
    }
    let c_path = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c_path is NUL-terminated and st is a valid out-pointer of the right type.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled st.
    let st = unsafe { st.assume_init() };
    // fsblkcnt_t and c_ulong are 32 bits wide on some targets.
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_blocks as u64 * st.f_frsize as u64)
}
