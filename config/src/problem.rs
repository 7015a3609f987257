//! One configuration problem, and the checker that collects them.

use std::fmt;
use std::ops::RangeInclusive;

/// A single problem in a configuration: which key, what is wrong, what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `control.rate_hz`.
    pub key: String,
    pub problem: String,
    pub expected: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, problem: impl Into<String>, expected: impl Into<String>) -> Self {
        Self { key: key.into(), problem: problem.into(), expected: expected.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (expected {})", self.key, self.problem, self.expected)
    }
}

/// Collects every problem of a configuration instead of stopping at the first, so
/// an operator fixes a file in one pass.
#[derive(Debug, Default)]
pub struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, key: impl Into<String>, problem: impl Into<String>, expected: impl Into<String>) {
        self.problems.push(Problem::new(key, problem, expected));
    }

    /// `path`, when set, must name a readable file (relative to the working
    /// directory, as `run` reads it).
    pub fn file(&mut self, key: &str, path: &str, expected: &str) {
        if path.is_empty() {
            return;
        }
        match std::fs::File::open(path).and_then(|f| f.metadata()) {
            Ok(m) if m.is_file() => {}
            Ok(_) => self.push(key, format!("{path:?} is not a file"), expected),
            Err(e) => self.push(key, format!("{path:?} cannot be read: {e}"), expected),
        }
    }

    /// `value` must lie in `range` (inclusive).
    pub fn range<T>(&mut self, key: &str, value: T, range: RangeInclusive<T>)
    where
        T: PartialOrd + fmt::Display + Copy,
    {
        if !range.contains(&value) {
            self.push(
                key,
                format!("{value} is out of range"),
                format!("a value from {} to {}", range.start(), range.end()),
            );
        }
    }

    /// `value` must be finite and in `range`; NaN and infinities are rejected too.
    pub fn range_f64(&mut self, key: &str, value: f64, range: RangeInclusive<f64>) {
        if !value.is_finite() {
            self.push(key, format!("{value} is not a finite number"), "a finite number");
        } else {
            self.range(key, value, range);
        }
    }

    /// `value` must not be empty.
    pub fn non_empty(&mut self, key: &str, value: &str, expected: &str) {
        if value.trim().is_empty() {
            self.push(key, "is empty", expected);
        }
    }

    /// An arbitrary rule: when `ok` is false, report `problem`.
    pub fn rule(&mut self, ok: bool, key: &str, problem: impl Into<String>, expected: impl Into<String>) {
        if !ok {
            self.push(key, problem, expected);
        }
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}

/// Ids that end up in MQTT topics, file names and URLs: `[A-Za-z0-9_-]{1,64}`.
pub fn check_id(c: &mut Checker, key: &str, id: &str) {
    let ok =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    c.rule(ok, key, format!("{id:?} is not a valid id"), "1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'");
}

/// `host:port` socket addresses.
pub fn check_socket_addr(c: &mut Checker, key: &str, addr: &str) {
    c.rule(
        addr.parse::<std::net::SocketAddr>().is_ok(),
        key,
        format!("{addr:?} is not a socket address"),
        "IP:PORT, e.g. 127.0.0.1:8080",
    );
}

/// MQTT broker URLs: `mqtt://host:port` or `mqtts://host:port`.
pub fn check_broker_url(c: &mut Checker, key: &str, url: &str) {
    let rest = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("mqtts://"));
    let ok = rest.is_some_and(|hp| {
        hp.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
    });
    c.rule(ok, key, format!("{url:?} is not a broker URL"), "mqtt://HOST:PORT or mqtts://HOST:PORT");
}

/// An ed25519 public key as 64 hex digits or a file holding them; empty is allowed.
pub fn check_public_key(c: &mut Checker, key: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    if let Err(e) = crate::package::parse_public_key(value) {
        c.push(key, e.to_string(), "64 hex digits of the fleet's ed25519 public key, a file holding them, or \"\"");
    }
}

/// An `http://` or `https://` URL; `expected` says what else is allowed.
pub fn check_http_url(c: &mut Checker, key: &str, url: &str, empty_allowed: bool) {
    let ok = (empty_allowed && url.is_empty()) || url.starts_with("http://") || url.starts_with("https://");
    let expected = if empty_allowed {
        "http://… or https://…, or \"\" for none"
    } else {
        "http://HOST:PORT or https://HOST:PORT"
    };
    c.rule(ok, key, format!("{url:?} is not an HTTP URL"), expected);
}
