"""What a training run prints: a progress bar per epoch, one line per epoch, the result; or JSON lines, or quiet."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cnnlab.training.config import TrainConfig
from cnnlab.training.metrics import balanced_text, results_accuracy_text
from cnnlab.training.state import EpochMeter, TrainState


class Printer:
    """Progress bars and one line per epoch; --quiet prints only the end, --json prints JSON lines."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, is_main: bool = True):
        self.cfg, self.run_dir = cfg, run_dir
        self.is_main = is_main
        self.enabled = is_main and not cfg.quiet and not cfg.json
        self.json = is_main and cfg.json
        self.quiet = cfg.quiet

    def start(self, resolved: dict[str, Any], resumed: bool, state: TrainState) -> None:
        if not self.enabled:
            return
        r, cfg = resolved, self.cfg
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
        print(f"run folder: {self.run_dir}")

    def auto(self, auto: dict[str, Any] | None) -> None:
        """The line saying what was chosen from the data and why (a JSON event with --json)."""
        if not auto:
            return
        if self.json:
            print(json.dumps({"event": "auto", **auto}), flush=True)
        elif self.enabled and auto.get("line"):
            print(auto["line"], flush=True)

    def bar(self, total: int, epoch: int, initial: int = 0) -> "ProgressBar":
        """The bar of `epoch` (1-based), starting at batch `initial` when resuming mid-epoch."""
        return ProgressBar(total, epoch, self.cfg.epochs, initial, enabled=self.enabled)

    def epoch(self, row: dict, improved: bool) -> None:
        if self.json:
            print(json.dumps({"event": "epoch", **row}), flush=True)
        if not self.enabled:
            return
        val = (f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}" if row["val_acc"] is not None else "")
        print(f"epoch {row['epoch']:>3}/{self.cfg.epochs}  train loss {row['train_loss']:.4f} "
              f"acc {row['train_acc']:.2%}{val}  lr {row['lr']:.2e}  {row['images_per_s']:,.0f} img/s  "
              f"{row['elapsed_s']:.1f} s{'  *' if improved else ''}", flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def interrupted(self, state: TrainState) -> None:
        if self.json:
            print(json.dumps({"event": "interrupted", "epoch": state.epoch, "step": state.step}), flush=True)
        if self.is_main:
            print(f"\ninterrupted at epoch {state.epoch + 1}, step {state.step}; checkpoint saved.\n"
                  f"resume with: cnnlab train --resume {self.run_dir}", flush=True)

    def finish(self, results: dict) -> None:
        run = self.run_dir
        if self.json:
            print(json.dumps({"event": "done", "run": str(run), **{k: v for k, v in results.items()
                                                                  if not isinstance(v, (list, dict))}}), flush=True)
            return
        best = (f", best epoch {results['best_epoch']} (val {results['best_val_acc']:.2%})"
                if results.get("best_val_acc") is not None else "")
        tta = f" with {results['tta']} TTA" if results.get("tta", "none") != "none" else ""
        print(f"test accuracy {results_accuracy_text(results)}{tta}, loss {results['test_loss']:.4f}{best}, "
              f"{results['train_seconds']:.1f} s of training")
        balanced = balanced_text(results)
        if balanced:
            print(balanced)
        if not self.quiet:
            print(f"run: {run}\n  curves:  {run / 'curves.png'}\n  results: {run / 'results.json'}\n"
                  f"  model:   {run / 'checkpoints' / 'best.pt'}\n"
                  f"next: cnnlab eval {run}  |  cnnlab predict {run} IMAGE  |  cnnlab report {run}")


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
