"""One timed run of the official MiCA / Synaptic-Flow code
(Hikari43/minimum_connection_assurance) for scripts/bench-official.

Our own driver: it imports their modules from the checkout given by
--official (never copied into maskforge), builds their CIFAR model
(lottery vgg16-bn or resnet20, 10 classes, the models of their configs),
and times only their pruning step, `prune.prune_loop(...)` with the
settings of their configs:

  snip, grasp     pruners.SNIP / GraSP, 1 epoch, scope global
  synflow         pruners.SynFlow, 100 epochs, exponential schedule, global
  mica            pruners.MinimumConnectionAssurance, sparsity_distribution
                  igq, scope local, V_out_select rand (their *_rand configs)
  rpi             the same followed by their mask shuffle (shuffle: True,
                  their *_shuffle configs): IGQ counts placed at random

Calibration data: --samples random tensors of CIFAR shape (uniform in
[0, 1), 3x32x32) with random labels in 0..9, one batch (their
prune_batch_size 256 holds all 100), model in eval mode as their
prune_train_mode: False. Their progress prints go to /dev/null during the
timed call (ours are discarded too). Prints one line: the seconds.
"""
import argparse
import contextlib
import os
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--official", required=True, help="their checkout")
    p.add_argument("--model", choices=["vgg16", "resnet20"], default="vgg16")
    p.add_argument("--method", choices=["snip", "grasp", "synflow", "mica", "rpi"], required=True)
    p.add_argument("--compression", type=float, default=100.0, help="total / kept")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    sys.path.insert(0, os.path.abspath(a.official))
    import torch
    import torch.nn as nn
    from Models import lottery_resnet, lottery_vgg
    from Pruners import pruners
    from Utils import generator
    from prune import prune_loop

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    shape, classes = (3, 32, 32), 10
    build = {"vgg16": lottery_vgg.vgg16_bn, "resnet20": lottery_resnet.resnet20}[a.model]
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        model = build(shape, classes, False, False)
    loss = nn.CrossEntropyLoss()
    x = torch.rand(a.samples, *shape)
    y = torch.randint(0, classes, (a.samples,))
    loader = [(x, y)]

    cls = {
        "snip": pruners.SNIP,
        "grasp": pruners.GraSP,
        "synflow": pruners.SynFlow,
        "mica": pruners.MinimumConnectionAssurance,
        "rpi": pruners.MinimumConnectionAssurance,
    }[a.method]
    # their main: prune_bias, prune_batchnorm, prune_residual all False
    pruner = cls(generator.masked_parameters(model, False, False, False))
    random = a.method in ("mica", "rpi")
    kwargs = dict(
        model=model,
        loss=loss,
        pruner=pruner,
        dataloader=loader,
        device=torch.device("cpu"),
        density=1.0 / a.compression,
        schedule="exponential",
        scope="local" if random else "global",
        epochs=100 if a.method == "synflow" else 1,
        shuffle=a.method == "rpi",
        sparsity_distribution="igq" if random else None,
        V_out_select="rand",
    )
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), \
            contextlib.redirect_stderr(null):
        t = time.perf_counter()
        prune_loop(**kwargs)
        seconds = time.perf_counter() - t
    kept = sum(int(m.sum().item()) for m, _ in pruner.masked_parameters)
    total = sum(m.numel() for m, _ in pruner.masked_parameters)
    print(f"{seconds:.4f} kept {kept} of {total}")


if __name__ == "__main__":
    main()
