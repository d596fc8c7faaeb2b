"""What every dataset split is (`ImageDataset`), the in-memory one (`ImageData`), and `take`, which reads any."""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from cnnlab.data.info import DatasetInfo


class ImageDataset(Protocol):
    """A split of a dataset: uint8 images (C, H, W) by index, int64 targets, and the dataset's info.

    `images` is every image as one uint8 (N, C, H, W) tensor when the split is held in memory (built-in datasets,
    folders that fit), None when its images are decoded from disk one at a time (large folders); then an item
    whose file no longer decodes is None.
    """

    info: DatasetInfo
    split: str
    targets: torch.Tensor
    images: torch.Tensor | None

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None: ...

    @property
    def classes(self) -> tuple[str, ...]: ...


class ImageData(torch.utils.data.Dataset):
    """One split held in memory: uint8 images (N, C, H, W), int64 targets, and the dataset's info."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, info: DatasetInfo, split: str,
                 indices: torch.Tensor | None = None):
        self.images, self.targets, self.info, self.split = images, targets, info, split
        self.indices = indices if indices is not None else torch.arange(len(targets))  # rows of the source split

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    def subset(self, keep: torch.Tensor) -> "ImageData":
        """The rows `keep` of this split (e.g. a stratified subset for a quick run)."""
        return ImageData(self.images[keep], self.targets[keep], self.info, self.split, self.indices[keep])

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return f"ImageData({self.info.name!r}, split={self.split!r}, n={len(self)}, image={c}x{h}x{w})"


def take(data: ImageDataset, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (n, C, H, W), int64 targets) at `indices`; from disk, a file that no longer decodes is left out."""
    idx = torch.as_tensor(indices, dtype=torch.long).flatten()
    if data.images is not None:
        return data.images[idx], data.targets[idx].long()
    items = [item for item in (data[int(i)] for i in idx) if item is not None]
    if not items:
        return torch.zeros(0, data.info.channels, 1, 1, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
    return torch.stack([img for img, _ in items]), torch.tensor([t for _, t in items], dtype=torch.long)
