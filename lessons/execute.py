"""Run the lessons top to bottom, as CI and the documentation build do, and keep the executed copies (with outputs).

    python lessons/execute.py            # every lesson -> build/lessons/NN-....ipynb, with the time each took
    python lessons/execute.py 2 5        # lessons 2 and 5

An executed copy is reused while neither the lesson nor cnnlab's source changed: their hash is kept in the copy's
metadata. Each lesson runs in a fresh kernel in a scratch folder, so the runs and files it writes go nowhere else.
A widget's live state does not outlive its kernel: the copy keeps the static frame each lesson widget displays with
itself (a PNG), which is what the documentation site shows in its place. Needs nbclient, ipykernel and ipywidgets
(`pip install -e '.[docs]'`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

LESSONS = Path(__file__).resolve().parent
ROOT = LESSONS.parent
DEFAULT_OUT = ROOT / "build" / "lessons"
CELL_TIMEOUT_S = 600
PROBE_MARK = "cnnlab-probe:"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# Appended to a lesson to read the values it promises; removed again before the executed copy is saved.
PROBE_CELL = """
def _cnnlab_plain(v):
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_cnnlab_plain(x) for x in v]
    return v
import json as _cnnlab_json
print({mark!r} + _cnnlab_json.dumps({{name: _cnnlab_plain(globals()[name]) for name in {names!r}}}))
"""


@dataclass
class Executed:
    """An executed lesson: the saved copy, the values read from its kernel, and the seconds it took."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def lesson_paths() -> list[Path]:
    """The lesson notebooks, in order."""
    return sorted(LESSONS.glob("[0-9][0-9]-*.ipynb"))


def lesson_path(number: int) -> Path:
    for p in lesson_paths():
        if int(p.name[:2]) == number:
            return p
    raise SystemExit(f"there is no lesson {number} in {LESSONS}")


def source_key(path: Path) -> str:
    """What an executed copy depends on: the lesson's cells and every file of cnnlab's source."""
    h = hashlib.sha256(json.dumps([c["source"] for c in json.loads(path.read_text())["cells"]]).encode())
    for f in sorted((ROOT / "src" / "cnnlab").rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()


def cached(path: Path, out_dir: Path, probe: Sequence[str] = ()) -> Executed | None:
    """The executed copy of `path` in `out_dir` if it is up to date and holds the probed values."""
    copy = out_dir / path.name
    if not copy.is_file():
        return None
    meta = json.loads(copy.read_text()).get("metadata", {}).get("cnnlab", {})
    if meta.get("source_key") != source_key(path) or not set(probe) <= set(meta.get("values", {})):
        return None
    return Executed(copy, meta.get("values", {}), meta.get("seconds", 0.0))


def execute(path: Path, out_dir: Path = DEFAULT_OUT, probe: Sequence[str] = (), env: dict[str, str] | None = None,
            reuse: bool = False) -> Executed:
    """Execute a lesson in a fresh kernel; save the copy with its outputs in `out_dir`; read the `probe` variables."""
    import nbformat
    from nbclient import NotebookClient

    if reuse and (hit := cached(path, out_dir, probe)) is not None:
        return hit
    nb = nbformat.read(path, as_version=4)
    if probe:
        nb.cells.append(nbformat.v4.new_code_cell(PROBE_CELL.format(mark=PROBE_MARK, names=list(probe))))
    kernel_env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel draws figures inline
    kernel_env.update(env or {})
    # The kernel runs in a scratch folder: it imports this checkout's cnnlab, and relative paths stay valid.
    given = [str(Path(p).resolve()) for p in kernel_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    kernel_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *given])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"lesson-{path.stem[:2]}-") as work:
        client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": work}})
        client.execute(env=kernel_env)
    seconds = time.perf_counter() - t0
    values = read_probe(nb.cells.pop()) if probe else {}
    static_widgets(nb)
    nb.metadata["cnnlab"] = {"source_key": source_key(path), "seconds": round(seconds, 1), "values": values}
    out_dir.mkdir(parents=True, exist_ok=True)
    copy = out_dir / path.name
    tmp = copy.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, copy)  # a half-written copy is never taken for a finished one
    return Executed(copy, values, seconds)


def static_widgets(nb: Any) -> None:
    """Widgets as their static frames: each widget view is dropped from the outputs (its PNG and text stay), and so is
    the widget state (it would need the widget scripts from a CDN to render, and the site works offline)."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            out.get("data", {}).pop(WIDGET_VIEW, None)


def read_probe(cell: Any) -> dict[str, Any]:
    for out in cell.get("outputs", []):
        for line in out.get("text", "").splitlines():
            if line.startswith(PROBE_MARK):
                return json.loads(line[len(PROBE_MARK):])
    raise RuntimeError(f"the probe cell printed nothing: {cell.get('outputs')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("numbers", nargs="*", type=int, help="lessons to run (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for the copies (default: {DEFAULT_OUT})")
    parser.add_argument("--reuse", action="store_true", help="skip lessons whose executed copy is up to date")
    args = parser.parse_args(argv)
    paths = [lesson_path(n) for n in args.numbers] if args.numbers else lesson_paths()
    total = 0.0
    for p in paths:
        done = execute(p, args.out, reuse=args.reuse)
        total += done.seconds
        print(f"{p.name}: {done.seconds:.1f} s -> {done.path}")
    print(f"{len(paths)} lesson(s), {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
