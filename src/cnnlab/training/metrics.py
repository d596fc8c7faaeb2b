"""Classification metrics from logits: accuracy, top-k, confusion matrix, per-class precision/recall/F1."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnlab.models.outputs import predictions, probabilities


def confusion_matrix(targets: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: rows are the true class, columns the predicted one."""
    idx = targets.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


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
        return {
            f"{prefix}_acc": self.accuracy,
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
