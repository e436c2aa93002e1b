"""The CPU a latency was measured on: model name and the instruction-set flags that decide ONNX Runtime's kernels.

One home for reading /proc/cpuinfo: the quantize stage records it with each variant's latency, the variant
chooser compares it with the CPU it runs on, int8 decides ``reduce_range`` from it and the benchmarks print it.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# The flags that change which int8/fp32 kernels MLAS picks (AVX2 vs AVX-512, 8-bit dot products, AMX tiles).
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
# 8-bit dot-product instructions (x86 VNNI/AMX, ARM dot-product / i8mm): int8 products cannot saturate.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


@dataclass(frozen=True)
class CpuInfo:
    """A CPU as far as kernel choice goes; two CPUs with the same ``key`` run the same kernels."""

    model: str
    flags: tuple[str, ...]  # the subset of FLAGS (and ARM dot-product flags) the CPU has, sorted

    @property
    def key(self) -> str:
        return f"{self.model} [{' '.join(self.flags) or 'no avx2'}]"

    @property
    def vnni(self) -> bool:
        return any(f in self.flags for f in VNNI_FLAGS)

    def to_json(self) -> dict[str, object]:
        return {"model": self.model, "flags": list(self.flags)}

    @classmethod
    def from_json(cls, value: object) -> CpuInfo | None:
        if not isinstance(value, dict) or not isinstance(value.get("model"), str):
            return None
        flags = value.get("flags")
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            return None
        return cls(value["model"], tuple(sorted(flags)))


def read_cpuinfo(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuInfo:
    """The CPU described by ``cpuinfo`` (unreadable: the platform's name and no flags, i.e. the worst case)."""
    model, flags = "", set[str]()
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    known = set(FLAGS) | set(VNNI_FLAGS)
    return CpuInfo(model or platform.processor() or platform.machine() or "unknown", tuple(sorted(flags & known)))


@lru_cache(maxsize=1)
def this_cpu() -> CpuInfo:
    """The CPU this process runs on (read once)."""
    return read_cpuinfo()
