"""The package keeps its shape: a curated public API and imports that flow downstream only."""

from __future__ import annotations

import ast
from pathlib import Path

import sentinelle

PACKAGE = Path(sentinelle.__file__).parent

#: Stages in data-flow order; a stage may import only from itself and earlier stages.
STAGES = ["events", "errors", "sources", "context", "detect", "ledger", "respond", "incident", "simulate"]
TOP = {"cli", "web", "inventory", "__init__", "__main__"}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "sentinelle" or len(parts) < 2:
        return None
    return parts[1]


def test_public_api_is_explicit() -> None:
    for name in sentinelle.__all__:
        assert hasattr(sentinelle, name), name
    modules = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    public = {n for n in dir(sentinelle) if not n.startswith("_")}
    assert public - set(sentinelle.__all__) - modules <= {"annotations"}


def test_imports_flow_downstream() -> None:
    order = {name: i for i, name in enumerate(STAGES)}
    errors = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        here = rel.parts[0].removesuffix(".py")
        if here in TOP or here not in order:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                there = _stage(name)
                if there is None or there in TOP:
                    if there in TOP:
                        errors.append(f"{rel} imports {name} (a top layer)")
                    continue
                # the simulator is a source like any other but sits beside the flow: it may use
                # every stage to check its own hospital; no stage may import it.
                if here == "simulate":
                    continue
                if there == "simulate" or order.get(there, -1) > order[here]:
                    errors.append(f"{rel} imports {name} (upstream stage imports downstream)")
    assert not errors, "\n".join(errors)
