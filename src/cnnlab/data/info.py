"""What a dataset is: classes, channels, native size, normalization, and which augmentations keep its labels."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset (folder datasets fill theirs in when scanned)."""

    name: str
    classes: tuple[str, ...]
    channels: int
    size: tuple[int, int] | None  # native (H, W); None when images vary (folders)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    source: str
    counts: dict[str, int] = field(default_factory=dict)  # images per official split (train, test)
    flip_ok: bool = False  # horizontal flip keeps the label (photos yes; digits and letters no)
    # True: light strokes on black (MNIST: a digit drawn dark on paper is inverted before prediction); False: dark
    # on light; None: no single background (photos), or measured from the images (see domain.py)
    dark_background: bool | None = None
    in_memory: bool = True  # small enough to decode once into a tensor
    source_folder: str = ""  # sub-folder of the data directory holding the files

    @property
    def num_classes(self) -> int:
        return len(self.classes)
