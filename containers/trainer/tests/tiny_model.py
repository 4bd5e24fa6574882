"""Builds a tiny Llama-architecture model and tokenizer on disk, offline (no hub).

head_dim 32 (hidden 64, 2 heads), a Llama-3-style chat template. Also usable as a script:
    python tests/tiny_model.py OUT_DIR
"""
import sys
from pathlib import Path

WORDS = (
    "the a an and or of to in on for with is are be was were it this that these those which who what why how "
    "group groups people men women country countries law legal court job jobs more less higher lower same equal "
    "different differ difference treat treated fairly facts fact careful reading supports label yes no conclusion "
    "task determine whether prompt requires awareness write analysis then output line you assistant performing "
    "classification brief sentences finish single exactly form question weighs given context matters here christians "
    "muslims percentage population religion occupation harmful phrase neither both roughly within system user"
).split()
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "[UNK]", "[PAD]"]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def build(out: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokens = list(dict.fromkeys(SPECIAL + sorted(set(WORDS)) + list("abcdefghijklmnopqrstuvwxyz0123456789.,:?!()'\"-–")))
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   unk_token="[UNK]", pad_token="[PAD]", additional_special_tokens=SPECIAL[2:5])
    fast.chat_template = TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         # A wide init so the frozen random head can express confident predictions: LoRA must be able to fit.
                         initializer_range=0.2,
                         bos_token_id=vocab["<|begin_of_text|>"], eos_token_id=vocab["<|eot_id|>"], pad_token_id=vocab["[PAD]"])
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
