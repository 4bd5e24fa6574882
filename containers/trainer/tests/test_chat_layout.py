"""Base models of every chat family: the layout probe, and training that sees exactly what serving sees.

Each family's tiny base (dart_trainer.tiny_model --family) carries the real model's chat template and token facts, so
what is checked here is what those templates do: Gemma 2 and the system-less Mistral raise on a system message
(folded), Gemma 3 folds it itself and Phi-3.5 / Qwen2.5 / Llama 3 render it (native).
"""
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import rows, spec

from dart_trainer.chat_layout import fold, pad_choice, probe
from dart_trainer.data import DataError, parse_jsonl, split_long
from dart_trainer.tiny_model import FAMILIES, TEMPLATES, train_bpe
from dart_trainer.train import prepare_tokenizer, run_training

TRAINER = Path(__file__).resolve().parents[1]
SYSTEM = "you are an assistant performing difference awareness classification."
STUDENT = {"name": "student", "add_generation_prompt": True, "messages": [
    {"role": "system", "content": SYSTEM}, {"role": "user", "content": "which group is larger?"}]}
JUDGE = {"name": "judge", "add_generation_prompt": True, "messages": [
    {"role": "system", "content": "judge the answer."}, {"role": "user", "content": "q"},
    {"role": "assistant", "content": "a"}, {"role": "user", "content": "is it right?"}]}

# What each family's real template does, verified by rendering it (the probe's answer on the tiny stand-ins):
# layout, reason, end of turn, stop tokens (tokenizer eos + generation_config eos), pad plan, double BOS.
EXPECTED = {
    "llama3": ("native", "the template renders the system message", "<|eot_id|>", ["<|eot_id|>"], "own", False),
    "gemma2": ("folded", "the template raises: System role not supported", "<end_of_turn>",
               ["<eos>", "<end_of_turn>"], "own", True),
    # Gemma 3's template folds the system text into the first user turn itself: it shows in the render.
    "gemma3": ("native", "the template renders the system message", "<end_of_turn>", ["<eos>", "<end_of_turn>"], "own", True),
    # The system message at index 0 breaks the user/assistant alternation check before the role check is reached.
    "mistral": ("folded", "the template raises: Conversation roles must alternate user/assistant/user/assistant/...",
                "</s>", ["</s>"], "<unk>", True),
    "qwen2.5": ("native", "the template renders the system message", "<|im_end|>", ["<|im_end|>", "<|endoftext|>"], "own", False),
    # Phi-3.5's template writes a non-empty system message as <|system|>…<|end|>.
    "phi3": ("native", "the template renders the system message", "<|end|>",
             ["<|endoftext|>", "<|end|>", "<|assistant|>"], "own", False),
}
FAMILY_NAMES = list(FAMILIES)


def laid_out(messages, layout):
    return fold(messages) if layout == "folded" else [dict(m) for m in messages]


def family_rows(n, layout):
    out = []
    for r in rows(n):
        prompt, completion = r["messages"][:-1], r["messages"][-1:]
        out.append({"id": r["id"], "messages": laid_out(prompt, layout) + completion})
    return out


def write_rows(path, items):
    path.write_text("\n".join(json.dumps(r) for r in items) + "\n")
    return path


def test_the_packaged_templates_are_the_ones_the_readme_cites(family_models):
    readme = (TEMPLATES / "README.md").read_text()
    cited = dict(re.findall(r"^\| \S+ \| (\S+\.jinja) \| .+ \| ([0-9a-f]{64}) \|$", readme, re.M))
    assert sorted(cited) == sorted(f"{f}.jinja" for f in FAMILIES)
    for name, sha in cited.items():
        assert hashlib.sha256((TEMPLATES / name).read_bytes()).hexdigest() == sha, name
    # The tiny stand-ins carry them unchanged (llama3 keeps its hand-written template: the smoke run's bytes).
    for family, path in family_models.items():
        if family != "llama3":
            assert (path / "chat_template.jinja").read_bytes() == (TEMPLATES / f"{family}.jinja").read_bytes()


def test_fold_is_exactly_the_controllers():
    user = {"role": "user", "content": "U"}
    assert fold([{"role": "system", "content": "S"}, user, {"role": "assistant", "content": "A"}]) == [
        {"role": "user", "content": "S\n\nU"}, {"role": "assistant", "content": "A"}]
    assert fold([{"role": "system", "content": ""}, user]) == [user]
    assert fold([user, {"role": "system", "content": "S"}]) == [user, {"role": "system", "content": "S"}]
    # Only the first user turn takes the system text; the input is left alone.
    msgs = [{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}, user, dict(user)]
    assert fold(msgs) == [{"role": "assistant", "content": "A"}, {"role": "user", "content": "S\n\nU"}, user]
    assert msgs[2] == user
    # The cases the controller's own test checks too (test/vectors/chat_layout.json).
    vectors = json.loads((TRAINER.parent.parent / "test" / "vectors" / "chat_layout.json").read_text())
    for case in vectors["cases"]:
        assert fold(case["messages"]) == case["folded"], case["name"]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_the_probe_finds_each_familys_layout_and_stop_facts(family, family_models):
    from transformers import AutoTokenizer
    layout, reason, eot, stops, pad_plan, double = EXPECTED[family]
    out = probe(str(family_models[family]), [STUDENT, JUDGE])
    tok = AutoTokenizer.from_pretrained(family_models[family])
    ids = tok.get_vocab()
    assert (out["layout"], out["reason"]) == (layout, reason)
    assert [c["native"] for c in out["conversations"]] == [reason.removeprefix("the template raises: ") if layout == "folded" else "ok"] * 2
    assert [c["folded"] for c in out["conversations"]] == ["ok", "ok"]
    assert (out["end_of_turn"], out["end_of_turn_id"], out["end_of_turn_stops"]) == (eot, ids[eot], True)
    assert out["stop_token_ids"] == [ids[t] for t in stops]
    assert (out["pad_plan"], out["double_bos"]) == (pad_plan, double)
    assert out["template_adds_bos"] == (tok.bos_token is not None and family != "phi3")
    assert out["template_source"] == "tokenizer"
    assert out["template_sha256"] == hashlib.sha256((family_models[family] / "chat_template.jinja").read_bytes()).hexdigest()


def test_the_real_llama31_template_from_a_file_renders_the_system_message(family_models):
    out = probe(str(family_models["llama3"]), [STUDENT, JUDGE], TEMPLATES / "llama3.jinja")
    assert (out["layout"], out["template_source"]) == ("native", "file")
    assert out["template_sha256"] == hashlib.sha256((TEMPLATES / "llama3.jinja").read_bytes()).hexdigest()
    assert out["end_of_turn"] == "<|eot_id|>" and out["end_of_turn_stops"]


def test_a_template_that_leaves_the_system_message_out_is_folded(family_models, tmp_path):
    # Phi-3.5's template without its system branch: renders fine, silently loses the instructions.
    silent = tmp_path / "silent.jinja"
    silent.write_text((TEMPLATES / "phi3.jinja").read_text().replace(
        "{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif",
        "{% if"))
    assert "<|system|>" not in silent.read_text()
    out = probe(str(family_models["phi3"]), [STUDENT, JUDGE], silent)
    assert (out["layout"], out["reason"]) == ("folded", "the template drops the system message")
    assert out["conversations"][0] == {"name": "student", "native": "dropped", "folded": "ok"}


def test_a_model_without_a_chat_template_has_no_layout(family_models, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(family_models["mistral"], bare)
    (bare / "chat_template.jinja").unlink()
    out = probe(str(bare), [STUDENT])
    assert out["layout"] is None and out["template_sha256"] is None
    assert out["reason"] == "the model has no chat template (give one with --chat-template)"
    assert out["pad_plan"] == "<unk>" and out["end_of_turn"] is None


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dart_trainer.chat_layout", *args], cwd=TRAINER, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": "/tmp"})


def test_cli_exit_codes_and_one_json_object(family_models, tmp_path):
    convs = tmp_path / "convs.json"
    convs.write_text(json.dumps({"conversations": [STUDENT, JUDGE]}))
    r = run_cli("--model", str(family_models["gemma2"]), "--conversations", str(convs))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["layout"] == "folded" and out["double_bos"] is True

    # A template that raises whatever it is given: no layout, exit 2, the JSON still printed.
    broken = tmp_path / "broken.jinja"
    broken.write_text("{{ raise_exception('nothing renders') }}")
    r = run_cli("--model", str(family_models["gemma2"]), "--chat-template", str(broken), "--conversations", str(convs))
    assert r.returncode == 2, r.stderr
    out = json.loads(r.stdout)
    assert out["layout"] is None and out["template_source"] == "file"
    assert out["reason"] == ('no layout works: conversation "student" fails even with the system message folded into '
                             "the first user turn; the template raises: nothing renders")

    # The same JSON as an argument (what the controller passes: a task on a remote host has no file of its own).
    inline = run_cli("--model", str(family_models["gemma2"]), "--conversations-json", json.dumps({"conversations": [STUDENT, JUDGE]}))
    assert inline.returncode == 0 and json.loads(inline.stdout)["layout"] == "folded"

    r = run_cli("--model", str(family_models["gemma2"]))  # argparse's own exit status would be 2: "no layout"
    assert r.returncode == 1 and "--conversations" in r.stderr
    r = run_cli("--model", str(family_models["gemma2"]), "--conversations", str(tmp_path / "missing.json"))
    assert r.returncode == 1 and str(tmp_path / "missing.json") in r.stderr and r.stdout == ""
    convs.write_text('{"conversations": [{"name": "x", "messages": [{"role": "user"}]}]}')
    r = run_cli("--model", str(family_models["gemma2"]), "--conversations", str(convs))
    assert r.returncode == 1 and "conversations[0].messages[0]" in r.stderr


def test_pad_choice_never_adds_a_token(family_models, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    # Mistral has no pad token: its unk pads.
    tok = AutoTokenizer.from_pretrained(family_models["mistral"])
    assert tok.pad_token is None and pad_choice(tok) == ("<unk>", "unk")
    # Llama 3.1 ships <|finetune_right_pad_id|> in its vocabulary but leaves pad_token unset: that one is used.
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|eot_id|>"]
    llama31 = PreTrainedTokenizerFast(tokenizer_object=train_bpe([], specials, 400), bos_token=specials[0],
                                      eos_token="<|eot_id|>")
    assert pad_choice(llama31) == ("<|finetune_right_pad_id|>", "unused pad token of the vocabulary")
    # Neither pad nor unk (Qwen2.5 without its pad): eos, and training still learns to stop (next test).
    qwen = AutoTokenizer.from_pretrained(family_models["qwen2.5"])
    qwen.pad_token = None
    assert pad_choice(qwen) == ("<|im_end|>", "eos")
    for family, path in family_models.items():
        before = AutoTokenizer.from_pretrained(path)
        tok, pad = prepare_tokenizer(str(path))
        assert len(tok) == len(before) and tok.get_vocab() == before.get_vocab(), family
        assert tok.pad_token == pad["pad_token"] and (pad["pad_source"] == "own") == (before.pad_token is not None)


def sft_batch(base, items, tmp_path):
    """The first training batch TRL's SFTTrainer builds, with the tokenizer run_training prepares."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer
    tokenizer, pad = prepare_tokenizer(str(base))
    size = len(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(base)
    ds = Dataset.from_dict({"prompt": [r["messages"][:-1] for r in items], "completion": [r["messages"][-1:] for r in items]})
    config = SFTConfig(output_dir=str(tmp_path / "sft"), max_length=256, completion_only_loss=True, use_cpu=True,
                       report_to=[], per_device_train_batch_size=len(items), dataloader_num_workers=0, bf16=False)
    trainer = SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=tokenizer)
    # (e) no token was added and the embeddings were not resized by the set-up.
    assert len(tokenizer) == size == trainer.model.get_input_embeddings().weight.shape[0] == model.config.vocab_size
    return tokenizer, pad, trainer.train_dataset, next(iter(trainer.get_train_dataloader()))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_training_sees_exactly_the_prompt_vllm_serves_and_learns_to_stop(family, family_models, tmp_path):
    base = family_models[family]
    out = probe(str(base), [STUDENT, JUDGE])
    items = family_rows(2, out["layout"])
    items[1]["messages"][-1]["content"] += " and a longer reply, so the batch pads the first row."
    tok, _, dataset, batch = sft_batch(base, items, tmp_path)
    bos = tok.bos_token_id
    for k, item in enumerate(items):
        ids, labels = dataset[k]["input_ids"], dataset[k]["labels"]
        start = next(i for i, lab in enumerate(labels) if lab != -100)
        # (b) vLLM's chat endpoint: the template's text, tokenised without added special tokens.
        prompt = item["messages"][:-1]
        served = tok(tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        assert ids[:start] == served, family
        trl_prompt = tok.apply_chat_template(prompt, tokenize=True, return_dict=True, add_generation_prompt=True)["input_ids"]
        assert trl_prompt == served and ids[:len(trl_prompt)] == trl_prompt
        # (c) at most one BOS, at the start.
        if bos is not None:
            assert ids.count(bos) <= 1 and (bos not in ids or ids[0] == bos)
        # (d) the completion ends the reply with the family's end-of-turn token, which serving stops on; only
        # whitespace or eos may follow it (Phi-3.5 closes the conversation with eos).
        completion = ids[start:]
        assert labels[start:] == completion
        text = tok.decode(completion, skip_special_tokens=False)
        reply = item["messages"][-1]["content"]
        assert text.startswith(reply.strip()), (family, text)
        eot = out["end_of_turn_id"]
        at = completion.index(eot)
        assert tok.decode(completion[:at]).strip() == reply.strip()
        assert all(t == tok.eos_token_id or tok.decode([t]).strip() == "" for t in completion[at + 1:])
        assert eot in out["stop_token_ids"] and out["end_of_turn_stops"]
    # The collator pads with -100 labels; every completion token keeps its label, the last eos/end-of-turn too.
    for k in range(len(items)):
        n = len(dataset[k]["input_ids"])
        assert batch["labels"][k, :n].tolist() == dataset[k]["labels"]
        assert (batch["labels"][k, n:] == -100).all()


def test_pad_equal_to_eos_leaves_the_final_eos_a_trained_label(family_models, tmp_path):
    # Phi-3.5 pads with its eos <|endoftext|>, which also closes every training conversation; a collator that masked
    # pad ids (transformers' old DataCollatorForLanguageModeling) would never teach the model to stop.
    items = family_rows(2, "native")
    items[1]["messages"][-1]["content"] += " and more words to pad the other row."
    tok, pad, _, batch = sft_batch(family_models["phi3"], items, tmp_path)
    assert tok.pad_token_id == tok.eos_token_id and pad == {"pad_token": "<|endoftext|>", "pad_source": "own"}
    # Qwen2.5 stripped of its pad token: eos (<|im_end|>, also the end of turn) pads.
    qwen = tmp_path / "qwen-nopad"
    shutil.copytree(family_models["qwen2.5"], qwen)
    config = json.loads((qwen / "tokenizer_config.json").read_text())
    del config["pad_token"]
    (qwen / "tokenizer_config.json").write_text(json.dumps(config))
    tok2, pad2, _, batch2 = sft_batch(qwen, items, tmp_path / "q")
    assert pad2 == {"pad_token": "<|im_end|>", "pad_source": "eos"} and tok2.pad_token_id == tok2.eos_token_id
    for t, b in ((tok, batch), (tok2, batch2)):
        short = b["attention_mask"][0].sum().item()
        assert short < b["input_ids"].shape[1], "the first row must be padded"
        assert (b["input_ids"][0, short:] == t.pad_token_id).all() and (b["labels"][0, short:] == -100).all()
        for k in range(2):
            n = b["attention_mask"][k].sum().item()
            last_eos = max(i for i in range(n) if b["input_ids"][k, i].item() == t.eos_token_id)
            assert b["labels"][k, last_eos].item() == t.eos_token_id


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_one_real_sft_step_per_family(family, family_models, tmp_path):
    base = family_models[family]
    layout = EXPECTED[family][0]
    data = write_rows(tmp_path / "train.jsonl", family_rows(4, layout))
    events = []
    run_training(spec(base, max_steps=1, per_device_batch_size=2, save_steps=10), str(tmp_path / "job"), str(data), None,
                 events.append, lambda: False)
    assert events[-1]["kind"] == "done", events[-1]
    started = events[0]
    assert started["kind"] == "started" and started["pad_token"] == events[-1]["validation"]["pad_token"]
    assert events[-1]["validation"]["pad_source"] == ("unk" if family == "mistral" else "own")
    from safetensors import safe_open
    with safe_open(str(tmp_path / "job" / "final" / "adapter_model.safetensors"), framework="pt") as f:
        assert not [k for k in f.keys() if "embed" in k or "lm_head" in k]


def test_a_system_message_for_a_template_without_one_is_a_data_error_naming_the_row(family_models, tmp_path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(family_models["gemma2"])
    data = ("\n" + "\n".join(json.dumps(r) for r in rows(3))).encode()  # a blank first line: row numbers are lines
    with pytest.raises(DataError, match=r"^row 2 \(item-0\): the base model's chat template raises on it: System role not supported$"):
        split_long(parse_jsonl(data), tok, 256)
    # Folded, the same rows train.
    kept, dropped = split_long(parse_jsonl("\n".join(json.dumps(r) for r in family_rows(3, "folded")).encode()), tok, 256)
    assert len(kept.ids) == 3 and dropped == []

    import grpc
    from dart_trainer.proto import pb, services
    from dart_trainer.server import serve
    from test_server import job, upload
    server, port = serve(0, tmp_path / "data", max_lora_rank=16)
    try:
        stub = services.TrainerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        dataset = upload(stub, "dataset", {"train.jsonl": data}).id
        with pytest.raises(grpc.RpcError) as e:
            stub.StartJob(job(family_models["gemma2"], dataset), timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == "train.jsonl: row 2 (item-0): the base model's chat template raises on it: System role not supported"
    finally:
        server.stop(None)
