"""Classification metrics from logits: accuracy with its 95% interval, balanced accuracy, top-k, confusion matrix,
per-class precision/recall/F1."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from cnnlab.models.outputs import predictions, probabilities


def confusion_matrix(targets: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: rows are the true class, columns the predicted one."""
    idx = targets.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
SHOW_CI_BELOW = 1000  # test splits under this many images print their accuracy with its interval (always stored)
IMBALANCE_RATIO = 1.5  # largest / smallest class count from which a split counts as unbalanced


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `correct / n` (95% by default): unlike the normal approximation it
    stays inside [0, 1] and is not empty at 0 or n correct (Wilson 1927; Brown, Cai & DasGupta 2001)."""
    if n <= 0:
        return 0.0, 1.0  # no images: nothing is known
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At 0 or n correct an end is exactly 0 or 1; clamp away float rounding.
    return max(0.0, centre - half) if correct > 0 else 0.0, min(1.0, centre + half) if correct < n else 1.0


def imbalance(counts: list[int]) -> float:
    """Largest / smallest class count (inf when a class has none): 1.0 for a perfectly balanced split."""
    return max(counts) / min(counts) if min(counts) > 0 else math.inf


def unbalanced(counts: list[int]) -> bool:
    """Whether the classes' counts differ enough (>= IMBALANCE_RATIO) for balanced accuracy to tell more."""
    return len(counts) > 1 and imbalance(counts) >= IMBALANCE_RATIO


def accuracy_text(acc: float, n: int | None = None, low: float | None = None, high: float | None = None) -> str:
    """'93.6% (95% CI 89.9-96.0%, 220 images)' under SHOW_CI_BELOW images, else '93.61%'."""
    if n is None or n >= SHOW_CI_BELOW:
        return f"{acc:.2%}"
    if low is None or high is None:
        low, high = wilson_interval(round(acc * n), n)
    return f"{acc:.1%} (95% CI {low * 100:.1f}-{high:.1%}, {n:,} image{'s' if n != 1 else ''})"


def results_accuracy_text(results: dict[str, Any], prefix: str = "test") -> str:
    """accuracy_text of a results.json / metrics.json dict (older files without n: n from the per-class support)."""
    n = results.get(f"{prefix}_images")
    if n is None and results.get("per_class"):
        n = sum(int(c.get("support", 0)) for c in results["per_class"])
    return accuracy_text(results[f"{prefix}_acc"], n, results.get(f"{prefix}_acc_ci_low"),
                         results.get(f"{prefix}_acc_ci_high"))


def balanced_summary(results: dict[str, Any], prefix: str = "test") -> tuple[float, float] | None:
    """(balanced accuracy, largest / smallest class support) of a results dict whose split is unbalanced, else
    None."""
    support = [int(c["support"]) for c in results.get("per_class") or []]
    if results.get(f"{prefix}_balanced_acc") is None or not unbalanced(support):
        return None
    return results[f"{prefix}_balanced_acc"], imbalance(support)


def balanced_text(results: dict[str, Any], prefix: str = "test") -> str | None:
    """'balanced accuracy 81.2% (recall: cat 95.0%, dog 67.4%; classes unbalanced 9.0:1)' when the split's classes
    are unbalanced, else None."""
    summary = balanced_summary(results, prefix)
    if summary is None:
        return None
    per_class = results["per_class"]
    recalls = ", ".join(f"{c['class']} {c['recall']:.1%}" for c in per_class[:20])
    more = ", ..." if len(per_class) > 20 else ""
    return f"balanced accuracy {summary[0]:.1%} (recall: {recalls}{more}; classes unbalanced {summary[1]:.1f}:1)"


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Fraction of rows whose true class is among the k highest scores; of tied scores the first class ranks
    higher, as in `argmax`, so top-1 is the accuracy (bf16 logits tie now and then)."""
    k = min(k, scores.shape[1])
    top = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return (top == targets[:, None]).any(dim=1).float().mean().item()


@dataclass
class Report:
    """Everything `cnnlab eval` prints and saves."""

    accuracy: float
    loss: float
    topk: dict[int, float]
    confusion: torch.Tensor
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    classes: tuple[str, ...]

    @property
    def n(self) -> int:
        return int(sum(self.support))

    @property
    def interval(self) -> tuple[float, float]:
        """The accuracy's 95% Wilson interval."""
        return wilson_interval(int(self.confusion.diag().sum()), self.n)

    @property
    def balanced_accuracy(self) -> float:
        """The mean recall over the classes present (scikit-learn's balanced_accuracy_score)."""
        present = [r for r, s in zip(self.recall, self.support) if s > 0]
        return sum(present) / max(len(present), 1)

    def most_confused(self, n: int = 5) -> list[tuple[str, str, int]]:
        """The n largest off-diagonal cells: (true class, predicted class, count)."""
        cm = self.confusion.clone()
        cm.fill_diagonal_(0)
        flat = cm.flatten()
        order = flat.argsort(descending=True)[:n]
        k = cm.shape[0]
        return [(self.classes[i // k], self.classes[i % k], int(flat[i])) for i in order.tolist() if flat[i] > 0]

    def per_class(self) -> list[dict]:
        return [
            {"class": c, "precision": p, "recall": r, "f1": f, "support": s}
            for c, p, r, f, s in zip(self.classes, self.precision, self.recall, self.f1, self.support)
        ]

    def to_dict(self, prefix: str = "test") -> dict:
        low, high = self.interval
        return {
            f"{prefix}_acc": self.accuracy,
            f"{prefix}_acc_ci_low": low,  # the 95% Wilson interval of the accuracy
            f"{prefix}_acc_ci_high": high,
            f"{prefix}_images": self.n,
            f"{prefix}_balanced_acc": self.balanced_accuracy,
            f"{prefix}_class_imbalance": imbalance(self.support) if min(self.support) > 0 else None,
            f"{prefix}_loss": self.loss,
            **{f"{prefix}_top{k}_acc": v for k, v in self.topk.items()},
            "per_class": self.per_class(),
            "confusion_matrix": self.confusion.tolist(),
            "most_confused": [{"true": t, "predicted": p, "count": c} for t, p, c in self.most_confused()],
            "classes": list(self.classes),
        }


def report(logits: torch.Tensor, targets: torch.Tensor, loss: float, classes: tuple[str, ...],
           outputs_are_probs: bool = False) -> Report:
    """All metrics of one evaluation pass."""
    k = len(classes)
    probs = probabilities(logits, outputs_are_probs)
    preds = predictions(logits, outputs_are_probs)
    cm = confusion_matrix(targets, preds, k)
    tp = cm.diag().double()
    precision = (tp / cm.sum(0).clamp_min(1)).tolist()
    recall = (tp / cm.sum(1).clamp_min(1)).tolist()
    f1 = [2 * p * r / (p + r) if p + r > 0 else 0.0 for p, r in zip(precision, recall)]
    scores = logits.float() if logits.shape[1] > 1 else probs  # ranked as predictions() ranks them
    topk = {kk: topk_accuracy(scores, targets, kk) for kk in (1, 3, 5) if kk < k or kk == 1}
    return Report(
        accuracy=(preds == targets).float().mean().item(),
        loss=loss,
        topk=topk,
        confusion=cm,
        precision=precision,
        recall=recall,
        f1=f1,
        support=cm.sum(1).tolist(),
        classes=tuple(classes),
    )
