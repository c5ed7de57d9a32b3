#![deny(clippy::undocumented_unsafe_blocks)]
fn main() -> std::process::ExitCode {
    nook::cli::main()
}
