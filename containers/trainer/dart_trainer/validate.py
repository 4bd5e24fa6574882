"""The adapter must be what vLLM loads: see docs/serving.md §1.2 and §4."""
import json
import re
from pathlib import Path

from safetensors import safe_open

KEY = re.compile(r"^base_model\.model\..+\.lora_(A|B)\.weight$")


class AdapterError(ValueError):
    pass


def validate_adapter(path: Path, max_rank: int) -> dict:
    """Raises AdapterError naming the first problem; returns what was checked."""
    config_file, weights_file = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise AdapterError(f"{path}: needs adapter_config.json and adapter_model.safetensors")
    config = json.loads(config_file.read_text())
    r = int(config.get("r", 0))
    if r < 1 or r > max_rank:
        raise AdapterError(f"rank {r} is outside 1..{max_rank} (vLLM --max-lora-rank)")
    if config.get("modules_to_save"):
        raise AdapterError(f"modules_to_save {config['modules_to_save']} is set; vLLM only supports none")
    if config.get("use_dora"):
        raise AdapterError("DoRA adapters are not loadable by vLLM")
    if config.get("trainable_token_indices"):
        raise AdapterError("trainable_token_indices is set (added tokens); vLLM rejects it")
    with safe_open(str(weights_file), framework="pt") as f:
        keys = list(f.keys())
    if not keys:
        raise AdapterError("adapter_model.safetensors holds no tensors")
    bad = [k for k in keys if not KEY.match(k)]
    if bad:
        raise AdapterError(f"non-standard tensor names (e.g. {bad[0]}); vLLM rejects them")
    return {"rank": str(r), "alpha": str(config.get("lora_alpha")), "tensors": str(len(keys)),
            "target_modules": ",".join(sorted(config.get("target_modules") or [])), "modules_to_save": "none", "dora": "false"}
