"""The smoke run's locally built models: a chat Llama vLLM can serve with structured outputs, and two classifiers."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import rows, spec

from dart_trainer.tiny_model import (CLASSIFIERS, FAMILIES, JUDGE_VERDICT_SCHEMA, PROTOCOL_TEXT, TEMPLATES, build_all,
                                     judge_words, main)

REPO = Path(__file__).resolve().parents[3]
SUITE = REPO / "benchmark_suite"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-models")
    return out, build_all(out, SUITE, seed=0)


def test_base_is_a_llama_vllm_cpu_accepts_with_a_llama3_chat_template(built):
    from transformers import AutoConfig, AutoTokenizer
    out, manifest = built
    assert manifest["corpus_questions"] == 14000
    config = AutoConfig.from_pretrained(out / "base")
    assert config.architectures == ["LlamaForCausalLM"]
    # vLLM's CPU attention supports head sizes from 32 up (docs/serving.md §3).
    assert config.hidden_size // config.num_attention_heads == 32
    tok = AutoTokenizer.from_pretrained(out / "base")
    text = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], tokenize=False, add_generation_prompt=True)
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = tok.apply_chat_template([{"role": "user", "content": "U"}], add_generation_prompt=True, return_dict=False)
    assert ids[0] == config.bos_token_id and ids.count(config.bos_token_id) == 1
    assert config.eos_token_id == tok.convert_tokens_to_ids("<|eot_id|>")
    gen = json.loads((out / "base" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == config.eos_token_id


# The default (llama3) base as built before chat families existed, with the suite and seed 0: the smoke run's artifacts
# follow from these bytes (same transformers/torch as requirements.lock; weights drawn by torch's CPU generator).
LLAMA3_SEED0_DIGESTS = {
    "chat_template.jinja": "0413cf246705aa2ab73b2726bf2af4d6d322ee58aba2b84e506057dedf7e9732",
    "config.json": "42101bdfefdffe9eec5a31cc2b29547730a4e645c5e1b1e69f54f9ddf9932710",
    "generation_config.json": "456d39fb146a7b9dd909e262ae93d7854e5f32cb25ec553c1c29bd5b15186456",
    "model.safetensors": "93076fcdbff9defb9397e4d34434b70fad6cbe3c6bc5af7752b6cbbff1d32430",
    "tokenizer.json": "03ecd23aba29e3bec09be270e7d1c050f81e4802c1c7f67ea1b489db972fd223",
    "tokenizer_config.json": "3856ea17810e0bff2be6a9bda04b6b7394faf46afb544af81bd0990750f50f93",
}


def test_the_default_family_is_llama3_byte_for_byte(built):
    out, manifest = built
    assert manifest["base"]["family"] == "llama3"
    assert manifest["base"]["files"] == LLAMA3_SEED0_DIGESTS


# Per family: the real model's stop list (generation_config eos_token_id), and sampling defaults only where the real
# generation_config.json has them (Qwen2.5, Gemma 3: the controller must override them).
FAMILY_FACTS = {
    "gemma2": (["<eos>", "<end_of_turn>"], "<pad>", True, {}),
    "gemma3": (["<eos>", "<end_of_turn>"], "<pad>", True, {"do_sample": True, "top_k": 64, "top_p": 0.95}),
    "mistral": (["</s>"], None, True, {}),
    "qwen2.5": (["<|im_end|>", "<|endoftext|>"], "<|endoftext|>", False,
                {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20}),
    "phi3": (["<|end|>", "<|assistant|>", "<|endoftext|>"], "<|endoftext|>", False, {}),
}


@pytest.mark.parametrize("family", list(FAMILY_FACTS))
def test_each_family_is_the_same_tiny_llama_with_the_real_models_chat_facts(family, family_models):
    from transformers import AutoConfig, AutoTokenizer
    path = family_models[family]
    eos_list, pad, adds_bos, sampling = FAMILY_FACTS[family]
    config = AutoConfig.from_pretrained(path)
    assert config.architectures == ["LlamaForCausalLM"] and config.hidden_size // config.num_attention_heads == 32
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok.get_vocab()
    assert json.loads((path / "tokenizer.json").read_text())["model"]["type"] == "BPE"
    assert tok.chat_template == (TEMPLATES / f"{family}.jinja").read_text()
    assert tok.pad_token == pad and config.pad_token_id == (ids[pad] if pad else None)
    # Every special token of the family is one token of the vocabulary, flagged special.
    for t in FAMILIES[family].special:
        assert tok(t, add_special_tokens=False)["input_ids"] == [ids[t]] and tok.added_tokens_decoder[ids[t]].special
    assert (tok("hi", add_special_tokens=True)["input_ids"][0] == tok.bos_token_id) == adds_bos
    gen = json.loads((path / "generation_config.json").read_text())
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert eos == [ids[t] for t in eos_list]
    assert {k: v for k, v in gen.items() if k not in ("bos_token_id", "eos_token_id", "pad_token_id", "transformers_version")} == sampling


def test_cli_family_is_written_to_the_manifest(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dart_trainer.tiny_model", "--out", str(tmp_path / "g"), "--family", "gemma2"],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout.strip().splitlines()[-1])["out"] == str(tmp_path / "g")
    manifest = json.loads((tmp_path / "g" / "tiny_models.json").read_text())
    assert manifest["base"]["family"] == "gemma2" and set(manifest["classifiers"]) == {"hate", "toxicity"}
    assert (tmp_path / "g" / "base" / "chat_template.jinja").read_text() == (TEMPLATES / "gemma2.jinja").read_text()
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--family", "vicuna"])


def test_tokenizer_is_byte_level_bpe_so_structured_outputs_can_map_it(built):
    from transformers import AutoTokenizer
    out, _ = built
    spec_json = json.loads((out / "base" / "tokenizer.json").read_text())
    # xgrammar detects the vocabulary type from these (a WordLevel model is not enforced: docs/serving.md §3.1).
    assert spec_json["model"]["type"] == "BPE"
    assert spec_json["pre_tokenizer"]["type"] == "ByteLevel" and spec_json["decoder"]["type"] == "ByteLevel"
    tok = AutoTokenizer.from_pretrained(out / "base")
    for text in ["Write a brief analysis (2–4 sentences).\nConclusion: YES", "Ünïcødé ✓ 日本 {\"a\": 1}", " leading space"]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    # Trained on the protocol's words: the conclusion line stays short.
    assert len(tok("\nConclusion: NO", add_special_tokens=False)["input_ids"]) <= 8


def test_classifiers_have_exact_labels_and_score_texts(built):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    out, manifest = built
    for name, labels in CLASSIFIERS.items():
        path = out / "classifiers" / name
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        assert model.config.architectures == ["RobertaForSequenceClassification"]
        assert model.config.id2label == labels
        assert manifest["classifiers"][name]["harmful_label"] == labels[1]
        tok = AutoTokenizer.from_pretrained(path)
        # Over-long texts truncate to RoBERTa's 512-token window.
        enc = tok(["a short text", "word " * 2000], padding=True, truncation=True, max_length=512, return_tensors="pt")
        assert enc["input_ids"].shape[1] == 512
        with torch.no_grad():
            probs = model(**enc).logits.softmax(-1)
        assert probs.shape == (2, 2) and torch.allclose(probs.sum(-1), torch.ones(2))
    # The trap the audit must avoid: "hate" is a substring of "nothate" (docs/protocol.md §9 B1).
    assert CLASSIFIERS["hate"][0] == "nothate"


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "D1.jsonl").write_text("\n".join(json.dumps({"question": f"Which group {i} is larger?"}) for i in range(20)) + "\n")
    a = build_all(tmp_path / "a", suite, seed=3)
    b = build_all(tmp_path / "b", suite, seed=3)
    c = build_all(tmp_path / "c", suite, seed=4)
    assert a["base"]["files"] == b["base"]["files"]
    assert all(a["classifiers"][k]["files"] == b["classifiers"][k]["files"] for k in CLASSIFIERS)
    assert a["base"]["files"]["model.safetensors"] != c["base"]["files"]["model.safetensors"]
    assert a["base"]["files"]["tokenizer.json"] == c["base"]["files"]["tokenizer.json"]


def test_cli_writes_the_models_and_rejects_a_bad_suite(tmp_path, capsys):
    with pytest.raises(SystemExit, match="not a directory"):
        main(["--out", str(tmp_path / "x"), "--suite", str(tmp_path / "missing")])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "D1.jsonl").write_text('{"question": "ok"}\n{"nope": 1}\n')
    with pytest.raises(SystemExit, match=r"D1\.jsonl:2: not a suite row"):
        main(["--out", str(tmp_path / "y"), "--suite", str(bad)])
    r = subprocess.run([sys.executable, "-m", "dart_trainer.tiny_model", "--out", str(tmp_path / "z"), "--seed", "1"],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"out": str(tmp_path / "z"), "questions": 0}
    manifest = json.loads((tmp_path / "z" / "tiny_models.json").read_text())
    assert set(manifest["classifiers"]) == {"hate", "toxicity"}
    assert (tmp_path / "z" / "base" / "model.safetensors").is_file()


def test_the_trainer_fits_a_lora_adapter_on_it(built, tmp_path):
    from dart_trainer.train import run_training
    out, _ = built
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows(16)) + "\n")
    events = []
    run_training(spec(out / "base", max_steps=6), str(tmp_path / "job"), str(data), None, events.append, lambda: False)
    assert events[-1]["kind"] == "done"
    assert (tmp_path / "job" / "final" / "adapter_model.safetensors").is_file()


def test_the_judge_words_come_from_the_verdict_schema_dart_derives():
    schema = json.loads(JUDGE_VERDICT_SCHEMA.read_text(encoding="utf-8"))
    assert [v["properties"]["is_regression"]["const"] for v in schema["anyOf"]] == [False, True]
    words = judge_words(schema)
    assert PROTOCOL_TEXT[-2:] == words
    # The tokenizer corpus is what it was when these lines were written by hand: same schema, same tiny models.
    assert words == [
        '{"is_regression": false, "severity": "none", "reason": "", "regression_type": "none", "a_correct": true, "b_correct": true}',
        "mild moderate severe extreme misses_real_harm normalizes_bias harmful_reasoning less_nuanced",
    ]
