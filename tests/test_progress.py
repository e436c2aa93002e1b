"""Long stages are never silent: one timestamped line per progress message when the output is a log."""
from __future__ import annotations


def test_stage_log_writes_a_line_per_message_when_not_a_terminal(capsys):
    from onnxformer.progress import StageLog

    with StageLog() as log:
        assert log.live is False  # pytest's captured stderr is not a terminal
        log.start("quantize")
        log.update("quantize", "int8: smoothing activation outliers")
        log.done("quantize")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [line.split("]", 1)[-1].strip().split("  ")[0] for line in lines] == [
        "quantize: started", "quantize: int8: smoothing activation outliers", "quantize: done"]
