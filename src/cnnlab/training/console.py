"""What a training run prints: a progress bar per epoch, one line per epoch, the result; or JSON lines, or quiet."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cnnlab.training.config import TrainConfig
from cnnlab.training.distributed import main_process
from cnnlab.training.metrics import balanced_text, results_accuracy_text
from cnnlab.training.state import EpochMeter, TrainState


class Printer:
    """All a run prints, from planning to its result: progress bars and one line per epoch; --quiet prints only the
    end, --json prints JSON lines; warnings go to stderr. Only the job's first process prints."""

    def __init__(self, cfg: TrainConfig, is_main: bool | None = None):
        """Printing as `cfg` asks (--quiet, --json) in this process (default: rank 0 of a torchrun job prints)."""
        self.is_main = main_process() if is_main is None else is_main
        self.enabled = self.is_main and not cfg.quiet and not cfg.json
        self.json = self.is_main and cfg.json

    def start(self, cfg: TrainConfig, resolved: dict[str, Any], resumed: bool, state: TrainState,
              run_dir: Path) -> None:
        """What is trained on what, and where the run goes."""
        if not self.enabled:
            return
        r = resolved
        verb = f"resuming at epoch {state.epoch + 1}" if resumed else "training"
        world = r["world_size"]
        print(f"{verb} {cfg.model} ({r['parameters']:,} parameters) on {r['dataset']}: "
              f"{r['train_images']:,} train / {r['val_images']:,} val / {r['test_images']:,} test images, "
              f"input {'x'.join(map(str, r['input_size']))}, augment {r['augment']}, {r['device']}"
              + (f" with {cfg.amp} autocast" if cfg.amp != "off" else "")
              + (f" x {world} processes, {_threads(cfg)}" if world > 1 else ""))
        weights = r.get("class_weights") or {}
        if weights.get("weights"):
            shown = ", ".join(f"{c} {w:.2f}" for c, w in zip(r["classes"][:10], weights["weights"]))
            more = ", ..." if len(r["classes"]) > 10 else ""
            print(f"class weights {shown}{more} ({weights['why']})")
        print(f"run folder: {run_dir}")

    def auto(self, auto: dict[str, Any] | None) -> None:
        """The line saying what was chosen from the data and why (a JSON event with --json)."""
        if not auto:
            return
        if self.json:
            print(json.dumps({"event": "auto", **auto}), flush=True)
        elif self.enabled and auto.get("line"):
            print(auto["line"], flush=True)

    def bar(self, total: int, epoch: int, epochs: int, initial: int = 0) -> "ProgressBar":
        """The bar of `epoch` (1-based) of `epochs`, starting at batch `initial` when resuming mid-epoch."""
        return ProgressBar(total, epoch, epochs, initial, enabled=self.enabled)

    def epoch(self, row: dict, improved: bool, epochs: int) -> None:
        """One line per epoch (a JSON event with --json); * marks the weights kept so far."""
        if self.json:
            print(json.dumps({"event": "epoch", **row}), flush=True)
        if not self.enabled:
            return
        val = (f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}" if row["val_acc"] is not None else "")
        print(f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} "
              f"acc {row['train_acc']:.2%}{val}  lr {row['lr']:.2e}  {row['images_per_s']:,.0f} img/s  "
              f"{row['elapsed_s']:.1f} s{'  *' if improved else ''}", flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def warn(self, text: str) -> None:
        """A warning, on stderr, whatever --quiet or --json say."""
        if self.is_main:
            print(f"warning: {text}", file=sys.stderr, flush=True)

    def interrupted(self, state: TrainState, run_dir: Path) -> None:
        if self.json:
            print(json.dumps({"event": "interrupted", "epoch": state.epoch, "step": state.step}), flush=True)
        if self.is_main:
            print(f"\ninterrupted at epoch {state.epoch + 1}, step {state.step}; checkpoint saved.\n"
                  f"resume with: cnnlab train --resume {run_dir}", flush=True)

    def finish(self, results: dict, run_dir: Path) -> None:
        """The test result and where everything is (a JSON event with --json; nothing with --quiet)."""
        run = run_dir
        if self.json:
            print(json.dumps({"event": "done", "run": str(run), **{k: v for k, v in results.items()
                                                                  if not isinstance(v, (list, dict))}}), flush=True)
            return
        if not self.enabled:
            return
        print(result_lines(results))
        print(f"run: {run}\n  curves:  {run / 'curves.png'}\n  results: {run / 'results.json'}\n"
              f"  model:   {run / 'checkpoints' / 'best.pt'}\n"
              f"next: cnnlab eval {run}  |  cnnlab predict {run} IMAGE  |  cnnlab report {run}")


def result_lines(results: dict) -> str:
    """A finished run's test accuracy (with its interval on a small test split), loss, best epoch and time; its
    balanced accuracy on a second line where the classes are unbalanced."""
    best = (f", best epoch {results['best_epoch']} (val {results['best_val_acc']:.2%})"
            if results.get("best_val_acc") is not None else "")
    tta = f" with {results['tta']} TTA" if results.get("tta", "none") != "none" else ""
    line = (f"test accuracy {results_accuracy_text(results)}{tta}, loss {results['test_loss']:.4f}{best}, "
            f"{results['train_seconds']:.1f} s of training")
    balanced = balanced_text(results)
    return line + (f"\n{balanced}" if balanced else "")


def _threads(cfg: TrainConfig) -> str:
    n = torch.get_num_threads()
    why = "--threads" if cfg.threads else "this machine's cores / its processes; --threads to change"
    return f"{n} CPU thread{'s' if n != 1 else ''} each ({why})"


class ProgressBar:
    """A tqdm bar for one epoch showing loss, accuracy and images/s (tqdm adds the ETA)."""

    def __init__(self, total: int, epoch: int, epochs: int, initial: int = 0, enabled: bool = True):
        self.bar = tqdm(total=total, initial=initial, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                        disable=None if enabled else True, dynamic_ncols=True)
        self.last = 0.0

    def update(self, meter: EpochMeter) -> None:
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last > 0.25 and meter.seen:
            self.last = now
            self.bar.set_postfix(loss=f"{meter.loss_sum / meter.seen:.4f}", acc=f"{meter.correct / meter.seen:.1%}",
                                 img_s=f"{meter.seen / max(meter.seconds, 1e-9):,.0f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
