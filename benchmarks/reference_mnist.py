"""The reference: the PyTorch examples' MNIST recipe, written from its description, trained until 99% test accuracy.

Conv 1->32 3x3, Conv 32->64 3x3, max-pool 2, dropout 0.25, Linear(9216, 128), dropout 0.5, Linear(128, 10),
log-softmax; Adadelta lr 1.0, StepLR gamma 0.7 per epoch; batch 64 (test batch 1000); torchvision's MNIST dataset
read from the raw files under $CNNLAB_DATA with per-sample ToTensor + Normalize((0.1307,), (0.3081,)) in a
DataLoader (no workers, as the example runs on a CPU). Evaluated on the test set after every epoch; stops at the
first epoch reaching --target. Prints one line per epoch (JSON with --json) with the seconds since process start.

    CNNLAB_DATA=/work/shared/data python benchmarks/reference_mnist.py [--epochs 14] [--target 0.99] [--limit N]
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # before the heavy imports: elapsed times count them, as "process start" asks

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402


class Net(nn.Module):
    """The examples' network, layer for layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> None:
    """One pass of negative log-likelihood steps."""
    model.train()
    for data, target in loader:
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def test(model: nn.Module, loader: DataLoader) -> float:
    """Test accuracy."""
    model.eval()
    correct = 0
    for data, target in loader:
        correct += (model(data).argmax(dim=1) == target).sum().item()
    return correct / len(loader.dataset)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=14, help="at most this many epochs (the example's default)")
    ap.add_argument("--target", type=float, default=0.99, help="stop at the first epoch reaching this test accuracy")
    ap.add_argument("--seed", type=int, default=1, help="the example's default seed")
    ap.add_argument("--limit", type=int, default=0, help="train on only this many images (smoke runs)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, as the example)")
    ap.add_argument("--json", action="store_true", help="one JSON object per epoch and one at the end")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    root = os.environ.get("CNNLAB_DATA", os.path.expanduser("~/.cache/cnnlab/data"))
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.MNIST(root, train=True, download=False, transform=transform)
    test_set = datasets.MNIST(root, train=False, download=False, transform=transform)
    if args.limit:
        train_set = Subset(train_set, range(min(args.limit, len(train_set))))
        test_set = Subset(test_set, range(min(args.limit, len(test_set))))
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000)
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    acc, epoch = 0.0, 0
    for epoch in range(1, args.epochs + 1):
        train_epoch(model, train_loader, optimizer)
        acc = test(model, test_loader)
        scheduler.step()
        row = {"event": "epoch", "epoch": epoch, "test_acc": acc, "elapsed_s": round(time.perf_counter() - T0, 2)}
        print(json.dumps(row) if args.json else f"epoch {epoch:2d}  test accuracy {acc:.2%}  "
              f"{row['elapsed_s']:.1f} s since start", flush=True)
        if acc >= args.target:
            break
    done = {"event": "done", "epochs": epoch, "test_acc": acc, "reached": acc >= args.target,
            "elapsed_s": round(time.perf_counter() - T0, 2), "threads": torch.get_num_threads()}
    print(json.dumps(done) if args.json else f"{'reached' if done['reached'] else 'did not reach'} "
          f"{args.target:.1%} after {epoch} epochs, {done['elapsed_s']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
