"""Uploads and jobs on disk; each job trains in its own process and reports through a queue."""
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .data import DataError, parse_jsonl
from .train import newest_complete_checkpoint, run_training


class JobError(Exception):
    """`code` is the gRPC status name the server answers with."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _child(spec, job_dir, dataset, init_adapter, queue, cancel):
    # The job's own log (progress bars, library warnings) goes to its folder, not the server's console.
    log = os.open(os.path.join(job_dir, "train.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        if spec.get("processes", 1) > 1:
            from .distributed import launch  # K ranks under torch.distributed.run; this process forwards their events
            launch(spec, job_dir, dataset, init_adapter, queue, cancel)
        else:
            run_training(spec, job_dir, dataset, init_adapter, queue.put, cancel.is_set)
    except BaseException as e:  # reported to the client as a Failed event, never a silent death
        queue.put({"kind": "failed", "code": "internal", "message": f"{type(e).__name__}: {e}"})


def _read_events(path: Path) -> list:
    """A job's recorded events; a torn last line (the server was killed mid-append) is cut off, so new events
    start on a line of their own."""
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    return [json.loads(line) for line in complete.decode().splitlines() if line.strip()]


@dataclass
class Job:
    job_id: str
    directory: Path
    events: list = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    process: object = None
    cancel: object = None
    finished: bool = False


class JobManager:
    def __init__(self, data_dir: Path, max_lora_rank: int):
        self.data_dir = data_dir
        self.max_lora_rank = max_lora_rank
        self.ctx = mp.get_context("spawn")
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        (data_dir / "uploads").mkdir(parents=True, exist_ok=True)
        (data_dir / "jobs").mkdir(parents=True, exist_ok=True)

    # --- uploads -------------------------------------------------------------------------
    def store_upload(self, kind: str, files: dict[str, bytes]) -> tuple[str, int]:
        if kind not in ("dataset", "adapter"):
            raise JobError("INVALID_ARGUMENT", f'upload kind must be "dataset" or "adapter", got "{kind}"')
        rows = 0
        if kind == "dataset":
            if set(files) != {"train.jsonl"}:
                raise JobError("INVALID_ARGUMENT", "a dataset upload is one file, train.jsonl")
            try:
                rows = len(parse_jsonl(files["train.jsonl"]).ids)
            except DataError as e:
                raise JobError("INVALID_ARGUMENT", f"train.jsonl: {e}") from e
        elif not {"adapter_config.json", "adapter_model.safetensors"} <= set(files):
            raise JobError("INVALID_ARGUMENT", "an adapter upload needs adapter_config.json and adapter_model.safetensors")
        digest = hashlib.sha256()
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        upload_id = f"{kind}-{digest.hexdigest()[:24]}"
        target = self.data_dir / "uploads" / upload_id
        if not target.is_dir():
            tmp = self.data_dir / "uploads" / f".{upload_id}.{uuid.uuid4().hex}"
            tmp.mkdir()
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            tmp.rename(target)
        return upload_id, rows

    def upload_dir(self, upload_id: str, kind: str) -> Path:
        path = self.data_dir / "uploads" / upload_id
        if not upload_id.startswith(f"{kind}-") or not path.is_dir():
            raise JobError("NOT_FOUND", f'no uploaded {kind} "{upload_id}"')
        return path

    # --- jobs ----------------------------------------------------------------------------
    def start(self, spec: dict, dataset_id: str, init_adapter_id: str, job_id: str) -> tuple[Job, bool, int]:
        dataset = self.upload_dir(dataset_id, "dataset") / "train.jsonl"
        init = str(self.upload_dir(init_adapter_id, "adapter")) if init_adapter_id else None
        with self.lock:
            job = self.jobs.get(job_id)
            if job is not None and not job.finished:
                return job, False, 0  # already running: the same id attaches to the same job
            directory = self.data_dir / "jobs" / job_id
            directory.mkdir(parents=True, exist_ok=True)
            resume = newest_complete_checkpoint(directory / "checkpoints")
            if job is None:
                job = Job(job_id, directory)
                events_file = directory / "events.jsonl"
                if events_file.is_file():  # the server restarted: keep the history, seq keeps counting
                    job.events = _read_events(events_file)
                self.jobs[job_id] = job
            job.finished = False
            shutil.rmtree(directory / "final", ignore_errors=True)
            (directory / "spec.json").write_text(json.dumps({**spec, "dataset_id": dataset_id, "init_adapter_id": init_adapter_id}))
            queue = self.ctx.Queue()
            job.cancel = self.ctx.Event()
            job.process = self.ctx.Process(target=_child, args=(spec, str(directory), str(dataset), init, queue, job.cancel), daemon=True)
            job.process.start()
            threading.Thread(target=self._pump, args=(job, queue), daemon=True).start()
            return job, resume is not None, resume[0] if resume else 0

    def _append(self, job: Job, event: dict) -> None:
        with job.cond:
            event = {"seq": len(job.events) + 1, **event}
            job.events.append(event)
            with open(job.directory / "events.jsonl", "a") as f:
                f.write(json.dumps(event) + "\n")
            if event["kind"] in ("done", "failed"):
                job.finished = True
            job.cond.notify_all()

    def _pump(self, job: Job, queue) -> None:
        while True:
            try:
                event = queue.get(timeout=1.0)
            except Exception:
                if not job.process.is_alive():
                    if not job.finished:
                        code = job.process.exitcode
                        self._append(job, {"kind": "failed", "code": "internal", "message": f"training process exited with code {code}"})
                    return
                continue
            self._append(job, event)
            if event["kind"] in ("done", "failed"):
                job.process.join(timeout=30)
                return

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError("NOT_FOUND", f'no job "{job_id}"')
        return job

    def watch(self, job_id: str, after_seq: int, is_active):
        """Events after `after_seq`, then waits for more until the job ends or the client goes away."""
        job = self.get(job_id)
        sent = after_seq
        while True:
            with job.cond:
                while len(job.events) <= sent and not job.finished and is_active():
                    job.cond.wait(timeout=1.0)
                pending = job.events[sent:]
                finished = job.finished
            for e in pending:
                sent = e["seq"]
                yield e
            if (finished and sent >= len(job.events)) or not is_active():
                return

    def cancel(self, job_id: str) -> bool:
        job = self.get(job_id)
        if job.finished or job.cancel is None:
            return False
        job.cancel.set()

        def reap():
            job.process.join(timeout=60)
            if job.process.is_alive():
                job.process.terminate()
        threading.Thread(target=reap, daemon=True).start()
        return True

    def adapter_files(self, job_id: str) -> list[Path]:
        job = self.get(job_id)
        final = job.directory / "final"
        done = [e for e in job.events if e["kind"] == "done"]
        if not done or not final.is_dir():
            raise JobError("FAILED_PRECONDITION", f'job "{job_id}" has no finished adapter')
        return [final / f["path"] for f in done[-1]["files"]]
