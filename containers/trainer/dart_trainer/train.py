"""One training job on TRL's SFTTrainer + PEFT. Runs in its own process; talks only through `emit`."""
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

COMPLETE = "COMPLETE"



def stable_target_modules(config_file: Path) -> None:
    """PEFT writes `target_modules` from a set, in an order that changes from process to process: sorted, the same
    training gives the same adapter bytes (and the same content address on the server)."""
    config = json.loads(config_file.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def newest_complete_checkpoint(checkpoints: Path):
    """A checkpoint counts only once its COMPLETE marker exists: a half-written one is never resumed from."""
    best = None
    for d in checkpoints.glob("checkpoint-*"):
        if (d / COMPLETE).is_file():
            step = int(d.name.split("-")[1])
            if best is None or step > best[0]:
                best = (step, d)
    return best


class NoTrainableParameters(RuntimeError):
    pass


def prepare_tokenizer(base_model: str):
    """The base model's tokenizer as training uses it, and the pad token it got. A tokenizer without a pad token gets
    one of its own tokens (chat_layout.pad_choice), never a new one: an added token would resize the embeddings and
    make TRL save them with the adapter, which vLLM refuses (docs/serving.md §4)."""
    from transformers import AutoTokenizer

    from .chat_layout import pad_choice

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    token, source = pad_choice(tokenizer)
    if source != "own":
        size = len(tokenizer)
        tokenizer.pad_token = token
        if len(tokenizer) != size:
            raise RuntimeError(f"setting the pad token {token!r} added a token to the vocabulary")
    return tokenizer, {"pad_token": token, "pad_source": source}


def run_training(spec: dict, job_dir: str, dataset_file: str, init_adapter: str | None, emit, cancelled) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from .data import parse_jsonl, split_long
    from .validate import validate_adapter

    job = Path(job_dir)
    checkpoints = job / "checkpoints"
    cuda = torch.cuda.is_available()
    device = f"cuda:0 ({torch.cuda.get_device_name(0)})" if cuda else "cpu"
    torch.manual_seed(spec["seed"])
    random.seed(spec["seed"])

    tokenizer, pad = prepare_tokenizer(spec["base_model"])
    rows, _dropped = split_long(parse_jsonl(Path(dataset_file).read_bytes()), tokenizer, spec["max_length"])
    order = list(range(len(rows.ids)))
    random.Random(spec["seed"]).shuffle(order)
    n_eval = int(len(order) * spec["eval_fraction"]) if spec["eval_fraction"] > 0 else 0
    eval_idx, train_idx = sorted(order[:n_eval]), sorted(order[n_eval:])

    def subset(idx):
        return Dataset.from_dict({"prompt": [rows.prompts[i] for i in idx], "completion": [rows.completions[i] for i in idx]})

    train_ds = subset(train_idx)
    eval_ds = subset(eval_idx) if eval_idx else None

    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "auto": "auto"}
    dtype = dtypes[spec["dtype"]]
    if not cuda and dtype in (torch.bfloat16, torch.float16):
        dtype = torch.float32  # half precision training is a GPU thing; CPU runs (tests) stay exact
    quant = None
    if spec["qlora"]["enabled"]:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec["qlora"]["quant_type"],
                                   bnb_4bit_use_double_quant=spec["qlora"]["double_quant"],
                                   bnb_4bit_compute_dtype=dtypes[spec["qlora"]["compute_dtype"]])
    model = AutoModelForCausalLM.from_pretrained(spec["base_model"], dtype=dtype, quantization_config=quant)
    peft_config = None
    if init_adapter:
        if quant is not None:
            # TRL prepares a 4-bit base for training only when it wraps the model itself (peft_config); a PeftModel
            # we load is taken as is, so the k-bit preparation (fp32 norms, input grads) is ours to do.
            from peft import prepare_model_for_kbit_training
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec["gradient_checkpointing"])
        model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    else:
        lora = spec["lora"]
        peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], bias=lora["bias"],
                                 target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM")

    use_eval = eval_ds is not None and len(eval_ds) > 0
    config = SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=spec["epochs"],
        max_steps=spec["max_steps"] if spec["max_steps"] > 0 else -1,
        learning_rate=spec["learning_rate"],
        per_device_train_batch_size=spec["per_device_batch_size"],
        per_device_eval_batch_size=spec["per_device_batch_size"],
        gradient_accumulation_steps=spec["gradient_accumulation_steps"],
        lr_scheduler_type=spec["lr_scheduler"],
        # transformers 5 folds warmup_ratio into warmup_steps: a float in [0, 1) is a ratio of total steps.
        warmup_steps=spec["warmup_ratio"],
        weight_decay=spec["weight_decay"],
        optim=spec["optimizer"],
        max_length=spec["max_length"],
        seed=spec["seed"],
        logging_steps=1,
        save_strategy="steps",
        save_steps=spec["save_steps"],
        eval_strategy="steps" if use_eval else "no",
        eval_steps=spec["eval_steps"] if use_eval else None,
        load_best_model_at_end=use_eval,
        metric_for_best_model="eval_loss" if use_eval else None,
        greater_is_better=False if use_eval else None,
        bf16=cuda and dtype == torch.bfloat16,
        fp16=False,
        use_cpu=not cuda,
        gradient_checkpointing=spec["gradient_checkpointing"],
        completion_only_loss=True,
        packing=False,
        report_to=[],
        dataloader_num_workers=0,
    )

    # Test hook: hold the process after a checkpoint's files are written and before its COMPLETE marker,
    # so a test can SIGKILL it mid-save. Unset in production.
    stall_at = os.environ.get("DART_TRAINER_TEST_STALL_SAVE")

    class Events(TrainerCallback):
        def __init__(self):
            self.t0 = time.time()
            self.start_step = 0
            self.last = (time.time(), 0.0)

        def on_train_begin(self, args, state, control, **kw):
            self.start_step = state.global_step
            self.t0 = time.time()
            # pad_token/pad_source stay in the job's events.jsonl (the gRPC Started message has no field for them).
            emit({"kind": "started", "total_steps": state.max_steps, "start_step": state.global_step, "device": device,
                  **pad})

        def on_step_end(self, args, state, control, **kw):
            if cancelled():
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs:
                return
            now = time.time()
            tokens = float(logs.get("num_tokens", 0.0))
            t_last, tok_last = self.last
            tps = (tokens - tok_last) / (now - t_last) if now > t_last and tokens > tok_last else 0.0
            self.last = (now, tokens)
            done = max(1, state.global_step - self.start_step)
            eta = (now - self.t0) / done * max(0, state.max_steps - state.global_step)
            emit({"kind": "step", "step": state.global_step, "total_steps": state.max_steps, "loss": float(logs["loss"]),
                  "learning_rate": float(logs.get("learning_rate", 0.0)), "tokens_per_second": tps, "eta_seconds": eta,
                  "epoch": float(state.epoch or 0.0)})

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            if metrics and "eval_loss" in metrics:
                emit({"kind": "evaluated", "step": state.global_step, "eval_loss": float(metrics["eval_loss"])})

        def on_save(self, args, state, control, **kw):
            # on_save fires after the checkpoint (model, optimizer, scheduler, RNG, trainer state) is written.
            d = checkpoints / f"checkpoint-{state.global_step}"
            if stall_at is not None and state.global_step == int(stall_at):
                (job / "stalled").write_text(str(state.global_step))
                time.sleep(3600)
            if d.is_dir():
                with open(d / COMPLETE, "w") as f:
                    f.write(json.dumps({"step": state.global_step}))
                    f.flush()
                    os.fsync(f.fileno())
                emit({"kind": "checkpoint", "step": state.global_step, "path": str(d)})

    trainer = SFTTrainer(model=model, args=config, train_dataset=train_ds, eval_dataset=eval_ds if use_eval else None,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=[Events()])
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    if trainable == 0:
        # Some TRL/PEFT combinations (a quantized base, an init adapter) leave everything frozen: the run would
        # "train" for hours and produce the init adapter unchanged.
        raise NoTrainableParameters("no trainable parameters after wrapping the model (LoRA weights are frozen); "
                                    "check lora.target_modules and, with QLoRA, the init adapter")
    resume = newest_complete_checkpoint(checkpoints)
    result = trainer.train(resume_from_checkpoint=str(resume[1]) if resume else None)
    if cancelled():
        emit({"kind": "failed", "code": "cancelled", "message": "cancelled by the client"})
        return

    final = job / "final"
    trainer.model.save_pretrained(str(final), safe_serialization=True)
    stable_target_modules(final / "adapter_config.json")
    checked = validate_adapter(final, spec["max_lora_rank"])
    files = [{"path": p.name, "size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(final.iterdir()) if p.name in ("adapter_config.json", "adapter_model.safetensors")]
    best = trainer.state.best_metric
    emit({"kind": "done", "global_step": trainer.state.global_step, "train_loss": float(result.training_loss),
          "best_eval_loss": float(best) if best is not None and not math.isnan(best) else float("nan"),
          "files": files, "validation": {**checked, "pad_token": pad["pad_token"], "pad_source": pad["pad_source"]}})
