//! Arbitrary bytes through the ONNX door: decode, translate, and (for models
//! of a sane size) the exact liveness analysis of the dense masks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = maskforge::io::onnx::decode_bytes(data) else { return };
    let dir = std::path::Path::new("/nonexistent-maskforge-fuzz");
    if let Ok(net) = maskforge::io::onnx::from_proto("fuzz", model, dir) {
        let elements: usize = net.values.iter().map(|v| v.numel()).sum();
        if net.prunable_count() < 1 << 22 && elements < 1 << 22 {
            let m = maskforge::mask::MaskSet::dense(&net);
            let _ = maskforge::analysis::effective::analyse(&net, &m);
        }
    }
});
