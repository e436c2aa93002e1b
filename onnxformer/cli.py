"""The `onnxformer` command. Each stage registers its own sub-command; user mistakes exit 1 with one line."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

from onnxformer.errors import OnnxformerError

Command = Callable[[argparse.Namespace], int]


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a Hugging Face checkpoint to a validated ONNX artifact directory")
    p.add_argument("model", help="local checkpoint directory (or a hub id where the hub is reachable)")
    p.add_argument("--out", required=True, help="artifact directory to write")
    _export_options(p)
    p.set_defaults(func=_run_export)


def _export_options(p: argparse.ArgumentParser) -> None:
    from onnxformer.artifact.tasks import ALIASES, exportable

    aliases = ", ".join(f"{a} = {t}" for a, t in ALIASES.items())
    p.add_argument("--task", help=f"{' | '.join(exportable())} (aliases: {aliases}; default: inferred from the "
                                  "checkpoint)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: 18, torch.onnx's default)")
    p.add_argument("--atol", type=float, help="max |Δ| against PyTorch (default per task)")
    p.add_argument("--allow-pickle", action="store_true", help="load pickle weights (torch.load weights_only=True)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the checkpoint's own Python code")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out: an earlier artifact (and its variants) or a directory that is not one")


def _run_export(args: argparse.Namespace) -> int:
    from onnxformer.export import export_checkpoint
    from onnxformer.progress import console, summarize_export

    result = export_checkpoint(
        args.model, args.out, task=args.task, opset=args.opset, atol=args.atol, allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code, overwrite=args.overwrite, progress=lambda m: console.log(m),
    )
    summarize_export(result)
    return 0


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="run every stage (export → quantize → benchmark) and write report.md")
    p.add_argument("model", nargs="?", help="checkpoint directory (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--out", required=True, help="artifact directory to write")
    _export_options(p)
    p.set_defaults(func=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    from onnxformer.build import build

    build(args)
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from onnxformer.benchmarks.cli import add_parser  # argparse only; the harness loads inside its handler

    add_parser(sub)


def _add_serving(sub: argparse._SubParsersAction) -> None:
    from onnxformer.serve.cli import add_serve, add_triton  # argparse only; FastAPI/uvicorn load in the handlers

    add_serve(sub)
    add_triton(sub)
    from onnxformer.serve.ray import add_ray_config  # argparse only; ray loads in the handler

    add_ray_config(sub)
    from onnxformer.serve.kserve_deploy import add_kserve

    add_kserve(sub)


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    from onnxformer.quantize.cli import register  # argparse only; ONNX Runtime tooling loads in the handlers

    register(sub)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    from onnxformer.generation_cli import register  # argparse only; runtime/quantizer load in the handlers

    register(sub)


REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_export, _add_quantize, _add_build, _add_bench, _add_serving, _add_generate,
]


def parser() -> argparse.ArgumentParser:
    from onnxformer import __version__

    p = argparse.ArgumentParser(prog="onnxformer", description="Transformer checkpoints → fast, validated ONNX.")
    p.add_argument("--version", action="version", version=f"onnxformer {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="show library logs and full tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    for command in sub.choices.values():
        command.formatter_class = DefaultsHelpFormatter
        # also after the sub-command (`onnxformer bench DIR -v`); SUPPRESS: absent here keeps the top level's value
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="show library logs and full tracebacks")
    return p


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every option's default in its help, unless the help already states it or there is none to state. A switch
    (store_true / store_false) states none: its help says what passing it does, and "(default: True)" on
    `--no-batching` would read as "off by default"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, argparse.SUPPRESS, [])
                or not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._StoreConstAction))):
            return text
        return f"{text} (default: {', '.join(map(str, default)) if isinstance(default, list) else default})"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _quiet_libraries(args.verbose)
    try:
        return args.func(args)
    except OnnxformerError as e:
        if args.verbose:
            raise
        print(f"onnxformer: error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:  # a stack this install lacks (runtime-only: no torch, no FastAPI, ...)
        from onnxformer.extras import missing_module_message

        message = missing_module_message(e, args.command)
        if message is None or args.verbose:
            raise
        print(f"onnxformer: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("onnxformer: interrupted", file=sys.stderr)
        return 130


def _quiet_libraries(verbose: bool) -> None:
    """Exporters are chatty (tracer warnings, deprecations); keep the CLI readable unless -v."""
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers 5's "Loading weights" bars, per load
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("onnxformer.scratch").setLevel(logging.WARNING)  # "removed stale … freed" lines
