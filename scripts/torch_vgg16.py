"""Same-machine reference for scripts/bench-scorers.sh: a plain PyTorch
forward + backward of VGG-16 for CIFAR (the zoo's architecture: 13 conv3x3 +
BatchNorm + ReLU, max pools, a 2x2 average pool and one linear layer), BatchNorm
in eval mode as in our SNIP, on 100 random 32x32 images, cross-entropy loss;
and one SynFlow-style pass (float64, batch 1, all-ones input, sum of outputs).
Prints median seconds over --repeat timed runs after one warm-up run."""
import argparse
import statistics
import time

import torch
import torch.nn as nn

PLAN = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512]


def vgg16():
    layers, c = [], 3
    for spec in PLAN:
        if spec == 0:
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, spec, 3, padding=1), nn.BatchNorm2d(spec), nn.ReLU()]
            c = spec
    layers += [nn.AvgPool2d(2, 2), nn.Flatten(), nn.Linear(512, 10)]
    return nn.Sequential(*layers)


def timed(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = vgg16().eval()
    x = torch.randn(100, 3, 32, 32)
    y = torch.randint(0, 10, (100,))

    def fwd_bwd():
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()

    m64 = vgg16().double().eval()
    ones = torch.ones(1, 3, 32, 32, dtype=torch.float64)

    def flow():
        m64.zero_grad()
        m64(ones).sum().backward()

    print(f"torch {torch.__version__} threads {a.threads}")
    print(f"fwd+bwd f32 batch 100: {timed(fwd_bwd, a.repeat):.3f} s")
    print(f"fwd+bwd f64 batch 1:   {timed(flow, a.repeat):.4f} s")


if __name__ == "__main__":
    main()
