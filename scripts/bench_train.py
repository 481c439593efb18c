"""A plain PyTorch training loop, timed per epoch: the reference for
scripts/bench-train.sh. Same models as maskforge's zoo (LeNet-300-100,
LeNet-5), same batch size and optimiser (Adam 1e-3 or SGD 0.1 with
momentum 0.9), cross-entropy, shuffled batches of the CSV's samples.
Prints one line per model: `NAME s_per_epoch...` (every epoch's seconds)."""
import argparse, gzip, time

import numpy as np
import torch
from torch import nn


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return torch.from_numpy(a[:, :-1] / 255.0), torch.from_numpy(a[:, -1].astype(np.int64))


def model(name):
    if name == "lenet300":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                             nn.ReLU(), nn.Linear(100, 10))
    return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                         nn.ReLU(), nn.Linear(84, 10))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--models", default="lenet300,lenet5")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x, y = load(a.data)
    for name in a.models.split(","):
        net = model(name)
        if a.optimizer == "adam":
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        else:
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        times = []
        for _ in range(a.epochs):
            start = time.perf_counter()
            for idx in torch.randperm(len(y)).split(a.batch_size):
                opt.zero_grad()
                loss = loss_fn(net(x[idx]), y[idx])
                loss.backward()
                opt.step()
            times.append(time.perf_counter() - start)
        print(name, " ".join(f"{t:.4f}" for t in times))


if __name__ == "__main__":
    main()
