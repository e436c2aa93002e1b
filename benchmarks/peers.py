"""The benchmark peers: every configuration that is not one of the artifact's own variants, one entry each.

Kind ``pytorch``: the baselines speedups are measured against, PyTorch eager fp32 and the fast setting a
user tries first (bf16 autocast on CPU, AMX/AVX-512-BF16 where present; fp16 autocast on CUDA) and, on CUDA,
PyTorch's best (fp16 weights, SDPA attention, torch.compile); off with
``--no-baselines``. Kind ``peer``: other ONNX Runtime stacks, today optimum's ORTModel export of the same
checkpoint (fp32, and its dynamic int8); off with ``--no-peers``. Adding a peer is one ``Peer`` in ``PEERS``;
how PyTorch and optimum run is in baselines.py.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from onnxformer.benchmarks.baselines import optimum, optimum_missing, optimum_prepare, pytorch, pytorch_missing
from onnxformer.benchmarks.runners import ArtifactContext, Candidate, Runner

PYTORCH, PEER = "pytorch", "peer"  # Candidate.kind of the baselines and of the other stacks


def _nothing(ctx: ArtifactContext, workdir: Path) -> None:
    return None


@dataclass(frozen=True)
class Peer:
    name: str  # the label before "@device", e.g. "optimum-int8" → "optimum-int8@cpu"
    kind: str  # PYTORCH | PEER: which switch turns it off, and what the summary compares it as
    precision: str
    devices: tuple[str, ...]  # where it can run, as PyTorch names them: "cpu", "cuda"
    load: Callable[[ArtifactContext, Path, str], Runner]  # (artifact, work directory, device) → a loaded runner
    missing: Callable[[ArtifactContext], str | None]  # why it cannot run here, with what to install; None: it can
    prepare: Callable[[ArtifactContext, Path], None] = _nothing  # untimed, unmeasured setup (e.g. its own export)


PEERS: tuple[Peer, ...] = (
    Peer("pytorch-fp32", PYTORCH, "fp32", ("cpu", "cuda"), pytorch(None), pytorch_missing),
    Peer("pytorch-bf16", PYTORCH, "bf16", ("cpu",), pytorch("bf16"), pytorch_missing),
    Peer("pytorch-fp16", PYTORCH, "fp16", ("cuda",), pytorch("fp16"), pytorch_missing),
    # The GPU check's stronger PyTorch peers (issue 18): fp16 weights, then fp16 + SDPA (flash/memory-efficient
    # attention kernels), then that under torch.compile.
    Peer("pytorch-fp16-half", PYTORCH, "fp16", ("cuda",), pytorch(None, half=True, attn="eager"), pytorch_missing),
    Peer("pytorch-fp16-sdpa", PYTORCH, "fp16", ("cuda",), pytorch(None, half=True, attn="sdpa"), pytorch_missing),
    Peer("pytorch-fp16-compile", PYTORCH, "fp16", ("cuda",), pytorch(None, half=True, attn="sdpa", compiled=True),
         pytorch_missing),
    Peer("optimum-fp32", PEER, "fp32", ("cpu",), optimum("fp32"), optimum_missing, optimum_prepare("fp32")),
    Peer("optimum-int8", PEER, "int8", ("cpu",), optimum("int8"), optimum_missing, optimum_prepare("int8")),
)


def peer_candidates(ctx: ArtifactContext, workdir: Path, devices: Mapping[str, Sequence[str]]) -> list[Candidate]:
    """Every registered peer on each of ``devices[peer.kind]`` it can run on, in registry order; one that
    cannot run here is a Candidate with the reason instead of a loader."""
    out = []
    for peer in PEERS:
        for device in (d for d in devices.get(peer.kind, ()) if d in peer.devices):
            label, where = f"{peer.name}@{device}", "gpu" if device == "cuda" else "cpu"
            reason = peer.missing(ctx)
            if reason:
                out.append(Candidate(label, peer.kind, where, peer.precision, reason=reason))
            else:
                out.append(Candidate(label, peer.kind, where, peer.precision,
                                     load=lambda p=peer, d=device: p.load(ctx, workdir, d),
                                     prepare=lambda p=peer: p.prepare(ctx, workdir)))
    return out


@contextlib.contextmanager
def work_directory(reuse: str | Path | None = None) -> Iterator[Path]:
    """Where peers keep what they build during one run (optimum's export); ``reuse``: a parent process's
    directory (isolated workers), left in place. A directory of our own is removed afterwards."""
    if reuse is not None:
        yield Path(reuse)
        return
    path = Path(tempfile.mkdtemp(prefix="onnxformer-bench-peers-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
