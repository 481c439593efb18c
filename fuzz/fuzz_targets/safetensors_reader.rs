//! Arbitrary bytes as a safetensors checkpoint (and as an index.json): open,
//! infer a chain, and audit when small.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = maskforge::io::checkpoint::parse_index(text, "fuzz.index.json");
    }
    let Ok(ckpt) = maskforge::io::checkpoint::Checkpoint::from_bytes("fuzz.safetensors", data.to_vec())
    else {
        return;
    };
    if let Ok(bound) = ckpt.infer_chain() {
        let net = bound.network;
        if net.prunable_count() < 1 << 22 {
            if let Ok(m) = maskforge::mask::MaskSet::from_weights(&net) {
                let _ = maskforge::analysis::audit::audit(&net, &m);
            }
        }
    }
});
