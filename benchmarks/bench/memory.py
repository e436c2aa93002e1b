"""Peak resident memory per configuration.

Method (Linux): write "5" to /proc/self/clear_refs, which resets the kernel's peak-RSS counter
(VmHWM), run the configuration, then read VmHWM from /proc/self/status. The kernel tracks the
peak exactly, so no sampling thread can miss a short spike. Elsewhere we fall back to
resource.getrusage's ru_maxrss, which cannot be reset: it is the process peak so far.
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise KeyError(field)


def resettable() -> bool:
    """True when the kernel lets us reset the peak-RSS counter (Linux ≥ 4.0)."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


RESETTABLE = sys.platform.startswith("linux") and resettable()
METHOD = (
    "in-process, Linux kernel peak RSS (VmHWM, reset through /proc/self/clear_refs): peak RSS over base = "
    "RSS growth from loading the configuration (measured right before/after its load) + the peak above the "
    "steady RSS during one call at that shape (VmHWM reset just before the call)"
    if RESETTABLE
    else "resource.getrusage ru_maxrss (process peak so far; not resettable on this platform)"
)


def reset_peak() -> None:
    if RESETTABLE:
        _CLEAR_REFS.write_text("5")


def current_rss_mb() -> float:
    if RESETTABLE:
        return _status_kb("VmRSS") / 1024.0
    return peak_rss_mb()


def peak_rss_mb() -> float:
    if RESETTABLE:
        return _status_kb("VmHWM") / 1024.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
