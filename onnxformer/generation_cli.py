"""`onnxformer generate` and `onnxformer quantize-generative`: argparse only here (the CLI starts fast);
the runtime and the quantizer load inside the handlers."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    _add_generate(sub)
    _add_quantize(sub)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text with an exported decoder or seq2seq artifact (torch-free)")
    p.add_argument("artifact", help="artifact directory written by `onnxformer export` (text-generation models)")
    p.add_argument("prompts", nargs="+", help="one or more prompts (source texts for seq2seq models)")
    p.add_argument("--variant", default="fp32", help="fp32 | fp16 | int8 | int4 (default fp32)")
    p.add_argument("--max-new-tokens", type=int,
                   help="most tokens to generate per prompt, fewer when a stop sequence or end-of-text comes first; "
                        "required with --ignore-eos (default: 32)")  # options.DEFAULT_MAX_NEW_TOKENS
    p.add_argument("--min-tokens", type=int, default=0,
                   help="end-of-text cannot end a text before this many new tokens (vLLM's min_tokens; default 0)")
    p.add_argument("--ignore-eos", action="store_true",
                   help="end-of-text never ends a text: it runs to --max-new-tokens (vLLM's ignore_eos; for "
                        "benchmarks)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="--sample: divides the logits (lower: surer)")
    p.add_argument("--top-k", type=int, default=0, help="--sample: keep the k likeliest tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="--sample: keep the likeliest tokens up to this probability mass (1.0: all)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="penalise tokens already in the text (CTRL-style; 1.0: off)")
    p.add_argument("--stop", action="append", default=[],
                   help="stop sequence (repeatable); the text ends before it. Taken literally: for a newline use "
                        "bash's $'\\n'")
    p.add_argument("--seed", type=int, help="random seed for --sample (reproducible output)")
    p.add_argument("--truncate", action="store_true", help="cut prompts that do not fit instead of failing")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: physical cores)")
    p.add_argument("--provider", default="auto", help="auto | cuda | cpu (comma list allowed; default auto)")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from onnxformer.errors import InputError
    from onnxformer.runtime.generation import Generator

    provider = args.provider.split(",") if "," in args.provider else args.provider
    if args.ignore_eos and args.max_new_tokens is None:
        raise InputError("--ignore-eos needs --max-new-tokens: the text runs until it")
    gen = Generator.load(args.artifact, provider, args.variant, threads=args.threads)
    options = dict(do_sample=args.sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   repetition_penalty=args.repetition_penalty, stop=args.stop, seed=args.seed, truncate=args.truncate,
                   min_tokens=args.min_tokens, ignore_eos=args.ignore_eos)
    if len(args.prompts) == 1:  # one prompt: print text as it is produced
        for piece in gen.stream(args.prompts[0], args.max_new_tokens, **options):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    for prompt, text in zip(args.prompts, gen.generate(args.prompts, args.max_new_tokens, **options)):
        print(f"{prompt!r} → {text!r}")
    return 0


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize-generative", help="add fp16 / int8 / int4 variants to a generative artifact, "
                                                   "with next-token agreement and perplexity delta")
    p.add_argument("dir", help="artifact directory of a text-generation or text2text-generation model")
    p.add_argument("--variants", default="fp16,int8,int4", help="comma list of fp16,int8,int4 (default: all)")
    p.add_argument("--block-size", type=int, default=32, help="int4: weights per scale (default 32)")
    p.set_defaults(func=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> int:
    from onnxformer.progress import console
    from onnxformer.quantize.generative import quantize_generative

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    manifest = quantize_generative(args.dir, variants, block_size=args.block_size, progress=console.log)
    for name in variants:
        fid = manifest.variants[name].fidelity
        console.print(f"{name}: next-token agreement {fid['next_token_agreement']:.3f}, "
                      f"perplexity Δ {fid['perplexity_delta']:+.4f} ({fid['positions']} positions)")
    return 0
