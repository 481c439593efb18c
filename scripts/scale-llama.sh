#!/usr/bin/env bash
# The Llama-shaped scale run (issue #12, item 7): generate a Hugging Face
# folder shaped like TinyLlama-1.1B (hidden 2048, 22 layers, 32 heads / 4
# key-value heads, intermediate 5632, vocabulary 32000, untied head):
# 1,100,048,384 weights in bf16 (~2.2 GB) in 5 shards, random normal values
# (std 0.02) from a fixed seed. Then, in one run, time reading the shards
# once (`cat > /dev/null`) and the three commands under /usr/bin/time -v:
#   audit FOLDER                                  (the weights' zeros as mask)
#   prune FOLDER --method magnitude --pattern 2:4 (streams layer by layer)
#   prune FOLDER --method rpi --quota erk --sparsity 0.5
# and print wall time and peak RSS next to the budget: 1.5 x the largest
# shard plus the bit-packed masks. Needs ~2.3 GB in $SCALE_DIR (default
# .cache/scale-llama) and python3 with numpy (installed on demand).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${SCALE_DIR:-$root/.cache/scale-llama}"
mkdir -p "$dir"
"$root/scripts/setup.sh" build
"$root/scripts/setup.sh" python
python3 -c "import numpy" 2>/dev/null || python3 -m pip install --quiet numpy
cargo build --quiet --release --manifest-path "$root/Cargo.toml"
bin="$root/target/release/maskforge"
if [ ! -f "$dir/model.safetensors.index.json" ]; then
  python3 - "$dir" <<'PY'
import json, struct, sys
import numpy as np
out = sys.argv[1]
H, I, L, heads, kv, V = 2048, 5632, 22, 32, 4, 32000
D = H // heads
config = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
    "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": heads,
    "num_key_value_heads": kv, "vocab_size": V, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
json.dump(config, open(f"{out}/config.json", "w"), indent=1)
def layer(i):
    p = f"model.layers.{i}"
    return [(f"{p}.input_layernorm.weight", [H]), (f"{p}.self_attn.q_proj.weight", [H, H]),
            (f"{p}.self_attn.k_proj.weight", [kv * D, H]), (f"{p}.self_attn.v_proj.weight", [kv * D, H]),
            (f"{p}.self_attn.o_proj.weight", [H, H]), (f"{p}.post_attention_layernorm.weight", [H]),
            (f"{p}.mlp.gate_proj.weight", [I, H]), (f"{p}.mlp.up_proj.weight", [I, H]),
            (f"{p}.mlp.down_proj.weight", [H, I])]
shards = [[("model.embed_tokens.weight", [V, H])] + sum((layer(i) for i in range(0, 4)), [])]
for s in range(4, 20, 4):
    shards.append(sum((layer(i) for i in range(s, s + 4)), []))
shards[-1] += sum((layer(i) for i in range(20, L)), []) + [("model.norm.weight", [H]), ("lm_head.weight", [V, H])]
rng = np.random.default_rng(0)
weight_map, total = {}, 0
for s, tensors in enumerate(shards):
    name = f"model-{s + 1:05d}-of-{len(shards):05d}.safetensors"
    header, offset = {}, 0
    for key, shape in tensors:
        n = int(np.prod(shape)) * 2
        header[key] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
        weight_map[key] = name
        if len(shape) == 2 and "embed" not in key:
            total += int(np.prod(shape))
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(f"{out}/{name}", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for key, shape in tensors:
            if "norm" in key:
                w = np.ones(shape, dtype=np.float32)
            else:
                w = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            f.write((w.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    print("wrote", name, flush=True)
json.dump({"metadata": {}, "weight_map": weight_map}, open(f"{out}/model.safetensors.index.json", "w"))
print("prunable weights (linear layers and head):", total)
PY
fi
largest=$(ls -l "$dir"/model-*.safetensors | awk '{print $5}' | sort -n | tail -1)
masks_bytes=$(( 1100048384 / 8 ))
budget_mb=$(( (largest * 3 / 2 + masks_bytes) / 1048576 ))
echo "largest shard $((largest / 1048576)) MB; RSS budget $budget_mb MB"
run() {
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$dir/time.txt" "$@" > "$dir/out.txt"
  read -r wall rss < "$dir/time.txt"
  printf '%-44s wall %7.2f s   peak RSS %6d MB   %s\n' "$label" "$wall" "$((rss / 1024))" \
    "$([ $((rss / 1024)) -le "$budget_mb" ] && echo within-budget || echo OVER-BUDGET)"
}
# Each run writes new files (ext4 flushes a file renamed over an existing
# one, which would time the disk, not maskforge).
rm -f "$dir/nm.safetensors" "$dir/rpi.safetensors"
run "cat shards > /dev/null" sh -c "cat '$dir'/model-*.safetensors > /dev/null"
run "audit (weights' zeros as mask)" "$bin" audit "$dir"
run "prune magnitude 2:4" "$bin" prune "$dir" --method magnitude --pattern 2:4 -o "$dir/nm.safetensors"
run "prune rpi erk 50%" "$bin" prune "$dir" --method rpi --quota erk --sparsity 0.5 -o "$dir/rpi.safetensors"
run "cat shards > /dev/null (again)" sh -c "cat '$dir'/model-*.safetensors > /dev/null"
# The two costs a prune has beyond reading: the model hash of its
# provenance, and writing its BOOL mask file (one byte per weight).
run "floor: sha256 of the shards (hashlib)" python3 -c \
  "import hashlib, sys; [hashlib.file_digest(open(f, 'rb'), 'sha256') for f in sys.argv[1:]]" \
  "$dir"/model-*.safetensors
run "floor: write the mask file's bytes (dd)" dd if=/dev/zero of="$dir/dd.bin" bs=1M \
  count=$(( $(stat -c %s "$dir/nm.safetensors") / 1048576 )) status=none
rm -f "$dir/dd.bin"
grep -E "^rpi|compression" "$dir/out.txt" | tail -2 || true
