"""A job whose processes are SIGKILLed (mid-step and mid-save) resumes on a restarted server from its newest
COMPLETE checkpoint and ends where an uninterrupted run ends."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import torch
from conftest import rows
from dart_trainer.proto import pb, services
from dart_trainer.server import Trainer
from dart_trainer.train import COMPLETE, run_training
from safetensors.torch import load_file
from test_server import job, upload

ROOT = Path(__file__).resolve().parents[1]


class Sidecar:
    """The real server in its own process group, so one SIGKILL takes it and its training process down together."""

    def __init__(self, data_dir: Path, log: Path, stall_save_at: int | None = None):
        env = {k: v for k, v in os.environ.items() if k != "DART_TRAINER_TEST_STALL_SAVE"}
        env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
        if stall_save_at is not None:
            env["DART_TRAINER_TEST_STALL_SAVE"] = str(stall_save_at)
        with open(log, "a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dart_trainer.server", "--port", "0", "--data-dir", str(data_dir), "--max-lora-rank", "16"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        assert line.startswith("LISTENING"), f"server did not start: {log.read_text()[-2000:]}"
        self.channel = grpc.insecure_channel(f"127.0.0.1:{line.split()[1]}")
        self.stub = services.TrainerStub(self.channel)

    def kill(self):
        self.channel.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def sidecars():
    """Starts sidecars; whatever the test does, none outlives it (a stalled one would sleep for an hour)."""
    started = []

    def start(*args, **kw):
        started.append(Sidecar(*args, **kw))
        return started[-1]
    yield start
    for s in started:
        try:
            os.killpg(s.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        s.proc.wait()


def events_until(stub, job_id: str, after_seq: int, stop):
    """Watches a job from `after_seq` and returns the events up to the first one `stop` accepts (or the last)."""
    seen = []
    for e in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after_seq), timeout=300):
        seen.append(e)
        if stop(e):
            break
    return seen


def recorded_events(data: Path, job_id: str) -> int:
    """Complete event lines (a torn last one does not count)."""
    return (data / "jobs" / job_id / "events.jsonl").read_text().count("\n")


def complete_steps(job_dir: Path) -> list[int]:
    return sorted(int(d.name.split("-")[1]) for d in (job_dir / "checkpoints").glob("checkpoint-*") if (d / COMPLETE).is_file())


def wait_for(path: Path, seconds: float):
    deadline = time.time() + seconds
    while not path.exists():
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_a_sigkilled_job_resumes_from_its_newest_complete_checkpoint(tmp_path, tiny_model, sidecars):
    data, log = tmp_path / "data", tmp_path / "server.log"
    dataset = ("\n".join(json.dumps(r) for r in rows(64)) + "\n").encode()
    spec = dict(max_steps=16, save_steps=4, eval_fraction=0.0)
    kind = lambda e: e.WhichOneof("kind")  # noqa: E731

    # The reference: the same job (the spec the server derives from the same request), never interrupted,
    # run in this process to save a training process start.
    (tmp_path / "ref.jsonl").write_bytes(dataset)
    ref_events = []
    run_training(Trainer(None, 16)._spec(job(tiny_model, "unused", job_id="ref", **spec)), str(tmp_path / "ref"), str(tmp_path / "ref.jsonl"),
                 None, ref_events.append, lambda: False)
    assert ref_events[-1]["kind"] == "done", ref_events[-1]

    # Kill 1, mid-job: the whole server and its training process, a few steps past the first checkpoint.
    s = sidecars(data, log)
    ds = upload(s.stub, "dataset", {"train.jsonl": dataset}).id
    reply = s.stub.StartJob(job(tiny_model, ds, job_id="r", **spec), timeout=120)
    assert not reply.resumed
    events_until(s.stub, "r", 0, lambda e: kind(e) == "step" and e.step.step >= 5)
    s.kill()
    r = data / "jobs" / "r"
    after_first = complete_steps(r)
    # Checkpoint 4 is complete; so may be 8 if the kill lagged the training, but 12 must still lie ahead.
    assert after_first and after_first[-1] in (4, 8) and not (r / "final").exists(), after_first

    # Kill 2, mid-save: the restarted server resumes, then dies after writing checkpoint-12 but before its marker.
    s = sidecars(data, log, stall_save_at=12)
    seq = recorded_events(data, "r")
    reply = s.stub.StartJob(job(tiny_model, ds, job_id="r", **spec), timeout=120)
    assert (reply.resumed, reply.resumed_from_step) == (True, after_first[-1])
    started = events_until(s.stub, "r", seq, lambda e: kind(e) == "started")[-1]
    assert started.started.start_step == after_first[-1]
    wait_for(r / "stalled", 180)
    s.kill()
    assert (r / "checkpoints" / "checkpoint-12").is_dir() and not (r / "checkpoints" / "checkpoint-12" / COMPLETE).exists()
    assert complete_steps(r)[-1] == 8
    # As if the kill had also torn the server's last event line: the restart must cut it off, not choke on it.
    with open(r / "events.jsonl", "a") as f:
        f.write('{"seq": 99, "kind": "st')

    # Third server: resumes from 8 (the half-saved 12 is ignored) and finishes.
    s = sidecars(data, log)
    try:
        seq = recorded_events(data, "r")
        reply = s.stub.StartJob(job(tiny_model, ds, job_id="r", **spec), timeout=120)
        assert (reply.resumed, reply.resumed_from_step) == (True, 8)
        rest = events_until(s.stub, "r", seq, lambda e: kind(e) in ("done", "failed"))
    finally:
        s.kill()
    assert kind(rest[0]) == "started" and rest[0].started.start_step == 8
    steps = [e.step.step for e in rest if kind(e) == "step"]
    assert steps == list(range(9, 17))
    assert kind(rest[-1]) == "done" and rest[-1].done.global_step == 16

    # The adapter matches the uninterrupted run's (optimizer, scheduler, RNG and data order restored; the
    # reference ran with this process's thread count, hence a tolerance rather than equality),
    # and that is a real match: the adapter at step 8 is far from both.
    ref = load_file(tmp_path / "ref" / "final" / "adapter_model.safetensors")
    got = load_file(r / "final" / "adapter_model.safetensors")
    mid = load_file(r / "checkpoints" / "checkpoint-8" / "adapter_model.safetensors")
    assert ref.keys() == got.keys()
    diff = max(float((ref[k] - got[k]).abs().max()) for k in ref)
    far = max(float((ref[k] - mid[k]).abs().max()) for k in ref)
    print(f"max |resumed - uninterrupted| = {diff:.3g}, max |step 8 - uninterrupted| = {far:.3g}")
    assert diff < 1e-4 and far > 100 * diff
    assert all(torch.isfinite(t).all() for t in got.values())


def test_a_cancelled_two_process_job_stops_every_rank_and_resumes_from_its_checkpoint(tmp_path, tiny_model):
    """processes=2 (gloo on CPU): a cancel stops both ranks at the same step and leaves no process behind; the
    same job started again resumes both ranks from the newest complete checkpoint (each with its RNG state)."""
    from dart_trainer.distributed import RUN_DIR
    from dart_trainer.server import serve
    from test_multiprocess import gone, ranks

    server, port = serve(0, tmp_path / "data", max_lora_rank=16)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = services.TrainerStub(channel)
    kind = lambda e: e.WhichOneof("kind")  # noqa: E731
    try:
        dataset = ("\n".join(json.dumps(r) for r in rows(64)) + "\n").encode()
        ds = upload(stub, "dataset", {"train.jsonl": dataset}).id
        spec = dict(job_id="dp", processes=2, max_steps=60, save_steps=10, eval_fraction=0.0)
        assert not stub.StartJob(job(tiny_model, ds, **spec), timeout=60).resumed
        first = []
        for e in stub.WatchJob(pb.WatchJobRequest(job_id="dp"), timeout=240):
            first.append(e)
            if kind(e) == "checkpoint" and e.checkpoint.step == 10:
                assert stub.CancelJob(pb.CancelJobRequest(job_id="dp"), timeout=10).cancelled
        assert kind(first[-1]) == "failed" and first[-1].failed.code == "cancelled", first[-1]
        r = tmp_path / "data" / "jobs" / "dp"
        stopped = ranks(r)
        assert sorted(x["rank"] for x in stopped) == [0, 1] and all(x["cancelled"] for x in stopped)
        assert len({x["global_step"] for x in stopped}) == 1 and stopped[0]["global_step"] < 60  # the same step
        assert not (r / "final").exists()
        assert gone(r / RUN_DIR)
        at = complete_steps(r)[-1]
        assert at >= 10 and all((r / "checkpoints" / f"checkpoint-{at}" / f"rng_state_{k}.pth").is_file() for k in (0, 1))

        reply = stub.StartJob(job(tiny_model, ds, **spec), timeout=60)
        assert (reply.resumed, reply.resumed_from_step) == (True, at)
        rest = list(stub.WatchJob(pb.WatchJobRequest(job_id="dp", after_seq=len(first)), timeout=240))
        assert kind(rest[0]) == "started" and (rest[0].started.start_step, rest[0].started.world_size) == (at, 2)
        assert [e.step.step for e in rest if kind(e) == "step"] == list(range(at + 1, 61))
        assert kind(rest[-1]) == "done" and rest[-1].done.global_step == 60
        resumed = ranks(r)[2:]
        assert sorted(x["rank"] for x in resumed) == [0, 1]
        assert all((x["start_step"], x["optimizer_steps"], x["samples"]) == (at, 60 - at, 4 * (60 - at)) for x in resumed)
        assert gone(r / RUN_DIR)
    finally:
        channel.close()
        server.stop(None)
