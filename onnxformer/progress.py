"""Console output for the CLI (rich): progress lines and summary tables."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def summarize_export(result: Any) -> None:
    m = result.manifest
    table = Table(title=f"{m.name} → {result.out}")
    table.add_column("output")
    table.add_column("max |Δ| vs PyTorch", justify="right")
    for name, diff in m.validation["max_abs_diff"].items():
        table.add_row(name, f"{diff:.2e}")
    console.print(table)
    console.print(f"exported {m.architecture.model_type} ({m.task}, opset {m.opset}) in {result.seconds:.1f}s")
