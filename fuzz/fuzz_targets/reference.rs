#![no_main]
//! Fuzz target: see `nook::fuzzing::reference`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nook::fuzzing::reference(data);
});
