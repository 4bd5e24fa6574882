"""One training job on TRL's SFTTrainer + PEFT. Runs in its own process; talks only through `emit`."""
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

COMPLETE = "COMPLETE"
# How long a rank waits for the others (process group start, every collective) before it gives up with an error.
# Generous: rank 0 may be writing a checkpoint while the others wait; a crashed rank is caught sooner by torchrun.
DDP_TIMEOUT_S = int(os.environ.get("DART_TRAINER_DDP_TIMEOUT", "600"))


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
    """One rank of a job. One process (today's path) when WORLD_SIZE is unset or 1; under torch.distributed.run
    (dart_trainer.distributed) every rank runs this, data-parallel: `emit` reaches the client from rank 0 only,
    and checkpoints and the final adapter are written once."""
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
    # A rank of K > 1 (torchrun's environment), or the one process: a WORLD_SIZE the server inherited means nothing.
    distributed = spec.get("processes", 1) > 1
    world = int(os.environ["WORLD_SIZE"]) if distributed else 1
    rank = int(os.environ["RANK"]) if distributed else 0
    local_rank = int(os.environ["LOCAL_RANK"]) if distributed else 0
    if distributed:
        import torch.distributed as dist
        from datetime import timedelta
        if cuda:
            torch.cuda.set_device(local_rank)  # one GPU per rank
        # Started here, before the Trainer's own setup (which then reuses it), so the wait for the other ranks is
        # bounded: accelerate passes no timeout to a CPU (gloo) group.
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=DDP_TIMEOUT_S))
    device = f"cuda:{local_rank} ({torch.cuda.get_device_name(local_rank)})" if cuda else "cpu"
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
    placement = {}
    if quant is not None and distributed:
        # QLoRA with several processes: each rank holds its own 4-bit copy, whole on its own GPU. accelerate
        # refuses a 4-bit model only when it is split over devices or sits on another device than the rank's
        # (Accelerator.prepare_model), and TRL's multi-GPU docs load it per process this way; so DDP over
        # quantized replicas is supported, one GPU per rank.
        placement = {"device_map": {"": local_rank}}
    model = AutoModelForCausalLM.from_pretrained(spec["base_model"], dtype=dtype, quantization_config=quant, **placement)
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
    # Data-parallel only: every LoRA weight takes part in every step, so DDP need not search for unused ones.
    ddp = {"ddp_backend": None if cuda else "gloo", "ddp_timeout": DDP_TIMEOUT_S,
           "ddp_find_unused_parameters": False} if distributed else {}
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
        **ddp,
    )

    # Test hook: hold the process after a checkpoint's files are written and before its COMPLETE marker,
    # so a test can SIGKILL it mid-save. Unset in production.
    stall_at = os.environ.get("DART_TRAINER_TEST_STALL_SAVE")
    # Test hook: this rank raises after its first optimizer step, as a crashed rank would. Unset in production.
    crash_rank = os.environ.get("DART_TRAINER_TEST_CRASH_RANK")
    # What this rank did, for ranks.jsonl (proof that K processes trained, each on its share of the data).
    work = {"micro_batches": 0, "samples": 0, "optimizer_steps": 0}

    class Events(TrainerCallback):
        def __init__(self):
            self.t0 = time.time()
            self.start_step = 0
            self.last = (time.time(), 0.0)
            self.cancel_seen = False

        def on_train_begin(self, args, state, control, **kw):
            self.start_step = state.global_step
            self.t0 = time.time()
            # pad_token/pad_source stay in the job's events.jsonl (the gRPC Started message has no field for them).
            emit({"kind": "started", "total_steps": state.max_steps, "start_step": state.global_step, "device": device,
                  "world_size": world, **pad})

        def on_step_end(self, args, state, control, **kw):
            work["optimizer_steps"] += 1
            if crash_rank is not None and int(crash_rank) == rank:
                raise RuntimeError(f"test hook: rank {rank} crashed after step {state.global_step}")
            stop = cancelled()
            if distributed:
                # Every rank stops at the same step, or the ones still training would wait for the others forever.
                flag = torch.tensor([1 if stop else 0], device=args.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
            if stop:
                self.cancel_seen = True
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
            if distributed:
                dist.barrier()  # each rank writes its own RNG state: all of them, before the checkpoint counts
                if rank != 0:
                    return  # the marker and the event, once
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

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, *args, **kw):
            work["micro_batches"] += 1
            work["samples"] += int(inputs["input_ids"].shape[0])
            return super().training_step(model, inputs, *args, **kw)

    events = Events()
    trainer = CountingTrainer(model=model, args=config, train_dataset=train_ds, eval_dataset=eval_ds if use_eval else None,
                              processing_class=tokenizer, peft_config=peft_config, callbacks=[events])
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    if trainable == 0:
        # Some TRL/PEFT combinations (a quantized base, an init adapter) leave everything frozen: the run would
        # "train" for hours and produce the init adapter unchanged.
        raise NoTrainableParameters("no trainable parameters after wrapping the model (LoRA weights are frozen); "
                                    "check lora.target_modules and, with QLoRA, the init adapter")
    resume = newest_complete_checkpoint(checkpoints)
    result = trainer.train(resume_from_checkpoint=str(resume[1]) if resume else None)
    line = {"rank": rank, "world_size": dist.get_world_size() if distributed else 1,
            "backend": dist.get_backend() if distributed else None, "local_rank": local_rank, "pid": os.getpid(),
            "device": device, "start_step": events.start_step, "global_step": trainer.state.global_step,
            "cancelled": events.cancel_seen, **work}
    with open(job / "ranks.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    if rank != 0:
        return  # the adapter and the outcome are rank 0's to write and report
    if events.cancel_seen or cancelled():
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
