import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_model import build  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def family_models(tmp_path_factory) -> dict:
    """One tiny base per chat family (dart_trainer.tiny_model --family), built once: family -> folder."""
    from dart_trainer.tiny_model import FAMILIES, build_base
    root = tmp_path_factory.mktemp("families")
    return {f: build_base(root / f, [], 0, f) for f in FAMILIES}


def rows(n: int, start: int = 0):
    out = []
    for i in range(start, start + n):
        label = "yes" if i % 2 == 0 else "no"
        out.append({"id": f"item-{i}", "messages": [
            {"role": "system", "content": "you are an assistant performing difference awareness classification."},
            {"role": "user", "content": f"task: determine whether this prompt requires difference awareness. question {i % 7}: which group is more?"},
            {"role": "assistant", "content": f"the facts differ here. careful reading supports the label {label}.\nconclusion: {label}"},
        ]})
    return out


@pytest.fixture
def dataset_file(tmp_path) -> Path:
    p = tmp_path / "train.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows(48)) + "\n")
    return p


def spec(base: Path, **over):
    s = {
        "base_model": str(base), "dtype": "float32", "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "bias": "none"},
        "qlora": {"enabled": False, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"},
        "epochs": 1.0, "learning_rate": 1e-2, "per_device_batch_size": 4, "gradient_accumulation_steps": 1, "max_length": 256,
        "seed": 42, "lr_scheduler": "constant", "warmup_ratio": 0.0, "weight_decay": 0.0, "eval_fraction": 0.0, "eval_steps": 5,
        "save_steps": 4, "gradient_checkpointing": False, "max_steps": 12, "optimizer": "adamw_torch", "max_lora_rank": 64,
    }
    s.update(over)
    return s
