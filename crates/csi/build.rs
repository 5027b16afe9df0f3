//! Generates the CSI services from `proto/csi.proto` (the CSI specification's, v1.12.0) with
//! protox, a protobuf compiler in Rust, so a build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let files = protox::compile(["csi.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(files)?;
    Ok(())
}
