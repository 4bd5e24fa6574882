"""gRPC front of the trainer: moves messages only; the work lives in jobs.py and train.py."""
import argparse
import hashlib
import math
import os
import sys
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import PROTOCOL, __version__
from .jobs import JobError, JobManager
from .proto import pb, services

CHUNK = 64 * 1024


def _abort(context, e: JobError):
    context.abort(getattr(grpc.StatusCode, e.code), str(e))


def _device() -> str:
    import torch
    return f"cuda:0 ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def _driver_version() -> str:
    """The NVIDIA driver's version as nvidia-smi reports it, or a phrase saying why there is none."""
    import shutil
    import subprocess
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi in the container (the NVIDIA container toolkit did not inject the driver)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi failed: {e}"
    return f"driver {out.stdout.strip().splitlines()[0]}" if out.returncode == 0 and out.stdout.strip() \
        else f"nvidia-smi failed: {(out.stderr or out.stdout).strip()[:300]}"


def cuda_problem() -> str | None:
    """Why this process cannot train on CUDA (torch build, driver, devices), or None when it can."""
    import torch
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    try:
        torch.cuda.init()  # raises with the real reason ("driver too old", "no device") that is_available() hides
    except Exception as e:  # noqa: BLE001 — any failure here is the answer
        return f"CUDA did not initialise: {e} (torch {torch.__version__} built for CUDA {torch.version.cuda}; {_driver_version()})"
    if torch.cuda.device_count() == 0:
        return f"no CUDA device is visible (torch built for CUDA {torch.version.cuda}; {_driver_version()})"
    return None


def _in_hf_cache(repo_id: str) -> bool:
    """Whether a hub model's config.json is in the local HF cache (what loading it offline needs first)."""
    from huggingface_hub import try_to_load_from_cache
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 — an id the library refuses is simply not there
        return False


def _event_message(e: dict):
    kind = e["kind"]
    if kind == "started":
        return pb.JobEvent(seq=e["seq"], started=pb.Started(total_steps=e["total_steps"], start_step=e["start_step"], device=e["device"],
                                                            world_size=e.get("world_size", 1)))
    if kind == "step":
        return pb.JobEvent(seq=e["seq"], step=pb.Step(**{k: e[k] for k in ("step", "total_steps", "loss", "learning_rate", "tokens_per_second", "eta_seconds", "epoch")}))
    if kind == "checkpoint":
        return pb.JobEvent(seq=e["seq"], checkpoint=pb.Checkpoint(step=e["step"], path=e["path"]))
    if kind == "evaluated":
        return pb.JobEvent(seq=e["seq"], evaluated=pb.Evaluated(step=e["step"], eval_loss=e["eval_loss"]))
    if kind == "done":
        files = [pb.FileHeader(path=f["path"], size=f["size"], sha256=f["sha256"]) for f in e["files"]]
        best = e["best_eval_loss"]
        return pb.JobEvent(seq=e["seq"], done=pb.Done(global_step=e["global_step"], train_loss=e["train_loss"],
                                                      best_eval_loss=0.0 if best is None or math.isnan(best) else best,
                                                      files=files, validation=e["validation"]))
    return pb.JobEvent(seq=e["seq"], failed=pb.Failed(code=e["code"], message=e["message"]))


def _check_base(base: str) -> None:
    """The base model is where the trainer can read it: a model folder, or a hub id in the HF cache when offline."""
    if os.path.isdir(base):
        if not (Path(base) / "config.json").is_file():
            raise JobError("INVALID_ARGUMENT", f"base model {base}: no config.json there")
    elif base.startswith("/") or base.startswith("."):
        raise JobError("INVALID_ARGUMENT", f"unknown base model path {base}")
    elif os.environ.get("HF_HUB_OFFLINE") == "1" and not _in_hf_cache(base):
        # dart fetches hub models into the host's HF cache before the trainer starts; offline, that is all there is.
        raise JobError("FAILED_PRECONDITION", f"base model {base} is not in this host's HF cache "
                                              f"({os.environ.get('HF_HOME') or '~/.cache/huggingface'}): dart fetches it before training; "
                                              "a trainer started by hand needs it fetched first (huggingface-cli download)")


class Trainer(services.TrainerServicer):
    def __init__(self, jobs: JobManager, max_lora_rank: int):
        self.jobs = jobs
        self.max_lora_rank = max_lora_rank

    def GetVersion(self, request, context):
        import peft
        import torch
        import transformers
        import trl
        libs = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                "trl": trl.__version__, "grpcio": grpc.__version__, "python": sys.version.split()[0]}
        return pb.VersionReply(protocol=PROTOCOL, server_version=__version__, libraries=libs, device=_device(), max_lora_rank=self.max_lora_rank)

    def Upload(self, request_iterator, context):
        kind, files, current, digest, expected = None, {}, None, None, None
        try:
            def close_file():
                if current is None:
                    return
                data = b"".join(files[current])
                if len(data) != expected.size or hashlib.sha256(data).hexdigest() != expected.sha256:
                    raise JobError("DATA_LOSS", f"{current}: got {len(data)} bytes with sha256 {hashlib.sha256(data).hexdigest()[:12]}…, "
                                               f"expected {expected.size} bytes with {expected.sha256[:12]}…")
                files[current] = data
            for chunk in request_iterator:
                part = chunk.WhichOneof("part")
                if part == "header":
                    kind = chunk.header.kind
                elif part == "file":
                    close_file()
                    name = chunk.file.path
                    if kind is None or not name or "/" in name or name.startswith("."):
                        raise JobError("INVALID_ARGUMENT", f'bad upload: header first, then plain file names (got "{name}")')
                    current, expected = name, chunk.file
                    files[name] = []
                elif part == "data":
                    if current is None:
                        raise JobError("INVALID_ARGUMENT", "data before a file header")
                    files[current].append(chunk.data)
            close_file()
            if kind is None:
                raise JobError("INVALID_ARGUMENT", "empty upload")
            upload_id, rows = self.jobs.store_upload(kind, files)
        except JobError as e:
            _abort(context, e)
        headers = [pb.FileHeader(path=n, size=len(d), sha256=hashlib.sha256(d).hexdigest()) for n, d in sorted(files.items())]
        return pb.UploadReply(id=upload_id, files=headers, rows=rows)

    def ProbeChatTemplate(self, request, context):
        """The layout the base model's template takes (dart_trainer.chat_layout), for a controller without another
        way to render it (a trainer given as an endpoint)."""
        import json

        from .chat_layout import UsageError, load_conversations, probe
        try:
            _check_base(request.base_model)
        except JobError as e:
            _abort(context, e)
        try:
            conversations = load_conversations(None, request.conversations_json)
            result = probe(request.base_model, conversations)
        except UsageError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception as e:  # no such model folder, not in the HF cache, an unreadable tokenizer
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"base model {request.base_model}: {e}")
        return pb.ProbeChatTemplateReply(result_json=json.dumps(result))

    def StartJob(self, request, context):
        try:
            spec = self._spec(request)
            from .data import DataError, parse_jsonl, split_long
            dataset = self.jobs.upload_dir(request.dataset_id, "dataset") / "train.jsonl"
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(spec["base_model"])
            if not tokenizer.chat_template:
                raise JobError("FAILED_PRECONDITION", f"base model {spec['base_model']} has no chat template; DART trains with the template vLLM will render")
            try:
                rows, dropped = split_long(parse_jsonl(dataset.read_bytes()), tokenizer, spec["max_length"])
            except DataError as e:  # e.g. a system message for a template without a system role: the row, not a trace
                raise JobError("INVALID_ARGUMENT", f"train.jsonl: {e}") from e
            if not rows.ids:
                raise JobError("INVALID_ARGUMENT", f"every row is longer than max_length {spec['max_length']}")
            n_eval = int(len(rows.ids) * spec["eval_fraction"]) if spec["eval_fraction"] > 0 else 0
            job, resumed, step = self.jobs.start(spec, request.dataset_id, request.init_adapter_id, request.job_id)
        except JobError as e:
            _abort(context, e)
        return pb.StartJobReply(job_id=job.job_id, resumed=resumed, resumed_from_step=step, train_rows=len(rows.ids) - n_eval,
                                eval_rows=n_eval, dropped_too_long=len(dropped), dropped_ids=dropped)

    def _spec(self, r) -> dict:
        if not r.job_id or "/" in r.job_id or r.job_id.startswith("."):
            raise JobError("INVALID_ARGUMENT", "job_id must be a plain name")
        base = r.base_model
        _check_base(base)
        if r.lora.r < 1 or r.lora.r > self.max_lora_rank:
            raise JobError("INVALID_ARGUMENT", f"LoRA rank {r.lora.r} is outside 1..{self.max_lora_rank} (the configured max_lora_rank)")
        if not r.lora.target_modules:
            raise JobError("INVALID_ARGUMENT", "lora.target_modules is empty")
        if r.qlora.enabled:
            import torch
            if not torch.cuda.is_available():
                raise JobError("FAILED_PRECONDITION", "QLoRA (4-bit) needs a CUDA GPU; this trainer runs on CPU")
        wants_bf16 = r.dtype == "bfloat16" or (r.qlora.enabled and (r.qlora.compute_dtype or "bfloat16") == "bfloat16")
        if wants_bf16:
            import torch
            if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
                major, minor = torch.cuda.get_device_capability(0)
                raise JobError("FAILED_PRECONDITION", f"{torch.cuda.get_device_name(0)} (compute capability {major}.{minor}) has no bfloat16: "
                                                      "set model.dtype and training.qlora.compute_dtype to float16")
        processes = max(1, r.processes)
        if processes > 1:
            # Data-parallel (dart_trainer.distributed): one GPU per process; QLoRA too, each rank with its own 4-bit
            # copy on its own GPU (train.py says why the libraries allow it). Without CUDA, gloo, a core per process.
            import torch
            if torch.cuda.is_available():
                if processes > torch.cuda.device_count():
                    raise JobError("INVALID_ARGUMENT", f"{processes} processes need {processes} GPUs (one each); "
                                                       f"this trainer sees {torch.cuda.device_count()}")
            elif processes > (os.cpu_count() or 1):
                raise JobError("INVALID_ARGUMENT", f"{processes} processes on CPU need a core each; this trainer has {os.cpu_count() or 1}")
        if r.max_length < 16 or r.per_device_batch_size < 1 or r.gradient_accumulation_steps < 1 or r.learning_rate <= 0:
            raise JobError("INVALID_ARGUMENT", "max_length >= 16, batch >= 1, gradient accumulation >= 1 and learning rate > 0 are required")
        if r.epochs <= 0 and r.max_steps == 0:
            raise JobError("INVALID_ARGUMENT", "epochs must be > 0 (or max_steps set)")
        return {
            "base_model": base, "dtype": r.dtype or "auto",
            "lora": {"r": r.lora.r, "alpha": r.lora.alpha, "dropout": r.lora.dropout, "target_modules": list(r.lora.target_modules), "bias": r.lora.bias or "none"},
            "qlora": {"enabled": r.qlora.enabled, "quant_type": r.qlora.quant_type or "nf4", "double_quant": r.qlora.double_quant, "compute_dtype": r.qlora.compute_dtype or "bfloat16"},
            "epochs": r.epochs, "learning_rate": r.learning_rate, "per_device_batch_size": r.per_device_batch_size,
            "gradient_accumulation_steps": r.gradient_accumulation_steps, "max_length": r.max_length, "seed": r.seed,
            "lr_scheduler": r.lr_scheduler or "cosine", "warmup_ratio": r.warmup_ratio, "weight_decay": r.weight_decay,
            "eval_fraction": r.eval_fraction, "eval_steps": max(1, r.eval_steps), "save_steps": max(1, r.save_steps),
            "gradient_checkpointing": r.gradient_checkpointing, "max_steps": r.max_steps, "optimizer": r.optimizer or "adamw_torch",
            "max_lora_rank": self.max_lora_rank, "processes": processes,
        }

    def WatchJob(self, request, context):
        try:
            for e in self.jobs.watch(request.job_id, request.after_seq, context.is_active):
                yield _event_message(e)
        except JobError as e:
            _abort(context, e)

    def CancelJob(self, request, context):
        try:
            return pb.CancelJobReply(cancelled=self.jobs.cancel(request.job_id))
        except JobError as e:
            _abort(context, e)

    def DownloadAdapter(self, request, context):
        try:
            files = self.jobs.adapter_files(request.job_id)
        except JobError as e:
            _abort(context, e)
        for path in files:
            data = path.read_bytes()
            yield pb.DownloadChunk(file=pb.FileHeader(path=path.name, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
            for i in range(0, len(data), CHUNK):
                yield pb.DownloadChunk(data=data[i:i + CHUNK])


def serve(port: int, data_dir: Path, max_lora_rank: int, host: str = "127.0.0.1"):
    options = [
        # Long watch streams rely on keepalive; accept the controller's pings (docs/serving.md §5).
        ("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0), ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    services.add_TrainerServicer_to_server(Trainer(JobManager(data_dir, max_lora_rank), max_lora_rank), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("dart.trainer.v1.Trainer", health_pb2.HealthCheckResponse.SERVING)
    return server, bound


def main():
    ap = argparse.ArgumentParser(description="DART trainer sidecar (gRPC)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=50051)
    ap.add_argument("--data-dir", default=os.environ.get("DART_TRAINER_DATA", "/data"))
    ap.add_argument("--max-lora-rank", type=int, default=64)
    a = ap.parse_args()
    if os.environ.get("DART_REQUIRE_CUDA") == "1":
        # Set by dart when the host has GPUs: training an 8B model on this container's CPU would take days.
        problem = cuda_problem()
        if problem is not None:
            print(f"dart trainer: this host was given GPUs but {problem}", file=sys.stderr, flush=True)
            sys.exit(3)
    server, bound = serve(a.port, Path(a.data_dir), a.max_lora_rank, a.host)
    print(f"LISTENING {bound}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
