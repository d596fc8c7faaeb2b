"""Stratified, seeded splits: each class keeps its share, and the same seed gives the same split."""

from __future__ import annotations

import torch


def stratified_split(targets: torch.Tensor, holdout: int | float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (kept, held out); `holdout` is a count or a fraction, shared across classes by size."""
    targets = torch.as_tensor(targets)
    n = len(targets)
    total = round(holdout * n) if isinstance(holdout, float) else int(holdout)
    if not 0 <= total < n:
        raise ValueError(f"cannot hold out {total} of {n} samples")
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(targets, return_counts=True)
    # Largest-remainder rounding so the per-class shares add up to exactly `total`.
    exact = counts.double() * total / n
    share = exact.floor().long()
    for i in torch.argsort(exact - share, descending=True)[: total - int(share.sum())]:
        share[i] += 1
    kept, held = [], []
    for c, k in zip(classes.tolist(), share.tolist()):
        idx = torch.nonzero(targets == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[:k])
        kept.append(idx[k:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values
