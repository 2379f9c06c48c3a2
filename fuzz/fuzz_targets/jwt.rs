//! `cargo fuzz run jwt`: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fanout_gateway::fuzz::jwt(data));
