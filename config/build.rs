//! Compiles the recording's protobuf schemas (`proto/`) with protox (a
//! protobuf compiler in Rust: no `protoc` needed) into one serialized
//! `FileDescriptorSet` per message, each holding the message's file and its
//! imports: what MCAP's `protobuf` schema encoding asks for, so Foxglove and
//! any MCAP reader decode the messages without the `.proto` files.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use prost::Message as _;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

const FILES: [&str; 17] = [
    "gantry/Control.proto",
    "gantry/ReplayTick.proto",
    "gantry/RobotConfig.proto",
    "gantry/JointState.proto",
    "gantry/Frame.proto",
    "gantry/Incident.proto",
    "gantry/Episode.proto",
    "gantry/Health.proto",
    "gantry/Sample.proto",
    "gantry/ArmModel.proto",
    "foxglove/CompressedImage.proto",
    "foxglove/RawImage.proto",
    "foxglove/FrameTransforms.proto",
    "foxglove/FrameTransform.proto",
    "foxglove/CameraCalibration.proto",
    "foxglove/Vector3.proto",
    "foxglove/Quaternion.proto",
];

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let set = protox::compile(FILES, ["proto"]).unwrap_or_else(|e| panic!("compiling proto/: {e}"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let by_name = |name: &str| set.file.iter().find(|f| f.name() == name);
    let mut code = String::from("/// (message name, serialized `FileDescriptorSet` of its file and imports)\npub const SCHEMAS: &[(&str, &[u8])] = &[\n");
    for file in &set.file {
        if file.name().starts_with("google/") {
            continue;
        }
        // The file and its imports, imports first.
        let mut order: Vec<&FileDescriptorProto> = Vec::new();
        let mut seen = BTreeSet::new();
        fn visit<'a>(
            f: &'a FileDescriptorProto,
            by_name: &dyn Fn(&str) -> Option<&'a FileDescriptorProto>,
            seen: &mut BTreeSet<String>,
            order: &mut Vec<&'a FileDescriptorProto>,
        ) {
            if !seen.insert(f.name().to_string()) {
                return;
            }
            for dep in &f.dependency {
                let d = by_name(dep).unwrap_or_else(|| panic!("{} imports {dep}, which is missing", f.name()));
                visit(d, by_name, seen, order);
            }
            order.push(f);
        }
        visit(file, &by_name, &mut seen, &mut order);
        // Without comments and source positions: readers need the types only,
        // and every segment carries each schema twice (header and summary).
        let closure = FileDescriptorSet {
            file: order.into_iter().cloned().map(|f| FileDescriptorProto { source_code_info: None, ..f }).collect(),
        };
        let bytes = closure.encode_to_vec();
        for msg in &file.message_type {
            let full = format!("{}.{}", file.package(), msg.name());
            let path = out.join(format!("{full}.fds"));
            std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            writeln!(code, "    ({full:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{full}.fds\"))),").ok();
        }
    }
    code.push_str("];\n");
    std::fs::write(out.join("schemas.rs"), code).expect("writing schemas.rs");
}
