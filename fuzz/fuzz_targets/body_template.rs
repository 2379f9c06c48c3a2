//! `cargo fuzz run body_template`: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fanout_gateway::fuzz::body_template(data));
