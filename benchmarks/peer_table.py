"""Issue 15's peer table: every configuration in its own process, one after the other in one run, with p50
latency at 1×128 and 8×128 and the worst held-out cosine against sentence-transformers (PyTorch fp32).

    python benchmarks/peer_table.py ARTIFACT --out benchmarks/results/peers-minilm.json [--threads 2]

Configurations: the artifact's CPU variants (fp32, fp32-opt, int8 where present), the PyTorch baselines and
every peer of peers.py (optimum, sentence-transformers' ONNX int8, OpenVINO fp32 / NNCF int8, each in its own
environment). Latency is the harness's (model-only, ``--seconds`` per shape and mode). Held-out fidelity: the
texts of benchmarks/data/heldout.txt end to end (tokenizer, model, pooling, normalisation), once as one batch
and once one text per call; our variants through ``Model.embed`` (bench_heldout.fidelity), the script peers by
their own end-to-end call, PyTorch fp32 is sentence-transformers' reference itself.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

SHAPES = ((1, 128), (8, 128))


def _cosines(got: dict[str, np.ndarray], reference: np.ndarray) -> dict[str, float]:
    cos = {k: np.sum(v * reference, axis=1) / np.linalg.norm(v, axis=1) for k, v in got.items()}
    return {"min_cosine_batched": float(cos["batched"].min()), "min_cosine_solo": float(cos["solo"].min())}


def measure(art: Path, threads: int, seconds: float) -> dict[str, Any]:
    from bench_heldout import fidelity, heldout_texts
    from sentence_transformers import SentenceTransformer

    from onnxformer.artifact.manifest import Manifest
    from onnxformer.benchmarks import harness, measure
    from onnxformer.benchmarks.environment import environment
    from onnxformer.benchmarks.isolation import fragment_signatures, run_in_environment, run_isolated
    from onnxformer.benchmarks.peers import find_peer, work_directory
    from onnxformer.benchmarks.runners import ArtifactContext
    from onnxformer.benchmarks.stats import Budget
    from onnxformer.benchmarks.summary import add_comparisons

    manifest = Manifest.load(art)
    variants = [v for v in ("fp32", "fp32-opt", "int8") if v in manifest.variants]
    settings = measure.Settings(batches=[b for b, _ in SHAPES], seqs=[128], threads=threads,
                                budget=Budget(warmup=3, seconds=seconds), providers=["cpu"], variants=variants,
                                isolate=True, peers=["all"])
    texts = heldout_texts()
    reference = SentenceTransformer(manifest.source_path, device="cpu").encode(
        texts, batch_size=1, normalize_embeddings=True, convert_to_numpy=True)
    ctx = ArtifactContext(art, manifest, threads, max(settings.batches))
    report = harness._skeleton(art, manifest, settings, ["cpu"], environment())
    signatures: dict = {}
    heldout: dict[str, dict[str, float]] = {}
    with work_directory() as workdir:
        for cand in measure.candidates(ctx, settings, ["cpu"], workdir):
            base = {"kind": cand.kind, "device": cand.device, "precision": cand.precision}
            if cand.load is None:
                report["configs"].append({"name": cand.name, **base, "status": "unavailable", "reason": cand.reason})
                continue
            print(f"measuring {cand.name} in its own process", flush=True)
            peer = find_peer(cand.name)
            if peer is not None and peer.script is not None:
                fragment = run_in_environment(peer, art, settings, cand.name, workdir, heldout=texts)
                if "heldout" in fragment:
                    heldout[cand.name] = _cosines(fragment.pop("heldout"), reference)
            else:
                fragment = run_isolated(art, settings, cand.name, workdir)
                name = cand.name.split("@")[0]
                if name in manifest.variants:
                    heldout[cand.name] = fidelity(art, name, texts, reference)
            report["configs"] += [{**base, **c} for c in fragment["configs"]]
            report["results"] += fragment["results"]
            signatures.update(fragment_signatures(fragment))
    measure.add_fidelity(report, signatures)
    add_comparisons(report)
    report["heldout"] = {"texts": len(texts), "file": "benchmarks/data/heldout.txt",
                         "reference": "sentence-transformers (PyTorch fp32), one text per call", "cosine": heldout}
    return report


def table(report: dict[str, Any]) -> list[str]:
    rows = {(r["config"], r["batch"], r["seq"]): r for r in report["results"]}
    cpu = report["environment"]["cpu"]
    flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu["flags"].items())
    lines = [f"# Peers on {report['artifact']['name']} (issue 15)", "",
             f"CPU: {cpu['model']} ({flags}); {report['settings']['threads']} threads; every configuration in its own "
             f"process, one after the other in one run; load average {report['load_average_1m_start']:.1f} at the "
             "start (a shared machine: read ratios, not absolute times).", "",
             *([report["note"], ""] if report.get("note") else []),
             "| config | p50 ms 1×128 | p50 ms 8×128 | min cos held-out, batched | min cos held-out, solo | "
             "min cos vs PyTorch fp32 (bench inputs) |", "|---|---|---|---|---|---|"]
    for c in report["configs"]:
        if c["status"] != "ok":
            continue
        p50 = [rows.get((c["name"], b, s)) for b, s in SHAPES]
        held = report["heldout"]["cosine"].get(c["name"])
        fid = min((r["fidelity_cosine"] for r in p50 if r and r["fidelity_cosine"] is not None), default=None)
        cells = [f"{r['model_only']['p50_ms']:.2f}" if r else "n/a" for r in p50]
        cells += [f"{held['min_cosine_batched']:.5f}", f"{held['min_cosine_solo']:.5f}"] if held else ["—", "—"]
        cells.append(f"{fid:.5f}" if fid is not None else "n/a")
        lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    missing = [c for c in report["configs"] if c["status"] != "ok"]
    if missing:
        lines += ["", "## Not measured", ""] + [f"- {c['name']}: {c['status']} — {c['reason']}" for c in missing]
    return lines + [""]


def main() -> None:
    from onnxformer.artifact.files import atomic_write_bytes, atomic_write_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--out", type=Path, required=True, help="JSON path; the markdown table goes next to it (.md)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0, help="timing budget per configuration, shape and mode")
    p.add_argument("--note", help="a line for the table's header (e.g. where the artifact came from)")
    args = p.parse_args()
    report = measure(args.artifact, args.threads, args.seconds)
    if args.note:
        report["note"] = args.note
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, report)
    atomic_write_bytes(args.out.with_suffix(".md"), "\n".join(table(report)).encode())
    print("\n".join(table(report)))


if __name__ == "__main__":
    main()
