"""Imports only point down: a layer imports the layers below it, never one above, and the
services and the gateway meet only through the protos, never each other's code. Read from
the source (ast), so a new upward import fails here before anyone trips over the cycle."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Lowest first. Each name is a package or module of the installed `toolwire`.
LAYERS = [
    {"toolwire.vocabulary", "toolwire.grpc_gen"},
    {"toolwire.errors", "toolwire.wire_enums", "toolwire.plumbing", "toolwire.runtime"},
    {"toolwire.formats"},
    {"toolwire.constraints"},
    {"toolwire.request"},
    {
        "toolwire.services.decode",
        "toolwire.services.template",
        "toolwire.services.extractor",
        "toolwire.gateway",
    },
    {"toolwire.stack"},
]
# Side by side in a layer, and still apart: they talk over gRPC.
APART = LAYERS[5]
# Packages that hold only a docstring (and the version).
ROOTS = {"toolwire", "toolwire.services"}


def _unit(module: str) -> str:
    """The layer member a dotted module belongs to."""
    for layer in LAYERS:
        for unit in layer:
            if module == unit or module.startswith(unit + "."):
                return unit
    return module


def _rank(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def _module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in ("services", "gateway"):
        parts.insert(0, "toolwire")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path, module: str) -> set[str]:
    found = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {m for m in found if m.startswith("toolwire")}


def _sources() -> list[pathlib.Path]:
    files = []
    for folder in ("toolwire", "services", "gateway"):
        files += [p for p in (ROOT / folder).rglob("*.py") if "grpc_gen" not in p.parts]
    return files


def test_every_module_is_in_a_layer():
    units = {_unit(_module_of(p)) for p in _sources()}
    known = set().union(*LAYERS)
    assert units <= known | ROOTS, sorted(units - known)


def _upward(module: str, targets: set[str]) -> list[str]:
    unit = _unit(module)
    if unit in ROOTS:
        return []
    wrong = []
    for target in sorted(targets):
        other = _unit(target)
        if other == unit or other in ROOTS:
            continue
        if _rank(other) > _rank(unit) or (unit in APART and other in APART):
            wrong.append(target)
    return wrong


def test_imports_point_down():
    upward = []
    for path in _sources():
        module = _module_of(path)
        for target in _upward(module, _imports(path, module)):
            upward.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import():
    """The check itself can fail: the formats importing the CLI, a service importing the
    gateway's code."""
    assert _upward("toolwire.formats.hermes", {"toolwire.stack.cli"}) == ["toolwire.stack.cli"]
    assert _upward("toolwire.services.decode.server", {"toolwire.gateway.wire"})
    assert not _upward("toolwire.stack.cli", {"toolwire.formats", "toolwire.services.decode"})
