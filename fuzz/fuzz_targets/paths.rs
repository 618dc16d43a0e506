#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| models_fetch_fuzz::properties::paths(data));
