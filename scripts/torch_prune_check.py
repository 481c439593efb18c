#!/usr/bin/env python3
"""`--naming torch-prune` masks load with torch.nn.utils.prune.custom_from_mask
on the same Hugging Face module names (issue #12, item 6).

    PYTHONPATH=.cache/py python3 scripts/torch_prune_check.py [target/debug/maskforge]

A tiny model built from transformers' own LlamaMLP blocks, so its weights
carry Hugging Face names (`model.layers.0.mlp.up_proj.weight`, ...,
`lm_head.weight`), exported to ONNX (the architecture) and saved as a
safetensors state dict. maskforge prunes it (magnitude, 4x) with
`--naming torch-prune`, from the ONNX file and from the safetensors weights
with `--arch`; every key must be `<module>.weight_mask` for a Linear module
of the model, and `prune.custom_from_mask(model.get_submodule(module),
"weight", mask)` must load it: the pruned weight is `weight_orig * mask`, the
forward pass runs, and the pruned state dict (`*.weight_orig` +
`*.weight_mask`) audits in maskforge to the same kept counts. Needs torch,
transformers and safetensors; exits non-zero with the first failure.
"""

import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from torch.nn.utils import prune
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP


class Layer(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.mlp = LlamaMLP(cfg)


class Inner(torch.nn.Module):
    def __init__(self, cfg, n):
        super().__init__()
        self.layers = torch.nn.ModuleList([Layer(cfg) for _ in range(n)])


class Tiny(torch.nn.Module):
    """`model.layers.N.mlp.{gate,up,down}_proj` (SwiGLU) and `lm_head`."""

    def __init__(self):
        super().__init__()
        cfg = LlamaConfig(hidden_size=16, intermediate_size=32, hidden_act="silu",
                          num_attention_heads=2, num_key_value_heads=2)
        self.model = Inner(cfg, 2)
        self.lm_head = torch.nn.Linear(16, 10, bias=False)

    def forward(self, x):
        for layer in self.model.layers:
            x = x + layer.mlp(x)
        return self.lm_head(x)


def run(args):
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def main():
    exe = sys.argv[1] if len(sys.argv) > 1 else "target/debug/maskforge"
    torch.manual_seed(0)
    model = Tiny().eval()
    linears = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(1, 16)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = os.path.join(tmp, "tiny.onnx")
        # Without constant folding: folding pre-transposes a bias-free Linear's
        # weight into a new initializer `onnx::MatMul_N`, losing its name (the
        # weight must keep its module's name for the masks to carry it).
        torch.onnx.export(model, (x,), onnx_path, input_names=["x"], output_names=["y"],
                          opset_version=17, do_constant_folding=False, dynamo=False)
        weights = os.path.join(tmp, "weights.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
        for source in (["tiny.onnx"], ["weights.safetensors", "--arch", onnx_path]):
            masks_path = os.path.join(tmp, "masks.safetensors")
            run([exe, "prune", os.path.join(tmp, source[0]), *source[1:], "--method", "magnitude",
                 "--compression", "4", "--keep-inactive", "--naming", "torch-prune",
                 "-o", masks_path])
            masks = load_file(masks_path)
            want = {f"{n}.weight_mask" for n in linears}
            if set(masks) != want:
                sys.exit(f"{source[0]}: keys {sorted(masks)}, expected {sorted(want)}")
            pruned = Tiny().eval()
            pruned.load_state_dict(model.state_dict())
            kept = {}
            for key, mask in masks.items():
                name = key[: -len(".weight_mask")]
                module = pruned.get_submodule(name)
                prune.custom_from_mask(module, "weight", mask)
                if not torch.equal(module.weight, module.weight_orig * mask):
                    sys.exit(f"{name}: weight is not weight_orig * mask")
                if not torch.equal(module.weight_mask, mask.to(module.weight_mask.dtype)):
                    sys.exit(f"{name}: weight_mask differs from the file's")
                kept[f"{name}.weight"] = int(mask.sum())
            y = pruned(x)
            if not torch.isfinite(y).all():
                sys.exit("forward pass of the pruned model is not finite")
            # The pruned state dict (weight_orig + weight_mask) back into maskforge.
            sd_path = os.path.join(tmp, "pruned.safetensors")
            save_file({k: v.contiguous() for k, v in pruned.state_dict().items()}, sd_path)
            report = json.loads(run([exe, "audit", sd_path, "--arch", onnx_path, "--json"]))
            got = {l["name"]: l["kept"] for l in report["layers"]}
            if got != kept:
                sys.exit(f"audit of the torch-pruned state dict: {got}, masks kept {kept}")
            print(f"{source[0]}: {len(masks)} masks loaded with custom_from_mask, "
                  f"{sum(kept.values())} weights kept; audit agrees")


if __name__ == "__main__":
    main()
