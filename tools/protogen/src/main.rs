//! Compiles the vendored `onnx.proto` into prost structs checked into the repo.
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/quench-onnx");
    let proto_dir = root.join("proto");
    let fds = protox::compile([proto_dir.join("onnx.proto")], [&proto_dir])?;
    let out = root.join("src/generated");
    std::fs::create_dir_all(&out)?;
    prost_build::Config::new()
        .out_dir(&out)
        .compile_fds(fds)?;
    println!("wrote {}", out.join("onnx.rs").display());
    Ok(())
}
