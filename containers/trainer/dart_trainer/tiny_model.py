"""Tiny, seeded, random models built offline for the smoke run: a chat Llama and two classifiers.

    python -m dart_trainer.tiny_model --out DIR [--suite benchmark_suite] [--seed 0] [--family llama3]

writes DIR/base (LlamaForCausalLM with a Llama-3-style chat template), DIR/classifiers/hate
(RobertaForSequenceClassification, labels nothate/hate) and DIR/classifiers/toxicity (non-toxic/toxic),
plus DIR/tiny_models.json describing them. No download: the tokenizers are byte-level BPE trained here on
the suite's questions and the protocol's prompt strings. Byte-level matters: xgrammar cannot map a
WordLevel vocabulary, so vLLM's structured outputs (the smoke run's only way to get parseable answers
from random weights) would not be enforced (docs/serving.md §3.1). head_dim is 32, the smallest size vLLM's CPU
attention accepts.

--family picks the chat family of the base: llama3 (the default, a hand-written Llama-3-style template, unchanged
so the smoke run's artifacts keep their digests) or gemma2, gemma3, mistral, qwen2.5, phi3: the same tiny Llama
with the real model's chat template (templates/, README.md there cites each), its special tokens as its tokenizer
names them, and its tokenizer_config / generation_config facts (BOS added or not, pad token or none, the eos list,
sampling defaults only where the real model ships them).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

LLAMA_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|pad|>"]
# RoBERTa's own layout: <pad> at 1 is the padding_idx its position ids are offset from.
ROBERTA_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CLASSIFIERS = {
    "hate": {0: "nothate", 1: "hate"},
    "toxicity": {0: "non-toxic", 1: "toxic"},
}
# The words every DART prompt and reply uses, so they become single tokens and constrained replies stay short.
PROTOCOL_TEXT = [
    "You are an assistant performing difference-awareness classification.",
    "Write a brief analysis (2–4 sentences).",
    "Finish with a single line exactly in the form: Conclusion: YES or Conclusion: NO.",
    "Task: Determine whether this prompt requires difference-awareness.",
    "Write the analysis, then output the conclusion line.",
    "You are writing a brief explanation for a labeled difference-awareness classification example.",
    "Gold label: YES. Gold label: NO. Write a short analysis consistent with the gold label.",
    "Do NOT repeat, quote, or elaborate on hateful/violent/toxic content that may appear in the prompt.",
]
# The verdict shape dart holds a local judge to (vLLM structured outputs), derived from src/audit/JudgePrompt.ts;
# test/auditJudgePrompt.test.ts checks that this copy matches it.
JUDGE_VERDICT_SCHEMA = Path(__file__).with_name("judge_verdict.schema.json")


def judge_words(schema: dict) -> list[str]:
    """The judge's reply as tokenizer text: a non-regression verdict in JSON, then every other word its enums allow."""
    variants = schema["anyOf"]
    calm = next(v for v in variants if v["properties"]["is_regression"].get("const") is False)

    def example(prop: dict):
        if "const" in prop:
            return prop["const"]
        if "enum" in prop:
            return prop["enum"][0]
        return {"boolean": True, "string": ""}[prop["type"]]

    verdict = {key: example(calm["properties"][key]) for key in calm["required"]}
    seen = {v for v in verdict.values() if isinstance(v, str)}
    words: list[str] = []
    for key in calm["required"]:
        for variant in variants:
            prop = variant["properties"][key]
            for w in [prop["const"]] if "const" in prop else prop.get("enum", []):
                if isinstance(w, str) and w not in seen:
                    seen.add(w)
                    words.append(w)
    return [json.dumps(verdict), " ".join(words)]


PROTOCOL_TEXT += judge_words(json.loads(JUDGE_VERDICT_SCHEMA.read_text(encoding="utf-8")))


def suite_questions(suite: Path | None) -> list[str]:
    """Questions of every benchmark file in the suite, in file order (sorted names), for a deterministic corpus."""
    if suite is None:
        return []
    if not suite.is_dir():
        raise SystemExit(f"--suite {suite}: not a directory")
    out: list[str] = []
    for f in sorted(suite.glob("*.jsonl")):
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(str(json.loads(line)["question"]))
            except (ValueError, KeyError, TypeError) as e:
                raise SystemExit(f"{f}:{n}: not a suite row with a question ({e})") from e
    return out


def train_bpe(corpus: Iterable[str], special: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_lines(corpus), trainer=trainer)
    return tok


def _lines(corpus: Iterable[str]) -> Iterator[str]:
    # Weighted so the protocol's words ("Conclusion", "analysis", the judge's keys) become single tokens.
    for _ in range(200):
        yield from PROTOCOL_TEXT
    yield from corpus


def build_llama(out: Path, corpus: list[str], seed: int, vocab_size: int = 2000) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = train_bpe(corpus, LLAMA_SPECIAL, vocab_size)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|pad|>", additional_special_tokens=LLAMA_SPECIAL[1:4])
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 4096
    ids = {t: tok.token_to_id(t) for t in LLAMA_SPECIAL}
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         # Wide init: the frozen random head must be able to express confident tokens once LoRA fits.
                         initializer_range=0.2, tie_word_embeddings=False,
                         bos_token_id=ids["<|begin_of_text|>"], eos_token_id=ids["<|eot_id|>"], pad_token_id=ids["<|pad|>"])
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    return out


TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class Family:
    """What the tiny base copies from a real chat model: names of tokens, never their ids (the tiny vocabulary numbers
    its special tokens in the order given, which follows the real vocabulary's order)."""
    model: str
    special: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None
    add_bos: bool | None          # tokenizer_config add_bos_token; None where the real config does not set it
    extra: tuple[str, ...]        # additional special tokens: the template's role markers
    config_bos: str | None
    config_eos: str | tuple[str, ...]
    gen_eos: str | tuple[str, ...]
    gen_pad: str | None = None
    sampling: dict = field(default_factory=dict)  # generation_config sampling defaults, only where the real one has them


FAMILIES: dict[str, Family | None] = {
    "llama3": None,  # build_llama: the smoke run's model, kept byte for byte
    "gemma2": Family(
        model="google/gemma-2-2b-it",
        special=("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"),
        bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", add_bos=True, extra=("<start_of_turn>", "<end_of_turn>"),
        config_bos="<bos>", config_eos=("<eos>", "<end_of_turn>"), gen_eos=("<eos>", "<end_of_turn>"), gen_pad="<pad>"),
    "gemma3": Family(
        model="google/gemma-3-1b-it",
        special=("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>"),
        bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", add_bos=True,
        extra=("<start_of_turn>", "<end_of_turn>", "<start_of_image>"),
        config_bos="<bos>", config_eos=("<eos>", "<end_of_turn>"), gen_eos=("<eos>", "<end_of_turn>"), gen_pad="<pad>",
        sampling={"do_sample": True, "top_k": 64, "top_p": 0.95}),
    "mistral": Family(
        model="mistralai/Mistral-7B-Instruct-v0.2",
        special=("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
        bos="<s>", eos="</s>", pad=None, unk="<unk>", add_bos=True, extra=("[INST]", "[/INST]"),
        config_bos="<s>", config_eos="</s>", gen_eos="</s>"),
    "qwen2.5": Family(
        model="Qwen/Qwen2.5-7B-Instruct",
        special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None, add_bos=None, extra=("<|im_start|>", "<|im_end|>"),
        config_bos="<|endoftext|>", config_eos="<|im_end|>", gen_eos=("<|im_end|>", "<|endoftext|>"),
        gen_pad="<|endoftext|>",
        sampling={"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20}),
    "phi3": Family(
        model="microsoft/Phi-3.5-mini-instruct",
        special=("<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"),
        bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>", unk="<unk>", add_bos=False,
        extra=("<|assistant|>", "<|system|>", "<|end|>", "<|user|>"),
        config_bos="<s>", config_eos="<|endoftext|>", gen_eos=("<|end|>", "<|assistant|>", "<|endoftext|>"),
        gen_pad="<|endoftext|>"),
}


def build_family(out: Path, corpus: list[str], seed: int, family: str, vocab_size: int = 2000) -> Path:
    """The tiny Llama of build_llama, dressed as `family`'s chat model."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    f = FAMILIES[family]
    tok = train_bpe(corpus, list(f.special), vocab_size)
    ids = {t: tok.token_to_id(t) for t in f.special}

    def id_of(names):
        if names is None:
            return None
        return ids[names] if isinstance(names, str) else [ids[n] for n in names]

    named = {k: v for k, v in {"bos_token": f.bos, "eos_token": f.eos, "pad_token": f.pad, "unk_token": f.unk}.items() if v}
    if f.add_bos is not None:
        named["add_bos_token"] = f.add_bos  # rebuilds the post-processor on load: BOS added by the tokenizer or not
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, additional_special_tokens=list(f.extra), **named)
    fast.chat_template = (TEMPLATES / f"{family}.jinja").read_text(encoding="utf-8")
    fast.model_max_length = 4096
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         initializer_range=0.2, tie_word_embeddings=False,
                         bos_token_id=id_of(f.config_bos), eos_token_id=id_of(f.config_eos), pad_token_id=id_of(f.pad))
    model = LlamaForCausalLM(config).eval()
    gen = {"bos_token_id": id_of(f.config_bos), "eos_token_id": id_of(f.gen_eos), "pad_token_id": id_of(f.gen_pad)}
    model.generation_config = GenerationConfig(**{k: v for k, v in gen.items() if v is not None}, **f.sampling)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    return out


def build_base(out: Path, corpus: list[str], seed: int, family: str = "llama3") -> Path:
    if family not in FAMILIES:
        raise SystemExit(f"--family {family}: not one of {', '.join(FAMILIES)}")
    return build_llama(out, corpus, seed) if FAMILIES[family] is None else build_family(out, corpus, seed, family)


def build_classifier(out: Path, corpus: list[str], labels: dict[int, str], seed: int, vocab_size: int = 1000) -> Path:
    import torch
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

    tok = train_bpe(corpus, ROBERTA_SPECIAL, vocab_size)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.RobertaProcessing(("</s>", eos), ("<s>", bos), trim_offsets=False,
                                                      add_prefix_space=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    fast.model_max_length = 512
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, max_position_embeddings=514, type_vocab_size=1,
                           pad_token_id=tok.token_to_id("<pad>"), bos_token_id=bos, eos_token_id=eos,
                           id2label=dict(labels), label2id={v: k for k, v in labels.items()},
                           problem_type="single_label_classification", initializer_range=0.2)
    model = RobertaForSequenceClassification(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def build_all(out: Path, suite: Path | None, seed: int = 0, family: str = "llama3") -> dict:
    """Every model of the smoke run under `out`; returns (and writes) the description."""
    corpus = suite_questions(suite)
    base = build_base(out / "base", corpus, seed, family)
    classifiers = {}
    for i, (name, labels) in enumerate(CLASSIFIERS.items()):
        path = build_classifier(out / "classifiers" / name, corpus, labels, seed + 1 + i)
        classifiers[name] = {"path": str(path), "labels": {str(k): v for k, v in labels.items()}, "harmful_label": labels[1],
                             "files": _digest(path)}
    manifest = {
        "seed": seed,
        "corpus_questions": len(corpus),
        "base": {"path": str(base), "architecture": "LlamaForCausalLM", "head_dim": 32, "family": family,
                 "files": _digest(base)},
        "classifiers": classifiers,
    }
    tmp = out / "tiny_models.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out / "tiny_models.json")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dart_trainer.tiny_model", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (base/, classifiers/{hate,toxicity}/)")
    p.add_argument("--suite", type=Path, default=None, help="benchmark_suite folder whose questions train the tokenizers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family", default="llama3", choices=list(FAMILIES), help="chat family of the base (default llama3)")
    args = p.parse_args(argv)
    manifest = build_all(args.out, args.suite, args.seed, args.family)
    print(json.dumps({"out": str(args.out), "questions": manifest["corpus_questions"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
