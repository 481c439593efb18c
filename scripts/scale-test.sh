#!/usr/bin/env bash
# The billion-weight run (issue #6): generate a sharded safetensors checkpoint
# of a 16-layer 8192-wide MLP (16 x 8192 x 8192 = 1,073,741,824 weights, f32,
# 8 shards of 2 layers, 80 % of each layer zeroed by magnitude), then run the
# graph-only commands on it under /usr/bin/time -v and print wall time and
# peak RSS next to the budget: 1.5 x the largest shard + the bit-packed masks.
# Needs ~4.3 GB of disk in $SCALE_DIR (default .cache/scale) and python3 with
# numpy (installed on demand).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${SCALE_DIR:-$root/.cache/scale}"
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
width, layers, per_shard = 8192, 16, 2
shards = layers // per_shard
weight_map = {}
rng = np.random.default_rng(0)
for s in range(shards):
    name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
    header, offset, names = {}, 0, []
    for l in range(s * per_shard, (s + 1) * per_shard):
        key = f"layers.{l}.weight"
        nbytes = width * width * 4
        header[key] = {"dtype": "F32", "shape": [width, width], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
        names.append(key)
        weight_map[key] = name
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(f"{out}/{name}", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for key in names:
            w = rng.standard_normal((width, width), dtype=np.float32)
            w[np.abs(w) < 1.2816] = 0.0  # ~80 % zeros
            f.write(w.tobytes())
    print("wrote", name, flush=True)
with open(f"{out}/model.safetensors.index.json", "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
PY
fi
largest=$(ls -l "$dir"/model-*.safetensors | awk '{print $5}' | sort -n | tail -1)
budget_mb=$(( (largest * 3 / 2 + 1073741824 / 8) / 1048576 ))
echo "largest shard $((largest / 1048576)) MB; RSS budget $budget_mb MB"
run() {
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$dir/time.txt" "$@" > "$dir/out.txt"
  read -r wall rss < "$dir/time.txt"
  printf '%-34s wall %7.2f s   peak RSS %6d MB   %s\n' "$label" "$wall" "$((rss / 1024))" \
    "$([ $((rss / 1024)) -le "$budget_mb" ] && echo within-budget || echo OVER-BUDGET)"
}
idx="$dir/model.safetensors.index.json"
# Each run writes new files (ext4 flushes a file renamed over an existing
# one, which would time the disk, not maskforge).
rm -f "$dir"/eff* "$dir"/rpi* "$dir"/mica* "$dir"/mag*
run "audit (weights' zeros as mask)" "$bin" audit "$idx" -o "$dir/eff.safetensors.index.json"
run "quotas igq 100x" "$bin" quotas "$idx" --quota igq --compression 100
run "prune rpi igq 100x" "$bin" prune "$idx" --method rpi --quota igq --compression 100 -o "$dir/rpi.safetensors.index.json"
run "prune mica igq 100x" "$bin" prune "$idx" --method mica --quota igq --compression 100 -o "$dir/mica.safetensors.index.json"
run "prune mica igq 10x" "$bin" prune "$idx" --method mica --quota igq --compression 10 -o "$dir/mica10.safetensors.index.json"
run "prune magnitude global 100x" "$bin" prune "$idx" --method magnitude --compression 100 -o "$dir/mag.safetensors.index.json"
grep -E "^total|compression" "$dir/out.txt" | tail -2 || true
