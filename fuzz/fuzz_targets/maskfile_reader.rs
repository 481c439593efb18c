//! Arbitrary bytes as a mask file for LeNet-5.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static NET: maskforge::graph::Network = maskforge::zoo::build("lenet5", 0).unwrap();
    }
    NET.with(|net| {
        if let Ok(m) = maskforge::io::maskfile::from_bytes(net, data, "fuzz") {
            assert_eq!(m.layers.len(), net.layers.len());
        }
    });
});
