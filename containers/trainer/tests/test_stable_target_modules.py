import json

from dart_trainer.train import stable_target_modules


def test_target_modules_sorted_and_rest_kept(tmp_path):
    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps({"r": 8, "target_modules": ["v_proj", "q_proj", "o_proj", "k_proj"], "lora_alpha": 16}))
    stable_target_modules(config)
    assert json.loads(config.read_text()) == {"r": 8, "target_modules": ["k_proj", "o_proj", "q_proj", "v_proj"], "lora_alpha": 16}
    first = config.read_bytes()
    config.write_text(json.dumps({"lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "r": 8}))
    stable_target_modules(config)
    assert config.read_bytes() == first


def test_a_string_target_is_left_alone(tmp_path):
    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps({"target_modules": "all-linear"}))
    stable_target_modules(config)
    assert json.loads(config.read_text()) == {"target_modules": "all-linear"}
