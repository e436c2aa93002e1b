"""The benchmark peers: every configuration that is not one of the artifact's own variants, one entry each.

Kind ``pytorch``: the baselines speedups are measured against, PyTorch eager fp32 and the fast setting a
user tries first (bf16 autocast on CPU, AMX/AVX-512-BF16 where present; fp16 autocast on CUDA) and, on CUDA,
PyTorch's best (fp16 weights, SDPA attention, torch.compile); off with ``--no-baselines``. Kind ``peer``: the
other stacks, opt-in with ``--peers`` (select_peers: each builds a virtual environment on first use): optimum's
ORTModel export of the same checkpoint (fp32, and its dynamic int8), sentence-transformers' quantized ONNX
backend, and OpenVINO on our fp32 ONNX (fp32, and NNCF int8).

A peer runs either in this process (``load``: a Runner; the PyTorch baselines, baselines.py) or, when its stack
cannot share the project's environment, as a ``script`` (benchmarks/peer_*.py) in its own ``environment``
(peer_env.py), always in its own process (isolation.run_in_environment). Adding a peer is one ``Peer`` in ``PEERS``.
"""
from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from onnxformer.benchmarks.availability import openvino_missing, optimum_missing, pytorch, pytorch_missing, st_missing
from onnxformer.benchmarks.peer_env import PeerEnv, PeerEnvError, ensure
from onnxformer.benchmarks.runners import ArtifactContext, Candidate, Runner
from onnxformer.errors import OnnxformerError

PYTORCH, PEER = "pytorch", "peer"  # Candidate.kind of the baselines and of the other stacks


def _nothing(ctx: ArtifactContext, workdir: Path) -> None:
    return None


@dataclass(frozen=True)
class Peer:
    name: str  # the label before "@device", e.g. "optimum-int8" → "optimum-int8@cpu"
    kind: str  # PYTORCH | PEER: which switch turns it off, and what the summary compares it as
    precision: str
    devices: tuple[str, ...]  # where it can run, as PyTorch names them: "cpu", "cuda"
    load: Callable[[ArtifactContext, Path, str], Runner] | None  # (artifact, work directory, device) → a runner
    missing: Callable[[ArtifactContext], str | None]  # why it cannot run here, with what to install; None: it can
    prepare: Callable[[ArtifactContext, Path], None] = _nothing  # untimed, unmeasured setup (in-process peers)
    script: str | None = None  # instead of ``load``: benchmarks/<script>, run by ``environment``'s Python
    environment: PeerEnv | None = None  # the virtual environment the script needs (made on first use)


# optimum-onnx and sentence-transformers 5 pin transformers<4.58 (the project runs 5.x); their export needs torch,
# pinned like every PINNED distribution to this environment's build (peer_env.py).
OPTIMUM_ENV = PeerEnv("optimum", ("optimum-onnx", "optimum[onnxruntime]", "transformers<4.58", "sentence-transformers<6",
                                  "torch", "onnxruntime"), size_gb=1.5)  # 1.5 GB measured (CPU torch)
# OpenVINO's runtime and NNCF (its own pins: scipy, scikit-learn, networkx, ...); no torch, no onnxruntime.
OPENVINO_ENV = PeerEnv("openvino", ("openvino==2026.4.*", "nncf", "tokenizers"), size_gb=0.5)


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
    Peer("optimum-fp32", PEER, "fp32", ("cpu",), None, optimum_missing, script="peer_optimum.py",
         environment=OPTIMUM_ENV),
    Peer("optimum-int8", PEER, "int8", ("cpu",), None, optimum_missing, script="peer_optimum.py",
         environment=OPTIMUM_ENV),
    Peer("st-onnx-int8", PEER, "int8", ("cpu",), None, st_missing, script="peer_sentence_transformers.py",
         environment=OPTIMUM_ENV),
    Peer("openvino-fp32", PEER, "fp32", ("cpu",), None, openvino_missing, script="peer_openvino.py",
         environment=OPENVINO_ENV),
    Peer("openvino-int8", PEER, "int8", ("cpu",), None, openvino_missing, script="peer_openvino.py",
         environment=OPENVINO_ENV),
)


ALL = "all"


def select_peers(selectors: Iterable[str]) -> tuple[str, ...]:
    """The names of the other-stack peers (kind PEER) that ``selectors`` pick, in registry order: ``all``, an
    environment's name (``optimum``: its every peer) or a peer's own name (``optimum-int8``). None by default:
    each stack costs a virtual environment of its own (peer_env.py), built on first use."""
    others = [p for p in PEERS if p.kind == PEER]
    choices = [ALL, *dict.fromkeys(p.environment.name for p in others if p.environment), *(p.name for p in others)]
    unknown = [s for s in selectors if s not in choices]
    if unknown:
        raise OnnxformerError(f"--peers {', '.join(unknown)}: unknown; choose from {', '.join(choices)}")
    chosen = set(selectors)
    return tuple(p.name for p in others if {ALL, p.name, p.environment and p.environment.name} & chosen)


def peer_costs(names: Iterable[str]) -> list[str]:
    """One line per environment the peers ``names`` need: which peers, and what it costs (built, or to build)."""
    by_env: dict[PeerEnv, list[str]] = {}
    for peer in PEERS:
        if peer.name in set(names) and peer.environment is not None:
            by_env.setdefault(peer.environment, []).append(peer.name)
    lines = []
    for env, members in by_env.items():
        try:
            cost = env.cost()
        except PeerEnvError as e:
            cost = f"cannot be made here: {e}"
        lines.append(f"peers {', '.join(members)}: the {env.name} environment {cost}")
    return lines


def find_peer(label: str) -> Peer | None:
    """The registry entry of a candidate label such as "optimum-int8@cpu" (None: one of the artifact's variants)."""
    name = label.rsplit("@", 1)[0]
    return next((p for p in PEERS if p.name == name), None)


def missing_here(peer: Peer, ctx: ArtifactContext) -> str | None:
    """Why ``peer`` cannot run here; for a script peer, making its environment is the last check."""
    reason = peer.missing(ctx)
    if reason or peer.environment is None:
        return reason
    try:
        ensure(peer.environment)
    except PeerEnvError as e:
        return f"not measured: {peer.environment.name} — {e}"
    return None


def _in_own_environment(ctx: ArtifactContext, workdir: Path, device: str) -> Runner:
    raise RuntimeError("a script peer runs in its own environment and process (isolation.run_in_environment)")


def peer_candidates(ctx: ArtifactContext, workdir: Path, devices: Mapping[str, Sequence[str]],
                    others: Iterable[str] | None = None) -> list[Candidate]:
    """Every registered peer on each of ``devices[peer.kind]`` it can run on, in registry order (of the other
    stacks, only those named in ``others`` when given); one that cannot run here is a Candidate with the reason
    instead of a loader."""
    out = []
    wanted = None if others is None else set(others)
    for peer in PEERS:
        if peer.kind == PEER and wanted is not None and peer.name not in wanted:
            continue
        for device in (d for d in devices.get(peer.kind, ()) if d in peer.devices):
            label, where = f"{peer.name}@{device}", "gpu" if device == "cuda" else "cpu"
            reason = missing_here(peer, ctx)
            load = peer.load or _in_own_environment
            if reason:
                out.append(Candidate(label, peer.kind, where, peer.precision, reason=reason))
            else:
                out.append(Candidate(label, peer.kind, where, peer.precision,
                                     load=functools.partial(load, ctx, workdir, device),
                                     prepare=functools.partial(peer.prepare, ctx, workdir),
                                     own_process=peer.environment is not None))
    return out


@contextlib.contextmanager
def work_directory(reuse: str | Path | None = None) -> Iterator[Path]:
    """Where peers keep what they build during one run (optimum's export, OpenVINO's IR); ``reuse``: a parent process's
    directory (isolated workers), left in place. A directory of our own is removed afterwards."""
    if reuse is not None:
        yield Path(reuse)
        return
    path = Path(tempfile.mkdtemp(prefix="onnxformer-bench-peers-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
