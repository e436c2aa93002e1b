"""Which extra of ``pip install "onnxformer[...]"`` brings a module, read from the installed package's own metadata
(``[project.optional-dependencies]`` of pyproject.toml, the one truth), so that a command whose stack is not
installed ends in one line that names the extra, not a ModuleNotFoundError traceback.
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "onnxformer"
# Distributions whose import name is not their normalised distribution name.
IMPORT_NAMES = {"onnxruntime-gpu": "onnxruntime", "tensorrt-cu12": "tensorrt"}
# Modules our code imports that pyproject does not name: the listed distribution that brings each of them
# (protobuf's `google` and `huggingface_hub` are not here: onnxruntime and tokenizers bring them to every install).
BROUGHT_BY = {"pydantic": "fastapi", "starlette": "fastapi", "grpc": "tritonclient"}  # grpcio: tritonclient[grpc]
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _import_name(distribution: str) -> str:
    dist = distribution.lower().replace("_", "-")
    return IMPORT_NAMES.get(dist, dist.replace("-", "_").replace(".", "_"))


def _requirements() -> list[str]:
    """This package's requirement lines: the installed metadata, or pyproject.toml in a source checkout."""
    try:
        return metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        pass
    try:
        import tomllib
    except ImportError:  # Python 3.10 outside an install: no table, the caller keeps the plain error
        return []
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.is_file():
        return []
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project.get("dependencies", []))
    for extra, reqs in project.get("optional-dependencies", {}).items():
        lines += [f'{r}; extra == "{extra}"' for r in reqs]
    return lines


@lru_cache(maxsize=1)
def extras_table() -> dict[str, tuple[str, ...]]:
    """Import name → the extras that install it, in pyproject's order (an empty tuple: a base dependency)."""
    table: dict[str, list[str]] = {}
    for line in _requirements():
        name, extra = _NAME.match(line), _EXTRA.search(line)
        if name is None:
            continue
        extras = table.setdefault(_import_name(name.group(1)), [])
        if extra and extra.group(1) not in extras:
            extras.append(extra.group(1))
    for module, dist in BROUGHT_BY.items():
        table.setdefault(module, list(table.get(_import_name(dist), [])))
    return {module: tuple(extras) for module, extras in table.items()}


def extras_for(module: str) -> tuple[str, ...] | None:
    """The extras that install ``module`` (a dotted name is looked up by its top level); None when no extra does.
    ``dev`` (the test tools) is named only when nothing else brings the module."""
    extras = extras_table().get(module.split(".")[0])
    if not extras:
        return None
    return tuple(e for e in extras if e != "dev") or extras


def install_hint(module: str) -> str | None:
    """``pip install "onnxformer[extra]"`` for ``module`` (alternatives joined by "or"); None when no extra has it."""
    extras = extras_for(module)
    return None if extras is None else " or ".join(f"pip install \"{DISTRIBUTION}[{e}]\"" for e in extras)


def missing_module_message(error: ModuleNotFoundError, command: str | None = None) -> str | None:
    """One line for a missing optional dependency: what needs it and the extra to install; None when ``error`` is
    not about a module an extra installs (a bug, or a module nobody declared: the caller re-raises)."""
    module = error.name or ""
    install = install_hint(module)
    if install is None:
        return None
    what = f"`onnxformer {command}`" if command else "this"
    return f"{what} needs {module.split('.')[0]}, which is not installed: {install}"
