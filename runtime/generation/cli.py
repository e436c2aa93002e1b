"""`onnxformer generate DIR PROMPT...`: text from a generative artifact, streamed for a single prompt."""
from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text with an exported decoder or seq2seq artifact (torch-free)")
    p.add_argument("artifact", help="artifact directory written by `onnxformer export` (text-generation models)")
    p.add_argument("prompts", nargs="+", help="one or more prompts (source texts for seq2seq models)")
    p.add_argument("--variant", default="fp32", help="fp32 | fp16 | int8 | int4 (default fp32)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable); the text ends before it")
    p.add_argument("--seed", type=int, help="random seed for --sample (reproducible output)")
    p.add_argument("--truncate", action="store_true", help="cut prompts that do not fit instead of failing")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: physical cores)")
    p.add_argument("--provider", default="auto", help="auto | cuda | cpu (comma list allowed; default auto)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxformer.runtime.generation import Generator

    provider = args.provider.split(",") if "," in args.provider else args.provider
    gen = Generator.load(args.artifact, args.variant, threads=args.threads, provider=provider)
    options = dict(do_sample=args.sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   repetition_penalty=args.repetition_penalty, stop=args.stop, seed=args.seed, truncate=args.truncate)
    if len(args.prompts) == 1:  # one prompt: print text as it is produced
        for piece in gen.stream(args.prompts[0], args.max_new_tokens, **options):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    for prompt, text in zip(args.prompts, gen.generate(args.prompts, args.max_new_tokens, **options)):
        print(f"{prompt!r} → {text!r}")
    return 0
