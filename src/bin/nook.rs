fn main() -> std::process::ExitCode {
    nook::cli::main()
}
