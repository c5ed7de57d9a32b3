//! `nook-shim`: one per task, started by nookd (see `nook::shim`). Also the pod holder (see `nook::shim::pod`) and the small OCI hook that
//! removes crun's /dev/core link (see `nook::runtime::containers::dev_core_hook`).

#![deny(clippy::undocumented_unsafe_blocks)]

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.first() {
        Some(a) if a == nook::runtime::containers::DEV_CORE_HOOK_ARG => {
            let path = args.get(1).cloned().unwrap_or_default();
            std::process::exit(nook::runtime::containers::dev_core_hook(&path));
        }
        Some(a) if a == nook::shim::pod::HOLDER_ARG => {
            std::process::exit(nook::shim::pod::main(&args[1..]));
        }
        _ => {}
    }
    std::process::exit(nook::shim::server::main());
}
