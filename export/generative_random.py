"""Random-weight generative checkpoints with a locally trained tokenizer (tests and benchmarks; no hub).

The tokenizer is a byte-level BPE trained on a few sentences, so it round-trips any text exactly;
ids 0-3 are <pad>, <s>, </s>, <unk> in every family, and the model's vocabulary matches it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CORPUS = (
    "The quick brown fox jumps over the lazy dog while it rains and storms outside.",
    "ONNX Runtime runs the exported graph; PyTorch is the reference it must agree with.",
    "Translation, summarisation and text generation are sequence to sequence problems.",
    "A key value cache keeps the attention state of every token that was already seen.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Le renard brun saute!",
    "0123456789 + - * / = ( ) [ ] { } < > , . ; : ! ? ' \" # $ % & @ ^ _ ~ |",
)
SEQ2SEQ_FAMILIES = ("t5", "bart", "marian")
# Per-family settings of the Llama-shaped configs. Windows are shorter than the validation and test
# sequences, so the exported sliding-window masks are exercised, not only declared.
LLAMA_LIKE: dict[str, dict[str, Any]] = {
    "llama": {}, "qwen2": {}, "qwen3": {}, "phi3": {"original_max_position_embeddings": 128},
    "mistral": {"sliding_window": 6},
    "gemma3_text": {"sliding_window": 6, "layer_types": ["sliding_attention", "full_attention"],
                    "query_pre_attn_scalar": 8, "tie_word_embeddings": True},
}


def train_tokenizer(vocab_size: int = 384, append_eos: bool = False) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer`; ``append_eos`` adds </s> to every input (seq2seq sources)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(CORPUS) * 4, trainer=trainer)
    if append_eos:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def tiny_config(family: str, vocab_size: int, layers: int = 2, hidden: int = 32, heads: int = 4,
                kv_heads: int = 2, positions: int = 128, **overrides: Any) -> Any:
    """A small config of ``family``; special ids follow the trained tokenizer; ``overrides`` win."""
    from transformers import AutoConfig

    ids = dict(pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
    if family == "gpt2":
        kw = dict(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=positions)
    elif family in LLAMA_LIKE:
        kw = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  intermediate_size=2 * hidden, max_position_embeddings=positions, tie_word_embeddings=False,
                  head_dim=hidden // heads)  # Qwen3 and Gemma 3 default to a fixed head_dim, not hidden / heads
        kw.update(LLAMA_LIKE[family])
    elif family == "t5":
        kw = dict(d_model=hidden, d_kv=hidden // heads, d_ff=2 * hidden, num_layers=layers, num_heads=heads,
                  decoder_start_token_id=PAD, n_positions=positions)
    elif family in ("bart", "marian"):
        kw = dict(d_model=hidden, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                  decoder_attention_heads=heads, encoder_ffn_dim=2 * hidden, decoder_ffn_dim=2 * hidden,
                  max_position_embeddings=positions, decoder_start_token_id=EOS if family == "bart" else PAD,
                  forced_eos_token_id=EOS)
    else:
        raise ValueError(f"no tiny config for {family!r}")
    # Wider random weights than the default init: sharper logits, so greedy text varies instead of
    # repeating one token, and argmax ties (which would make parity depend on rounding) are unlikely.
    init = {"t5": {"initializer_factor": 2.0}, "bart": {"init_std": 0.3}, "marian": {"init_std": 0.3}}
    kw.update(init.get(family, {"initializer_range": 0.3}))  # type: ignore[arg-type]
    return AutoConfig.for_model(family, **{"vocab_size": vocab_size, **ids, **kw, **overrides})


def make_generative_checkpoint(directory: str | Path, family: str, seed: int = 0, chat_template: str | None = None,
                               **config: Any) -> Path:
    """Save a random ``family`` model plus its tokenizer to ``directory`` (a loadable HF checkpoint);
    ``chat_template``: a Jinja chat template the tokenizer saves with it."""
    import torch
    import transformers
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    seq2seq = family in SEQ2SEQ_FAMILIES
    tok = train_tokenizer(append_eos=seq2seq)
    cfg = tiny_config(family, config.pop("vocab_size", tok.get_vocab_size()), **config)
    torch.manual_seed(seed + sum(map(ord, family)))  # llama and mistral differ even with the same config
    auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
    model = auto.from_config(cfg).eval()
    model.save_pretrained(directory)
    positions = getattr(cfg, "n_positions", None) or cfg.max_position_embeddings
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=positions,
                                   model_input_names=["input_ids", "attention_mask"])
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(directory)
    return directory
