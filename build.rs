//! Compiles every `.proto` file under `proto/` into tonic services and prost messages.
//! The protoc binary comes from `protoc-bin-vendored`, so a build needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut protos: Vec<std::path::PathBuf> = std::fs::read_dir("proto")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    protos.sort();
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded, so mutating the environment is sound.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    tonic_prost_build::configure().compile_protos(&protos, &[std::path::PathBuf::from("proto")])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
