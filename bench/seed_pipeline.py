"""The tutorial's pipeline, re-implemented faithfully as the benchmark's reference.

torchvision cannot be installed here, so its two pieces are reproduced line for line:
``datasets.MNIST.__getitem__`` (uint8 array -> ``PIL.Image.fromarray(mode="L")``) and
``transforms.ToTensor`` + ``transforms.Normalize((0.5,), (0.5,))``. Everything else is
the tutorial's code: ``DataLoader(batch_size=64, shuffle=True)``, its 784-512-128-10
sigmoid network, ``CrossEntropyLoss``, Adam 1e-3, 10 epochs, the loss line every 100
steps, and its second normalisation ``images = (images - 0.5) * 2`` after flattening
(on by default; ``--no-double-normalise`` drops it). The raw files are read with
``mnistkit.data.read_idx`` only; no mnistkit training code is used.

Prints one JSON object: accuracy (%), train_seconds, test_seconds, peak_rss_mb.

    python bench/seed_pipeline.py --data-dir /work/shared/data --epochs 10 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mnistkit.data import read_idx


class TutorialMNIST(Dataset):
    """torchvision's ``datasets.MNIST`` with ``Compose([ToTensor(), Normalize((0.5,), (0.5,))])``."""

    def __init__(self, root: Path, train: bool):
        prefix = "train" if train else "t10k"
        raw = root if (root / f"{prefix}-labels-idx1-ubyte.gz").exists() else root / "MNIST" / "raw"
        self.data = read_idx(raw / f"{prefix}-images-idx3-ubyte.gz")  # uint8 [N, 28, 28]
        self.targets = read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz").long()

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy(), mode="L")  # torchvision MNIST
        # transforms.ToTensor(): PIL -> uint8 HWC array -> CHW float in [0, 1]
        t = torch.from_numpy(np.array(img, np.uint8, copy=True))
        t = t.view(img.size[1], img.size[0], 1).permute((2, 0, 1)).contiguous()
        t = t.to(dtype=torch.get_default_dtype()).div(255)
        # transforms.Normalize((0.5,), (0.5,)): not in place on the input (ToTensor made a new tensor)
        t = t.clone().sub_(0.5).div_(0.5)
        return t, target


class LogisticRegression(nn.Module):
    """The tutorial's network, under the tutorial's name."""

    def __init__(self):
        super().__init__()
        self.linear1 = nn.Linear(784, 512)
        self.linear2 = nn.Linear(512, 128)
        self.linear3 = nn.Linear(128, 10)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        x = self.sigmoid(self.linear1(x))
        x = self.sigmoid(self.linear2(x))
        return self.linear3(x)


def default_data_dir() -> Path:
    for env in ("MNISTKIT_DATA",):
        if os.environ.get(env):
            return Path(os.environ[env])
    return Path("data")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="root holding MNIST/raw, or that raw folder (default: $MNISTKIT_DATA)",
    )
    p.add_argument("--epochs", type=int, default=10, help="default: 10 (the tutorial's)")
    p.add_argument("--seed", type=int, default=0, help="default: 0")
    p.add_argument(
        "--double-normalise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the tutorial's second (x - 0.5) * 2 after Normalize (default: on)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the JSON result")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    root = args.data_dir or default_data_dir()

    trainloader = DataLoader(TutorialMNIST(root, train=True), batch_size=64, shuffle=True)
    testloader = DataLoader(TutorialMNIST(root, train=False), batch_size=64, shuffle=True)
    model = LogisticRegression()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

    # The tutorial's training loop, unchanged except the optional second normalisation.
    t0 = time.perf_counter()
    total_step = len(trainloader)
    for epoch in range(args.epochs):
        for i, (images, labels) in enumerate(trainloader):
            images = images.view(-1, 28 * 28)
            if args.double_normalise:
                images = (images - 0.5) * 2
            outputs = model(images)
            loss = criterion(outputs, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if (i + 1) % 100 == 0:
                line = f"Epoch [{epoch + 1}/{args.epochs}], Step [{i + 1}/{total_step}], Loss: {loss.item():.4f}"
                if not args.quiet:
                    print(line, flush=True)
    train_seconds = time.perf_counter() - t0

    # The tutorial's test loop (it has no no_grad / eval(); the network has no dropout or BN).
    t0 = time.perf_counter()
    correct = total = 0
    for images, labels in testloader:
        images = images.reshape(-1, 28 * 28)
        if args.double_normalise:
            images = (images - 0.5) * 2
        outputs = model(images)
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()
    accuracy = 100 * correct / total
    if not args.quiet:
        print(f"Accuracy of the model on the 10000 test images: {accuracy} %")
    result = {
        "accuracy": accuracy,
        "train_seconds": round(train_seconds, 3),
        "test_seconds": round(time.perf_counter() - t0, 3),
        "epochs": args.epochs,
        "seed": args.seed,
        "double_normalise": args.double_normalise,
        "threads": torch.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
