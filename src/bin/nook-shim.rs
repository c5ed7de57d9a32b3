//! `nook-shim`: one per task, started by nookd (see `nook::shim`).

#![deny(clippy::undocumented_unsafe_blocks)]

fn main() {
    std::process::exit(nook::shim::server::main());
}
