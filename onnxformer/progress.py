"""Console output for the CLI (rich): progress lines and summary tables."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=True, log_path=False)  # no "progress.py:43" column on every line


class StageLog:
    """Progress of long stages: a live spinner line on a terminal; in a log (not a terminal) one timestamped
    line per message, so a 5-minute quantization is never silent in CI or under nohup."""

    def __init__(self) -> None:
        self.live = console.is_terminal
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> StageLog:
        if self.live:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start(self, stage: str) -> None:
        if self.live:
            self._task = self._bar.add_task(f"[bold]{stage}[/]", total=None)
        else:
            console.log(f"{stage}: started")

    def update(self, stage: str, message: str) -> None:
        if self.live:
            self._bar.update(self._task, description=f"[bold]{stage}[/]: {message}")
        else:
            console.log(f"{stage}: {message}")

    def done(self, stage: str) -> None:
        if self.live:
            self._bar.update(self._task, description=f"[green]{stage} done[/]", completed=1, total=1)
        else:
            console.log(f"{stage}: done")


def summarize_export(result: Any) -> None:
    m = result.manifest
    table = Table(title=f"{m.name} → {result.out}")
    table.add_column("output")
    table.add_column("max |Δ| vs PyTorch", justify="right")
    for name, diff in m.validation["max_abs_diff"].items():
        table.add_row(name, f"{diff:.2e}")
    console.print(table)
    console.print(f"exported {m.architecture.model_type} ({m.task}, opset {m.opset}) in {result.seconds:.1f}s")
