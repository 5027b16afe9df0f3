//! Generates the etcd gRPC client from `proto/etcd.proto` with protox, a protobuf compiler
//! written in Rust, so a build needs no `protoc` (ARCHITECTURE.md, "Build-time code").

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd.proto");
    let files = protox::compile(["etcd.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(files)?;
    Ok(())
}
