"""The structure docs/ARCHITECTURE.md describes, checked: import layers point one way, no import cycles, no private
module used across packages, no oversized file or function; `import cnnlab` and `cnnlab --help` stay light; the
library leaves its host process alone."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "cnnlab"

# Bottom to top: a module may import from its own layer's packages (without cycles) and from layers below.
LAYERS = [
    {"cnnlab", "cnnlab.errors", "cnnlab.files", "cnnlab.text", "cnnlab.lazy"},
    {"cnnlab.models", "cnnlab.data", "cnnlab.conv"},
    {"cnnlab.inspect", "cnnlab.viz"},
    {"cnnlab.training"},
    {"cnnlab.apps"},
    {"cnnlab.cli", "cnnlab.__main__"},
]
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The cnnlab modules a file imports, anywhere in it (inside functions too): `from a.b import c` is a.b.c when
    that is a module, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        found |= {n for n in names if n == "cnnlab" or n.startswith("cnnlab.")}
    return found


def layer_of(module: str) -> int:
    for i, packages in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in packages - {"cnnlab"}) or module == "cnnlab":
            return i
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS and to docs/ARCHITECTURE.md")


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: {i for i in imports(p, known) if i in known and i != m} for m, p in mods.items()}


def test_imports_point_down_the_layers() -> None:
    wrong = [f"{m} (layer {layer_of(m)}) imports {i} (layer {layer_of(i)})"
             for m, targets in graph().items() for i in targets if layer_of(i) > layer_of(m)]
    assert not wrong, "\n".join(wrong)


def test_viz_and_inspect_do_not_import_each_other() -> None:
    g = graph()
    crossing = [(m, i) for m, targets in g.items() for i in targets
                if {m.split(".")[:2][-1], i.split(".")[:2][-1]} == {"viz", "inspect"}]
    assert not crossing, crossing


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_module_is_imported_from_another_package() -> None:
    mods, offenders = modules(), []
    for m, targets in graph().items():
        package = m if mods[m].name == "__init__.py" else m.rsplit(".", 1)[0]
        for i in targets:
            if any(part.startswith("_") for part in i.split(".")) and i.rsplit(".", 1)[0] != package:
                offenders.append(f"{m} imports {i}")
    assert not offenders, offenders


def test_files_and_functions_stay_short() -> None:
    long_files, long_functions = [], []
    for m, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{path.relative_to(SRC)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{m}.{node.name}: {n} lines")
    assert not long_files and not long_functions, long_files + long_functions


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_cnnlab_and_the_help_import_no_torch() -> None:
    out = _fresh("""
        import sys
        import cnnlab
        light = "torch" not in sys.modules
        from cnnlab.cli.main import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        print(light, "torch" not in sys.modules, callable(cnnlab.train), "torch" in sys.modules)
    """)
    assert out.splitlines()[-1] == "True True True True"  # the last: using cnnlab.train does import torch


def test_listing_models_does_not_import_the_training_stack() -> None:
    out = _fresh("""
        import sys
        from cnnlab.cli.main import main
        main(["models"])
        heavy = ("torch._dynamo", "torchvision", "cnnlab.training.api", "matplotlib")
        print(sorted(m for m in heavy if m in sys.modules))
    """)
    assert out.splitlines()[-1] == "[]"


def test_the_public_names_are_functions_not_modules() -> None:
    """`cnnlab.train` is the function even with the modules of the same names around (no package shadowing)."""
    names = ["train", "resume", "load_run", "TrainConfig", "get_model", "list_models", "register_model", "summary",
             "explain"]
    out = _fresh(f"""
        import types, cnnlab
        import cnnlab.training.config, cnnlab.apps.explain, cnnlab.inspect.summary  # modules of the same names around
        print([n for n in {names!r} if isinstance(getattr(cnnlab, n), types.ModuleType) or not callable(getattr(cnnlab, n))])
    """)
    assert out == "[]"


@pytest.mark.slow
def test_training_in_a_host_process_leaves_it_alone(tmp_path: Path) -> None:
    """cnnlab.train() in someone's notebook: no child process, the collector on, their thread count kept."""
    out = _fresh(f"""
        import gc, multiprocessing, os, torch
        import cnnlab
        torch.set_num_threads(1)
        seen = set()
        class Watch(cnnlab.Callback):
            def on_step_end(self, step, loss):
                seen.add((gc.isenabled(), torch.get_num_threads(), len(multiprocessing.active_children())))
        cnnlab.train(recipe="digits", epochs=2, subset=300, out={str(tmp_path / "run")!r}, quiet=True,
                     callbacks=[Watch()])
        children = [p for p in os.listdir("/proc") if p.isdigit() and
                    open(f"/proc/{{p}}/stat").read().split()[3] == str(os.getpid())]
        print(sorted(seen), gc.isenabled(), torch.get_num_threads(), children)
    """)
    assert out.splitlines()[-1] == "[(True, 1, 0)] True 1 []"


def test_no_process_tuning_outside_the_command() -> None:
    """glibc malloc settings, the garbage collector and process forks are the `cnnlab` command's business."""
    tuning = ("mallopt", "gc.disable", "gc.freeze", "gc.set_threshold", '"fork"', "os.fork")
    found = [f"{p.relative_to(SRC)}: {t}" for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts
             for t in tuning if t in p.read_text()]
    assert not found, found
