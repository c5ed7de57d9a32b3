#![no_main]
//! Fuzz target: see `nook::fuzzing::www_authenticate`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nook::fuzzing::www_authenticate(data);
});
