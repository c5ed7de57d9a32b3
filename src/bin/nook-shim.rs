//! `nook-shim`: one per task, started by nookd (see `nook::shim`). Also the small OCI hook that
//! removes crun's /dev/core link (see `nook::runtime::containers::dev_core_hook`).

#![deny(clippy::undocumented_unsafe_blocks)]

fn main() {
    let mut args = std::env::args_os().skip(1);
    if args
        .next()
        .is_some_and(|a| a == nook::runtime::containers::DEV_CORE_HOOK_ARG)
    {
        let path = args.next().unwrap_or_default();
        std::process::exit(nook::runtime::containers::dev_core_hook(&path));
    }
    std::process::exit(nook::shim::server::main());
}
