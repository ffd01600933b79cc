//! Compiles `proto/*.proto` with protox (a pure-Rust protobuf compiler, no system
//! `protoc`) and generates prost messages, plus tonic clients with the `client` feature and
//! tonic servers with the `server` feature.
//!
//! Each audience is its own package and Rust module: `node.proto` first, then
//! `admin.proto`, whose references to node messages resolve to `crate::proto::node`
//! (so they are generated once).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = std::env::var_os("CARGO_FEATURE_CLIENT").is_some();
    let server = std::env::var_os("CARGO_FEATURE_SERVER").is_some();
    for proto in ["proto/node.proto", "proto/admin.proto"] {
        println!("cargo:rerun-if-changed={proto}");
    }

    let node = protox::compile(["node.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(client)
        .build_server(server)
        .compile_fds(node)?;

    let mut admin = protox::compile(["admin.proto"], ["proto"])?;
    // Only admin.proto's own file: the node package is generated above.
    admin.file.retain(|f| f.name() == "admin.proto");
    tonic_prost_build::configure()
        .build_client(client)
        .build_server(server)
        .extern_path(".bauxite.dispatch.node.v1", "crate::proto::node")
        .compile_fds(admin)?;
    Ok(())
}
