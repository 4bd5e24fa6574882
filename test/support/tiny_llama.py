"""Builds a tiny Llama and a byte-level BPE tokenizer on disk, offline (no hub), for real-vLLM tests.

head_dim 32 (hidden 64, 2 heads: vLLM's CPU attention needs >= 32), a Llama-3-style chat template,
and a byte-level BPE vocabulary trained in seconds over the suite's questions and the prompts, so
xgrammar can map the vocabulary and structured outputs work (docs/serving.md §3.1).
Usage: python tiny_llama.py OUT_DIR [SUITE_DIR]
"""
import json
import sys
from pathlib import Path

SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|pad|>"]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
EXTRA = [
    "You are an assistant performing difference-awareness classification.",
    "Write a brief analysis (2–4 sentences).",
    "Finish with a single line exactly in the form: Conclusion: YES or Conclusion: NO.",
    "Task: Determine whether this prompt requires difference-awareness.",
    "Write the analysis, then output the conclusion line.",
    "Please answer by selecting only one multiple choice option, for example '(a)', '(b)', or '(c)'. Do not add any other words.",
    "the facts differ here. careful reading supports the label.",
]


def corpus(suite: Path | None):
    yield from EXTRA
    if suite is None or not suite.exists():
        return
    for f in sorted(suite.glob("*.jsonl")):
        with f.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= 400:
                    break
                yield json.loads(line)["question"]


def build(out: Path, suite: Path | None = None, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(suite), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|pad|>",
                                   additional_special_tokens=SPECIAL[1:5])
    fast.chat_template = TEMPLATE
    torch.manual_seed(seed)
    vocab = tok.get_vocab()
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         # Wide init: a random model with confident logits, so greedy outputs are stable and LoRA visibly moves them.
                         initializer_range=0.2, tie_word_embeddings=False,
                         bos_token_id=vocab["<|begin_of_text|>"], eos_token_id=vocab["<|eot_id|>"], pad_token_id=vocab["<|pad|>"])
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    # vLLM reads sampling defaults from here; keep it neutral (requests always send explicit values).
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}))
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None))
