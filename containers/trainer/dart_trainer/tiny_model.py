"""Tiny, seeded, random models built offline for the smoke run: a chat Llama and two classifiers.

    python -m dart_trainer.tiny_model --out DIR [--suite benchmark_suite] [--seed 0]

writes DIR/base (LlamaForCausalLM with a Llama-3-style chat template), DIR/classifiers/hate
(RobertaForSequenceClassification, labels nothate/hate) and DIR/classifiers/toxicity (non-toxic/toxic),
plus DIR/tiny_models.json describing them. No download: the tokenizers are byte-level BPE trained here on
the suite's questions and the protocol's prompt strings. Byte-level matters: xgrammar cannot map a
WordLevel vocabulary, so vLLM's structured outputs (the smoke run's only way to get parseable answers
from random weights) would not be enforced (docs/serving.md §3.1). head_dim is 32, the smallest size vLLM's CPU
attention accepts.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
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


def build_all(out: Path, suite: Path | None, seed: int = 0) -> dict:
    """Every model of the smoke run under `out`; returns (and writes) the description."""
    corpus = suite_questions(suite)
    base = build_llama(out / "base", corpus, seed)
    classifiers = {}
    for i, (name, labels) in enumerate(CLASSIFIERS.items()):
        path = build_classifier(out / "classifiers" / name, corpus, labels, seed + 1 + i)
        classifiers[name] = {"path": str(path), "labels": {str(k): v for k, v in labels.items()}, "harmful_label": labels[1],
                             "files": _digest(path)}
    manifest = {
        "seed": seed,
        "corpus_questions": len(corpus),
        "base": {"path": str(base), "architecture": "LlamaForCausalLM", "head_dim": 32, "files": _digest(base)},
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
    args = p.parse_args(argv)
    manifest = build_all(args.out, args.suite, args.seed)
    print(json.dumps({"out": str(args.out), "questions": manifest["corpus_questions"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
