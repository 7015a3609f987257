//! Signed model packages as they travel from the registry to robots
//! (`docs/PROTOCOL.md`, "Model distribution").
//!
//! A package is a tar archive of the model package directory's
//! `manifest.toml` and `model.onnx` plus `signature`: the hex ed25519 signature
//! of the `manifest.toml` bytes by the fleet's signing key. The manifest names
//! the model file's SHA-256, so the signature covers the model too; the robot
//! checks both (the signature here, the model's hash when it loads the package).

use std::io::Read;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

pub const MANIFEST: &str = "manifest.toml";
pub const MODEL: &str = "model.onnx";
pub const SIGNATURE: &str = "signature";
/// A package larger than this is refused (a 50M-parameter fp32 model is ~200 MB).
pub const MAX_PACKAGE_BYTES: u64 = 2 << 30;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("the package is not signed (no `{SIGNATURE}` entry)")]
    Unsigned,
    #[error("the package's signature does not verify against the fleet's public key")]
    BadSignature,
    #[error("the package has no `{0}`")]
    Missing(&'static str),
    #[error("unexpected entry {0:?} in the package")]
    Unexpected(String),
    #[error("key: {0}")]
    Key(String),
    #[error("reading the package: {0}")]
    Io(#[from] std::io::Error),
}

/// A fleet signing key from its file: 64 hex digits (the 32-byte secret).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, PackageError> {
    let text = std::fs::read_to_string(path).map_err(|e| PackageError::Key(format!("{}: {e}", path.display())))?;
    let bytes = hex32(text.trim()).map_err(|e| PackageError::Key(format!("{}: {e}", path.display())))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// A new signing key from the OS's random source.
pub fn generate_signing_key() -> Result<SigningKey, PackageError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| PackageError::Key(format!("no randomness: {e}")))?;
    Ok(SigningKey::from_bytes(&secret))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex32(s: &str) -> Result<[u8; 32], String> {
    let bytes = unhex(s)?;
    bytes.try_into().map_err(|_| "expected 64 hex digits".to_string())
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected hex digits".into());
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string())).collect()
}

/// The fleet's public key: 64 hex digits, or the path of a file holding them.
pub fn parse_public_key(text_or_path: &str) -> Result<VerifyingKey, PackageError> {
    let text = text_or_path.trim();
    let hex_text = if hex32(text).is_ok() {
        text.to_string()
    } else {
        std::fs::read_to_string(text)
            .map_err(|e| PackageError::Key(format!("{text:?} is neither 64 hex digits nor a readable file: {e}")))?
            .trim()
            .to_string()
    };
    let bytes = hex32(&hex_text).map_err(PackageError::Key)?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| PackageError::Key(e.to_string()))
}

/// Builds the signed archive of the package directory `dir`.
pub fn pack(dir: &Path, key: &SigningKey) -> Result<Vec<u8>, PackageError> {
    let manifest = std::fs::read(dir.join(MANIFEST))?;
    let model = std::fs::read(dir.join(MODEL))?;
    let signature = hex(&key.sign(&manifest).to_bytes());
    archive(&[(MANIFEST, &manifest), (MODEL, &model), (SIGNATURE, signature.as_bytes())])
}

/// A tar archive of these entries (also used by tests to build bad packages).
pub fn archive(entries: &[(&str, &[u8])]) -> Result<Vec<u8>, PackageError> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *data)?;
    }
    Ok(builder.into_inner()?)
}

/// The manifest of an archive, unverified (for registries that do not hold the
/// fleet's key; robots always verify).
pub fn manifest_of(archive: &[u8]) -> Result<Vec<u8>, PackageError> {
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy() == MANIFEST {
            let mut data = Vec::new();
            entry.by_ref().take(1 << 20).read_to_end(&mut data)?;
            return Ok(data);
        }
    }
    Err(PackageError::Missing(MANIFEST))
}

/// A verified package's contents.
#[derive(Debug)]
pub struct Unpacked {
    pub manifest: Vec<u8>,
    pub model: Vec<u8>,
}

/// Reads the archive and checks its signature against `key`.
pub fn unpack(archive: &[u8], key: &VerifyingKey) -> Result<Unpacked, PackageError> {
    let (mut manifest, mut model, mut signature) = (None, None, None);
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let slot = match name.as_str() {
            MANIFEST => &mut manifest,
            MODEL => &mut model,
            SIGNATURE => &mut signature,
            _ => return Err(PackageError::Unexpected(name)),
        };
        let mut data = Vec::with_capacity(entry.size().min(MAX_PACKAGE_BYTES) as usize);
        entry.by_ref().take(MAX_PACKAGE_BYTES).read_to_end(&mut data)?;
        *slot = Some(data);
    }
    let manifest = manifest.ok_or(PackageError::Missing(MANIFEST))?;
    let model = model.ok_or(PackageError::Missing(MODEL))?;
    let signature = signature.ok_or(PackageError::Unsigned)?;
    let bytes = std::str::from_utf8(&signature)
        .ok()
        .and_then(|s| unhex(s.trim()).ok())
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or(PackageError::BadSignature)?;
    key.verify(&manifest, &Signature::from_bytes(&bytes)).map_err(|_| PackageError::BadSignature)?;
    Ok(Unpacked { manifest, model })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST), "version = \"m-1\"\nsha256 = \"abc\"\n").unwrap();
        std::fs::write(dir.path().join(MODEL), b"\x08\x07onnx bytes").unwrap();
        dir
    }

    #[test]
    fn a_signed_package_verifies_and_a_tampered_one_does_not() {
        let key = generate_signing_key().unwrap();
        let dir = package_dir();
        let bytes = pack(dir.path(), &key).unwrap();
        let got = unpack(&bytes, &key.verifying_key()).unwrap();
        assert_eq!(got.model, b"\x08\x07onnx bytes");

        let other = generate_signing_key().unwrap();
        assert!(matches!(unpack(&bytes, &other.verifying_key()), Err(PackageError::BadSignature)));

        let manifest = std::fs::read(dir.path().join(MANIFEST)).unwrap();
        let sig = hex(&key.sign(&manifest).to_bytes());
        let tampered_manifest = b"version = \"m-1\"\nsha256 = \"abd\"\n".to_vec();
        let tampered = archive(&[(MANIFEST, &tampered_manifest), (MODEL, b"x"), (SIGNATURE, sig.as_bytes())]).unwrap();
        assert!(matches!(unpack(&tampered, &key.verifying_key()), Err(PackageError::BadSignature)));

        let unsigned = archive(&[(MANIFEST, &manifest), (MODEL, b"x")]).unwrap();
        assert!(matches!(unpack(&unsigned, &key.verifying_key()), Err(PackageError::Unsigned)));
        let extra =
            archive(&[(MANIFEST, &manifest), (MODEL, b"x"), (SIGNATURE, sig.as_bytes()), ("extra.txt", b"")]).unwrap();
        assert!(matches!(unpack(&extra, &key.verifying_key()), Err(PackageError::Unexpected(_))));
        assert!(unpack(b"not a tar archive at all", &key.verifying_key()).is_err());
    }

    #[test]
    fn keys_read_from_hex_or_files() {
        let key = generate_signing_key().unwrap();
        let public = hex(key.verifying_key().as_bytes());
        assert_eq!(parse_public_key(&public).unwrap(), key.verifying_key());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.pub");
        std::fs::write(&path, format!("{public}\n")).unwrap();
        assert_eq!(parse_public_key(path.to_str().unwrap()).unwrap(), key.verifying_key());
        assert!(parse_public_key("zz").is_err());
        let secret = dir.path().join("fleet.key");
        std::fs::write(&secret, hex(&key.to_bytes())).unwrap();
        assert_eq!(load_signing_key(&secret).unwrap().verifying_key(), key.verifying_key());
    }
}
