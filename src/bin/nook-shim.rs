//! `nook-shim`: one per task, started by nookd (see `nook::shim`).

fn main() {
    std::process::exit(nook::shim::server::main());
}
