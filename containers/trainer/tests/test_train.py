import json

import pytest
from conftest import spec
from dart_trainer.train import run_training
from dart_trainer.validate import AdapterError, validate_adapter


def train(tmp_path, base, dataset, **over):
    events = []
    run_training(spec(base, **over), str(tmp_path / "job"), str(dataset), None, events.append, lambda: False)
    return events


def test_loss_goes_down_and_the_adapter_is_vllm_loadable(tmp_path, tiny_model, dataset_file):
    events = train(tmp_path, tiny_model, dataset_file, max_steps=24)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done"
    losses = [e["loss"] for e in events if e["kind"] == "step"]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 * 0.8
    final = tmp_path / "job" / "final"
    checked = validate_adapter(final, max_rank=64)
    assert checked["rank"] == "8" and checked["modules_to_save"] == "none"
    config = json.loads((final / "adapter_config.json").read_text())
    assert not config.get("modules_to_save") and not config.get("use_dora")
    assert [f["path"] for f in events[-1]["files"]] == ["adapter_config.json", "adapter_model.safetensors"]

    # It reloads with PEFT on the base model, and differs from the base.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.tensor([[1, 10, 20, 30]])
    before = base(ids).logits.detach().clone()
    tuned = PeftModel.from_pretrained(base, final)
    assert not torch.allclose(before, tuned(ids).logits)


def test_continues_from_an_init_adapter_which_stays_trainable(tmp_path, tiny_model, dataset_file):
    train(tmp_path / "a", tiny_model, dataset_file, max_steps=4)
    init = tmp_path / "a" / "job" / "final"
    events = []
    run_training(spec(tiny_model, max_steps=4), str(tmp_path / "b"), str(dataset_file), str(init), events.append, lambda: False)
    assert events[-1]["kind"] == "done"
    from safetensors.torch import load_file
    a = load_file(init / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert any(not (a[k] == b[k]).all() for k in a)


def test_validation_rejects_what_vllm_rejects(tmp_path, tiny_model, dataset_file):
    train(tmp_path, tiny_model, dataset_file, max_steps=1)
    final = tmp_path / "job" / "final"
    with pytest.raises(AdapterError, match="rank 8 is outside 1..4"):
        validate_adapter(final, max_rank=4)
    config = json.loads((final / "adapter_config.json").read_text())
    (final / "adapter_config.json").write_text(json.dumps({**config, "modules_to_save": ["lm_head"]}))
    with pytest.raises(AdapterError, match="modules_to_save"):
        validate_adapter(final, max_rank=64)
    (final / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(AdapterError, match="DoRA"):
        validate_adapter(final, max_rank=64)
