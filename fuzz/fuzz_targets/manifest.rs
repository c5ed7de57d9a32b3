#![no_main]
//! Fuzz target: see `nook::fuzzing::manifest`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nook::fuzzing::manifest(data);
});
