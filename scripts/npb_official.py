"""One timed run of the official NPB pruner (pvh1602/NPB, "node-path
balancing", NeurIPS 2023), for parity and speed checks against maskforge.

Our own driver: it imports their modules from the checkout given by
--official (never copied into maskforge), builds their CIFAR model
(lottery resnet20, or vgg16/vgg19 with BN; input 3x32x32, 10 classes;
their code stops on VGG-11, whose layers its hook indices do not fit) and
constructs their `Optimization_Pruner` exactly as their
Experiments/singleshot.py does for `--pruner npb` (their `sparsity = 10**(-compression)` is the density,
passed here as --density), with is_scale_weight and node_constraint off
(their defaults) and min_param_to_node 1. Only `pruner.prune(model,
(3, 32, 32))` is timed (time.perf_counter), with their prints sent to
/dev/null. Prints one line:

    <seconds> kept <K> of <N>

K/N counting the conv and linear weight masks (`<param>_mask` buffers).

  -o MASKS.safetensors   the final masks, one U8 tensor (0/1) per weight,
                         keyed by the parameter name (conv.weight,
                         blocks.3.shortcut.0.weight, fc.weight, ...), in the
                         weight's shape.
  --dump PROG.jsonl      one JSON object per call of their
                         `optimize_layerwise` (one integer programme; a
                         chunked layer gives one per chunk), in call order:
                         the inputs as the programme sees them, the objective
                         value cvxpy reached, the solver, the solved integer
                         matrix M (C_in x C_out, recovered from the returned
                         mask by summing the kernel taps) and the call's wall
                         seconds. Collected in memory, written after timing.

The --dump observers are monkeypatches that only watch (their code runs
unchanged): `optimize_layerwise` in the Pruners.pruners namespace (pruners.py
gets it by `from Pruners.utils import *`), `copynet` there (to learn which
net `prune` works on), `torch.nn.Module.named_buffers` (to follow, for that
net only, the buffer name `prune`'s loop is on) and `cvxpy.Problem.solve`
(to keep the last problem). Without --dump nothing is patched.

Their imports need pandas, seaborn, tqdm, matplotlib, torchvision and (for
Utils.metrics) prettytable.
"""
import argparse
import contextlib
import inspect
import json
import math
import os
import random
import sys
import time

import numpy as np


@contextlib.contextmanager
def silenced():
    """Their prints and the solvers' banners (HiGHS writes to file
    descriptor 1 from C) to /dev/null; restored on the way out, so a
    traceback still shows."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        with open(os.devnull, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)


def p_in_of(mask, inp):
    """P_in exactly as their optimize_layerwise computes it."""
    import torch
    if len(mask.shape) == 4:
        return torch.sum(inp, dim=(1, 2)).numpy()
    if len(inp.shape) != 1:
        return torch.sum(inp, dim=1).numpy()
    return inp.numpy()


def effective_args(mask, sparsity, max_p, min_n):
    """Their n_params, max_param_per_kernel and min_param_to_node after the
    adjustments at the top of optimize_layerwise."""
    n_params = int(math.ceil((1 - sparsity) * mask.numel()))
    if len(mask.shape) == 4:
        c_out, c_in, k, _ = mask.shape
        min_per_kernel = int(math.ceil(n_params / (c_in * c_out)))
        if max_p is None:
            max_p = k * k
        elif max_p < min_per_kernel:
            max_p = min_per_kernel
        if min_n is None:
            min_n = 1
        elif min_n > min_per_kernel:
            min_n = min_per_kernel
    else:
        max_p, min_n = 1, 1
    return n_params, max_p, min_n


def max_path_of(p_in, n_params, c_out, max_p):
    """Their normaliser of the path term B (replicated, quirks included:
    for min_out_node == 0, `[-0:]` takes the whole of P_in)."""
    min_out_node = int(n_params / (c_out * max_p))
    remainder = n_params - min_out_node * (c_out * max_p)
    s = np.sort(p_in)
    try:
        return float(np.sum(s[-min_out_node:] * (c_out * max_p)) + remainder * s[-(min_out_node + 1)])
    except IndexError:
        return float(np.sum(s[-min_out_node:] * (c_out * max_p)))


def install_observers(pruners, records):
    """Monkeypatches that only observe; see the module docstring."""
    import cvxpy as cp
    import torch

    track = {"net": None, "name": None, "last_prob": None}

    orig_copynet = pruners.copynet

    def copynet(*args, **kwargs):
        net = orig_copynet(*args, **kwargs)
        track["net"] = net
        return net

    pruners.copynet = copynet

    orig_named_buffers = torch.nn.Module.named_buffers

    def _follow(gen):
        for name, buf in gen:
            track["name"] = name
            yield name, buf

    def named_buffers(self, *args, **kwargs):
        gen = orig_named_buffers(self, *args, **kwargs)
        if track["net"] is not None and self is track["net"]:
            return _follow(gen)
        return gen

    torch.nn.Module.named_buffers = named_buffers

    orig_solve = cp.Problem.solve

    def solve(self, *args, **kwargs):
        try:
            return orig_solve(self, *args, **kwargs)
        finally:
            track["last_prob"] = self

    cp.Problem.solve = solve

    orig_opt = pruners.optimize_layerwise
    sig = inspect.signature(orig_opt)
    chunk_of = {}

    def optimize_layerwise(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        mask, inp = a["mask"], a["inp"]
        shape = list(mask.shape)
        p_in = p_in_of(mask, inp)
        n_params, max_p, min_n = effective_args(mask, a["sparsity"], a["max_param_per_kernel"], a["min_param_to_node"])
        c_out = shape[0]
        layer = track["name"]
        idx = chunk_of.get(layer, 0)
        chunk_of[layer] = idx + 1
        track["last_prob"] = None
        t = time.perf_counter()
        out = orig_opt(*args, **kwargs)
        seconds = time.perf_counter() - t
        prob = track["last_prob"]
        if len(out.shape) == 4:
            m = out.detach().sum(dim=(2, 3)).T
        else:
            m = out.detach().T
        m_np = m.cpu().double().numpy()
        raw = prob.variables()[0].value if prob is not None and prob.variables() else None
        rec = {
            "call": len(records),
            "layer": layer,
            "param": layer[: -len("_mask")] if layer and layer.endswith("_mask") else layer,
            "chunk": idx,
            "shape": shape,
            "p_in": [float(v) for v in np.asarray(p_in).reshape(-1)],
            "sparsity": float(a["sparsity"]),
            "sparsity_is_int": isinstance(a["sparsity"], int),
            "alpha": a["alpha"],
            "beta": a["beta"],
            "max_param_per_kernel_arg": a["max_param_per_kernel"],
            "min_param_to_node_arg": a["min_param_to_node"],
            "max_param_per_kernel": max_p,
            "min_param_to_node": min_n,
            "init_weight": None if a["init_weight"] is None else "given",
            "node_constraint": a["node_constraint"],
            "n_params": n_params,
            "max_path": max_path_of(np.asarray(p_in), n_params, c_out, max_p),
            "objective": None if prob is None else prob.value,
            "status": None if prob is None else prob.status,
            "solver": None if prob is None else prob.solver_stats.solver_name,
            "solver_seconds": None if prob is None else prob.solver_stats.solve_time,
            "M_sum": int(round(float(m_np.sum()))),
            "M": [[int(round(v)) for v in row] for row in m_np.tolist()],
            "M_raw_max_frac": None if raw is None else float(np.max(np.abs(raw - np.round(raw)))),
            "M_raw_truncation_differs": None if raw is None else bool(np.any(np.trunc(raw) != np.round(raw))),
            "mask_binary": bool(torch.all((out == 0) | (out == 1)).item()),
            "seconds": seconds,
        }
        records.append(rec)
        return out

    pruners.optimize_layerwise = optimize_layerwise


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="their checkout (pvh1602/NPB work tree)")
    p.add_argument("--model", choices=["resnet20", "vgg16", "vgg19"], default="resnet20")
    p.add_argument("--density", type=float, required=True, help="kept / total (their 10**-compression)")
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--max-p", type=int, default=9)
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--init-mode", default="ERK", choices=["ERK", "uniform", "ERK+"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", help="masks as .safetensors")
    p.add_argument("--dump", help="one JSON line per optimize_layerwise call")
    a = p.parse_args()

    sys.path.insert(0, os.path.abspath(a.official))
    import torch
    with silenced():
        from Models import lottery_resnet, lottery_vgg
        from Layers import layers
        from Pruners import pruners

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    random.seed(a.seed)
    shape, classes = (3, 32, 32), 10
    build = {"vgg16": lottery_vgg.vgg16_bn, "vgg19": lottery_vgg.vgg19_bn,
             "resnet20": lottery_resnet.resnet20}[a.model]
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        model = build(shape, classes, False, False)

    records = []
    if a.dump:
        install_observers(pruners, records)

    # as their singleshot for --pruner npb: is_scale_weight and node
    # constraint off, min_n 1; loss/dataloader only serve the mag/snip/grasp
    # initializers, not ERK/uniform.
    pruner = pruners.Optimization_Pruner(
        initializer=a.init_mode, alpha=a.alpha, beta=a.beta, sparsity=a.density,
        device=torch.device("cpu"), max_param_per_kernel=a.max_p,
        min_param_to_node=1, is_scale_weight=False, chunk_size=a.chunk,
        node_constraint=False)
    with silenced():
        t = time.perf_counter()
        pruner.prune(model, shape)
        seconds = time.perf_counter() - t

    masks, order = {}, []
    for mname, module in model.named_modules():
        if isinstance(module, (layers.Conv2d, layers.Linear)):
            name = f"{mname}.weight" if mname else "weight"
            m = module.weight_mask.detach().cpu()
            if not bool(torch.all((m == 0) | (m == 1))):
                print(f"warning: mask of {name} is not 0/1", file=sys.stderr)
            masks[name] = m.numpy()
            order.append(name)
    kept = int(sum(float(m.sum()) for m in masks.values()))
    total = sum(m.size for m in masks.values())
    print(f"{seconds:.4f} kept {kept} of {total}")

    if a.output:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from synflow_reference import write_safetensors
        write_safetensors(a.output, {k: (v != 0) for k, v in masks.items()}, order, method="npb-official")
    if a.dump:
        with open(a.dump, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
