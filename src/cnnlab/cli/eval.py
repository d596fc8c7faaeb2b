"""`cnnlab eval RUN`: accuracy, loss, top-k, per-class metrics, confusion matrix and the worst mistakes."""

from __future__ import annotations

import argparse
import json

from cnnlab.training.config import TTA_MODES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a trained run: metrics, confusion matrix, worst mistakes",
        description="Evaluate a run's best checkpoint on a split: accuracy, loss, top-k accuracy, per-class "
        "precision/recall/F1, the confusion matrix (text and PNG), the most-confused class pairs, and a "
        "gallery of the misclassified images with the highest loss.",
        epilog="examples:\n  cnnlab eval last\n"
        "  cnnlab eval runs/lenet-mnist-20261203-101500 --split val --normalized\n"
        "  cnnlab eval runs/fashion --tta none --json",
    )
    p.add_argument("run", help="run folder (runs/...; last: the newest run) or checkpoint file")
    p.add_argument("--dataset", help="dataset to evaluate on (default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split (default: test)")
    p.add_argument("--data-dir", help="folder holding the datasets")
    p.add_argument("--out", help="folder for the PNGs and metrics.json (default: RUN/eval-<split>)")
    p.add_argument("--mistakes", type=int, default=24,
                   help="most misclassified images shown in the gallery (default: 24)")
    p.add_argument("--normalized", action="store_true", help="confusion matrix PNG as row fractions")
    p.add_argument("--batch-size", type=int, default=1000, help="images per step (default: 1000)")
    p.add_argument("--tta", choices=TTA_MODES,
                   help="test-time augmentation: flip averages each image with its mirror (default: as the run "
                        "was tested)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnlab.files import atomic_write_json
    from cnnlab.text import format_table
    from cnnlab.training.evaluation import evaluate_run
    from cnnlab.training.metrics import balanced_text, results_accuracy_text
    from cnnlab.training.run import load_run

    r = load_run(args.run)
    result = evaluate_run(r, dataset=args.dataset, split=args.split, data_dir=args.data_dir,
                          batch_size=args.batch_size, tta=args.tta)
    rep = result.report
    out = Path(args.out) if args.out else r.path / f"eval-{args.split}"
    paths = result.save_figures(out, mistakes=args.mistakes, normalized=args.normalized)
    summary = rep.to_dict(args.split) | {"dataset": result.dataset, "split": args.split, "tta": result.tta,
                                         "mistakes": len(result.wrong),
                                         "figures": {k: str(v) for k, v in paths.items()}}
    atomic_write_json(summary, out / "metrics.json")
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    top = "  ".join(f"top-{k} {v:.2%}" for k, v in rep.topk.items() if k > 1)
    tta = f" (with {result.tta} TTA)" if result.tta != "none" else ""
    print(f"{result.dataset} {args.split}: {result.n:,} images  accuracy "
          f"{results_accuracy_text(summary, args.split)}{tta}  loss {rep.loss:.4f}  {top}")
    balanced = balanced_text(summary, args.split)
    if balanced:
        print(balanced)
    print()
    rows = [[c["class"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]]
            for c in rep.per_class()]
    print(format_table(["class", "precision", "recall", "F1", "support"], rows, align="lrrrr"))
    if len(rep.classes) <= 20:
        print("\nconfusion matrix (rows: true class, columns: predicted)")
        names = [c[:8] for c in rep.classes]
        print(format_table([""] + names, [[n] + row for n, row in zip(names, rep.confusion.tolist())],
                           align="l" + "r" * len(names)))
    pairs = rep.most_confused(5)
    if pairs:
        print("\nmost confused: " + "; ".join(f"{t} -> {p} ({n})" for t, p, n in pairs))
    wrong = len(result.wrong)
    shown = f"; mistakes.png shows the {min(wrong, args.mistakes)} with the highest loss" if wrong and \
        "mistakes" in paths else ""
    print(f"mistakes: {wrong:,} of {result.n:,} images misclassified{shown}")
    print()
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"metrics: {out / 'metrics.json'}")
    return 0
