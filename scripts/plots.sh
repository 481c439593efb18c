#!/usr/bin/env bash
# Regenerate the sweep plots in docs/ (MiCA paper Figs. 4 and 9 on our zoo):
# VGG-16 and ResNet-20 (CIFAR layout), RPI vs MiCA, ERK and IGQ quotas,
# compressions 10^0.5 .. 10^6, 3 seeds each.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh build
cargo build --quiet --release
for model in vgg16 resnet20; do
  target/release/maskforge sweep "zoo:$model" --methods rpi,mica --quotas erk,igq \
    --compressions 0.5:6:0.5 --seeds 3 \
    --csv "docs/sweep-$model.csv" --plot "docs/sweep-$model.svg"
  target/release/maskforge sweep "zoo:$model" --methods rpi,mica --quotas erk,igq \
    --compressions 0.5:6:0.5 --seeds 3 \
    --csv "docs/sweep-$model.csv" --plot "docs/sweep-$model.png" > /dev/null
done
