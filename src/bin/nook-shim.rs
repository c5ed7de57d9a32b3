fn main() {
    eprintln!("nook-shim: not implemented yet");
    std::process::exit(1)
}
