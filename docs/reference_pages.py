"""The reference parts of the documentation site, made from the code so they cannot drift from it: the command
line (from the parsers), the training settings (from TrainConfig's fields), the REST API (from the app's OpenAPI
schema), the error catalogue (every CnnlabError raised in src/), the recipes (from their registry), and the README's
facts about running the tests. docs/hooks.py puts each where a page says `<!-- generated: NAME -->`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
HELP_COLUMNS = "100"  # argparse wraps help text to the terminal; the reference is generated at one fixed width


def _checkout_first() -> None:
    """The checkout's cnnlab, even where another one is installed."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))


def cell(value: Any) -> str:
    """Text for a Markdown table cell: no line breaks, pipes escaped, and a `<` outside code spans shown as itself
    (not read as the start of an HTML tag)."""
    parts = str(value).replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- the command line


@contextlib.contextmanager
def help_width() -> Iterator[None]:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:  # argparse keeps its subcommands here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def command_help() -> dict[str, str]:
    """Each command's one-line help, in the order `cnnlab --help` lists them."""
    _checkout_first()
    from cnnlab.cli.main import build_parser

    parser = build_parser()
    helps = {a.dest: a.help for action in parser._actions if isinstance(action, argparse._SubParsersAction)
             for a in action._choices_actions}
    return {name: helps.get(name, "") for name, _ in subcommands(parser)}


def cli_commands() -> str:
    """The commands as a table: what each does, linked to its full help below."""
    return table(["command", "what it does"], [[f"[`cnnlab {name}`](#cnnlab-{name})", text]
                                              for name, text in command_help().items()])


def cli_reference() -> str:
    """Every command's `--help`, generated from the parsers the `cnnlab` command itself builds."""
    _checkout_first()
    from cnnlab.cli.main import build_parser

    with help_width():
        parser = build_parser()
        parts = ["```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in subcommands(parser):
            parts += [f"## cnnlab {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
            for action_name, action in subcommands(sub):
                parts += [f"### cnnlab {name} {action_name}", "", "```text", action.format_help().rstrip(), "```",
                          ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- the training settings


def config_sections() -> list[tuple[str, list[str]]]:
    """TrainConfig's fields under the `# ---- section` comments of its source, in order."""
    source = (SRC / "cnnlab" / "training" / "config.py").read_text(encoding="utf-8")
    body = source[source.index("class TrainConfig"):source.index("def to_dict")]
    sections: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        heading = re.match(r"\s+# ---- (.+)", line)
        field = re.match(r"\s{4}(\w+): .+= opt\(", line)
        if heading:
            sections.append((heading.group(1), []))
        elif field and sections:
            sections[-1][1].append(field.group(1))
    return sections


def config_reference() -> str:
    """Every TrainConfig field: its flag, default, valid values, whether a resume may change it, and its help."""
    _checkout_first()
    from cnnlab.training.config import FIELDS, _base_type

    parts = []
    listed = [name for _, names in config_sections() for name in names]
    missing = sorted(set(FIELDS) - set(listed))
    sections = config_sections() + ([("other", missing)] if missing else [])
    for title, names in sections:
        rows = []
        for name in names:
            f, meta = FIELDS[name], FIELDS[name].metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            valid = (", ".join(map(str, meta["choices"])) if meta["choices"] else
                     " or ".join(filter(None, [str(meta["valid"]) if meta["valid"] else "", *meta["words"]])))
            flag = f"`--{name.replace('_', '-')}`" + (f" / `--no-{name.replace('_', '-')}`"
                                                        if _base_type(name) is bool else "")
            rows.append([f"`{name}`, {flag}", f"`{json.dumps(default)}`", valid or "-",
                         "yes" if meta["resume"] else "", meta["help"]])
        parts += [f"## {title[0].upper()}{title[1:]}", "",
                  table(["field, flag", "default", "valid values", "resume may change", "what it does"], rows), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- the REST API


class _AnyModel:
    """What the REST API's schema reads of a served model, for a model in general: the schema the site shows has
    no model's own layers and classes (a served model's /openapi.json lists them)."""

    classes: tuple[str, ...] = ()
    input_size = (3, 224, 224)
    pipeline = None
    dataset = None


def rest_schema() -> dict[str, Any]:
    _checkout_first()
    from cnnlab.apps.serve import create_app
    from cnnlab.apps.serve.state import ServedModel

    return create_app(model=ServedModel(_AnyModel(), "any model")).openapi()


def _type_text(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " or ".join(f"`{v}`" for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_type_text(s) for s in schema[key] if s.get("type") != "null")
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_text(schema.get('items', {}))}"
    bounds = [f">= {schema['minimum']}" if "minimum" in schema else "",
              f"<= {schema['maximum']}" if "maximum" in schema else "",
              f"format {schema['format']}" if "format" in schema else "",
              f"matching `{schema['pattern']}`" if "pattern" in schema and len(schema["pattern"]) < 80 else
              ("matching a pattern (see /openapi.json)" if "pattern" in schema else "")]
    return " ".join([kind, *filter(None, bounds)])


def rest_reference() -> str:
    """Every operation: its parameters, request bodies and replies, from the OpenAPI schema the server serves."""
    schema = rest_schema()
    parts = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            parts += [f"### {method.upper()} {path}", "", op.get("summary", ""), ""]
            params = op.get("parameters", [])
            if params:
                rows = [[f"`{p['name']}`", p["in"], _type_text(p.get("schema", {})),
                         f"`{p['schema']['default']}`" if "default" in p.get("schema", {}) else
                         ("required" if p.get("required") else "-"),
                         p.get("description") or p.get("schema", {}).get("description", "")] for p in params]
                parts += [table(["parameter", "in", "type", "default", "what it is"], rows), ""]
            body = op.get("requestBody")
            if body:
                parts += ["Request body" + (f": {cell(body['description'])}" if body.get("description") else ""), ""]
                rows = []
                for media, content in body.get("content", {}).items():
                    fields = content.get("schema", {}).get("properties")
                    if not fields:
                        rows.append([f"`{media}`", "the file itself", _type_text(content.get("schema", {})), ""])
                    required = content.get("schema", {}).get("required", [])
                    for name, field in (fields or {}).items():
                        rows.append([f"`{media}`", f"`{name}`" + (" (required)" if name in required else ""),
                                     _type_text(field), field.get("description", "")])
                parts += [table(["media type", "field", "type", "what it is"], rows), ""]
            replies = [[f"`{code}`", reply.get("description", "")] for code, reply in op.get("responses", {}).items()]
            parts += [table(["status", "when"], replies), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- the error catalogue


@dataclass(frozen=True)
class Raised:
    """One `raise SomeCnnlabError(...)` in src/: where, which class, and its message with placeholders."""

    module: str
    function: str
    line: int
    error: str
    message: str


AREAS = [  # (area, module prefixes), the first that matches wins
    ("Training settings", ("cnnlab.training.config", "cnnlab.training.auto", "cnnlab.training.recipes",
                           "cnnlab.training.budget", "cnnlab.training.prepare", "cnnlab.training.plan",
                           "cnnlab.training.lr_find", "cnnlab.training.schedule")),
    ("Runs, checkpoints and resuming", ("cnnlab.training.run", "cnnlab.training.rundir", "cnnlab.training.checkpoint",
                                        "cnnlab.training.schema", "cnnlab.training.record", "cnnlab.training.api",
                                        "cnnlab.training.runinfo", "cnnlab.training.compare",
                                        "cnnlab.training.state")),
    ("Several processes", ("cnnlab.training.distributed", "cnnlab.training.launch", "cnnlab.training.process")),
    ("Training and evaluation", ("cnnlab.training",)),
    ("Datasets, folders and images", ("cnnlab.data",)),
    ("Models", ("cnnlab.models",)),
    ("Convolution math and kernels", ("cnnlab.conv",)),
    ("Looking inside a model", ("cnnlab.inspect", "cnnlab.apps.explain", "cnnlab.apps.report")),
    ("Plots", ("cnnlab.viz",)),
    ("Export", ("cnnlab.apps.export",)),
    ("Web app and REST API", ("cnnlab.apps.serve",)),
    ("Command line", ("cnnlab.cli",)),
    ("Everywhere", ("cnnlab",)),
]


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted((SRC / "cnnlab").rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        yield name, ast.parse(path.read_text(encoding="utf-8"), str(path))


def error_classes() -> set[str]:
    """CnnlabError and every class derived from it in src/ (by name)."""
    found = {"CnnlabError"}
    trees = [tree for _, tree in _modules()]
    while True:
        more = {node.name for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                and any(isinstance(b, ast.Name) and b.id in found for b in node.bases)} - found
        if not more:
            return found
        found |= more


def message_text(node: ast.expr) -> str:
    """A message as written, with ‹what is filled in› where the code puts a value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else f"‹{ast.unparse(v.value)}›" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return message_text(node.left) + message_text(node.right)
    return f"‹{ast.unparse(node)}›"


def raised_errors() -> list[Raised]:
    """Every `raise X(...)` in src/ where X is CnnlabError or derived from it, with the function it is in."""
    classes = error_classes()
    out: list[Raised] = []

    class Finder(ast.NodeVisitor):
        def __init__(self, module: str) -> None:
            self.module, self.stack = module, ["(module)"]

        def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
            self.stack.append(node.name)
            self.generic_visit(node)
            self.stack.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Raise(self, node: ast.Raise) -> None:
            call = node.exc
            if isinstance(call, ast.Call):
                name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
                if name in classes:
                    text = message_text(call.args[0]) if call.args else "(no message)"
                    out.append(Raised(self.module, self.stack[-1], node.lineno, name, text))
            self.generic_visit(node)

    for module, tree in _modules():
        Finder(module).visit(tree)
    return out


def shown_message(message: str) -> str:
    """A message as Markdown shows it literally: no code spans, links or emphasis made of its characters (a `<` is
    `cell`'s to show)."""
    text = message.replace("`", "'").replace("\\", "\\\\")
    for char in "*_[]":
        text = text.replace(char, "\\" + char)
    return text


def area_of(module: str) -> str:
    return next(area for area, prefixes in AREAS if any(module == p or module.startswith(p + ".") for p in prefixes))


def error_catalogue() -> str:
    """Every error message a user can meet, grouped by what they were doing, each with where it is raised."""
    _checkout_first()
    from cnnlab.apps.serve import errors as serve_errors

    statuses = {name: cls.status for name, cls in vars(serve_errors).items() if isinstance(cls, type)
                and hasattr(cls, "status")}
    by_area: dict[str, list[Raised]] = {}
    for r in raised_errors():
        by_area.setdefault(area_of(r.module), []).append(r)
    parts = []
    for area, _ in AREAS:
        if area not in by_area:
            continue
        rows = [[shown_message(r.message), f"`{r.module.removeprefix('cnnlab.')}.{r.function}`"
                 + (f" (HTTP {statuses[r.error]})" if r.error in statuses else "")] for r in by_area[area]]
        parts += [f"### {area}", "", table(["message (what went wrong, then what to do)", "raised in"], rows), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- models and datasets


def models_table() -> str:
    """The zoo, from its registry (what `cnnlab models --source` prints)."""
    _checkout_first()
    from cnnlab.models import count_parameters, get_model, get_model_info, list_models

    rows = []
    for name in list_models():
        info = get_model_info(name)
        params = info.params if info.params is not None else count_parameters(get_model(name))
        rows.append([f"`{name}`", f"{params:,}", "x".join(map(str, info.input_size)), info.num_classes,
                     info.description, info.source])
    return table(["model", "parameters", "input", "classes", "what it is", "from"], rows)


def datasets_table() -> str:
    """The built-in datasets, from their registry."""
    _checkout_first()
    from cnnlab.data import get_dataset_info
    from cnnlab.data.registry import list_datasets

    rows = []
    for name in list_datasets():
        info = get_dataset_info(name)
        size = "x".join(map(str, (info.channels, *info.size))) if info.size else "varies"
        counts = ", ".join(f"{n:,} {split}" for split, n in info.counts.items())
        rows.append([f"`{name}`", info.num_classes, size, counts, "yes" if info.flip_ok else "no",
                     info.description])
    return table(["dataset", "classes", "images", "split sizes", "a mirror keeps the label", "what it is"], rows)


# ---------------------------------------------------------------- recipes, the README's test facts


def recipes_table() -> str:
    """What each recipe is (from the registry) and its settings as flags."""
    _checkout_first()
    from cnnlab.training.launch import settings_to_argv
    from cnnlab.training.recipes import list_recipes

    rows = [[f"`{r.name}`", r.description, "`" + " ".join(settings_to_argv(r.settings)) + "`"]
            for r in list_recipes()]
    return table(["recipe", "what it is", "as flags"], rows)


def readme_section(heading: str) -> str:
    """A section of the README, from its heading to the next heading of the same level or above."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    level = heading.split(" ")[0]
    start = readme.index(heading + "\n")
    ends = [m.start() for m in re.finditer(r"^#{1,%d} " % len(level), readme[start + len(heading):], re.M)]
    body = readme[start + len(heading):start + len(heading) + ends[0]] if ends else readme[start + len(heading):]
    return body.strip()


GENERATED: dict[str, Callable[[], str]] = {
    "cli-commands": cli_commands,
    "cli-reference": cli_reference,
    "config": config_reference,
    "rest": rest_reference,
    "errors": error_catalogue,
    "recipes": recipes_table,
    "models": models_table,
    "datasets": datasets_table,
    "readme-tests": lambda: readme_section("## Running the tests"),
}
