"""Data-parallel jobs (StartJobRequest.processes = K > 1): K ranks under torch.distributed.run, gloo on this CPU.
Rank 0 alone reports and writes; ranks.jsonl proves that every rank trained on its share of the data."""
import hashlib
import json
import os
import time
from pathlib import Path

import grpc
import pytest
import torch
from conftest import rows
from dart_trainer.distributed import RUN_DIR, loopback_store
from dart_trainer.proto import pb, services
from dart_trainer.server import Trainer, _event_message, serve
from dart_trainer.train import COMPLETE, run_training
from safetensors import safe_open
from test_server import job, upload

# 36 rows, a ninth held out: 32 train rows in batches of 4, so one epoch is 8 steps on one process, 4 on two.
DATASET = ("\n".join(json.dumps(r) for r in rows(36)) + "\n").encode()
SPEC = dict(max_steps=0, epochs=1, eval_fraction=1 / 9, eval_steps=2, save_steps=2, per_device_batch_size=4,
            gradient_accumulation_steps=1)


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    srv, port = serve(0, data, max_lora_rank=16)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield services.TrainerStub(channel), data
    channel.close()
    srv.stop(None)


def kind(e) -> str:
    return e.WhichOneof("kind")


def tensors(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_tensor(k).shape) for k in f.keys()}


def ranks(job_dir: Path) -> list:
    return [json.loads(line) for line in (job_dir / "ranks.jsonl").read_text().splitlines()]


def processes_using(run_dir: Path) -> list:
    """Processes whose command line names this job's run folder (its torchrun and ranks)."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and str(run_dir).encode() in (p / "cmdline").read_bytes():
                found.append(int(p.name))
        except OSError:
            pass
    return found


def gone(run_dir: Path, seconds: float = 15) -> bool:
    deadline = time.time() + seconds
    while processes_using(run_dir):
        if time.time() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_two_processes_train_one_adapter_like_one_process(server, tiny_model, tmp_path):
    s, data = server
    ds = upload(s, "dataset", {"train.jsonl": DATASET}).id
    reply = s.StartJob(job(tiny_model, ds, job_id="dp", processes=2, **SPEC), timeout=60)
    assert (reply.train_rows, reply.eval_rows) == (32, 4)
    events = list(s.WatchJob(pb.WatchJobRequest(job_id="dp"), timeout=240))
    kinds = [kind(e) for e in events]
    assert kinds[-1] == "done", events[-1]
    assert kinds.count("started") == 1 and kinds.count("done") == 1 and "failed" not in kinds

    # One process on the same data and spec (the server's own translation of the request), for reference.
    (tmp_path / "ref.jsonl").write_bytes(DATASET)
    one_spec = Trainer(None, 16)._spec(job(tiny_model, "unused", job_id="one", **SPEC))
    assert one_spec["processes"] == 1
    one_events = []
    run_training(one_spec, str(tmp_path / "one"), str(tmp_path / "ref.jsonl"), None, one_events.append, lambda: False)
    assert one_events[-1]["kind"] == "done", one_events[-1]

    # Started: world size, and total steps from the global batch (4 per device x 1 accumulation x 2 processes).
    started = events[0].started
    one_started = _event_message({"seq": 1, **one_events[0]}).started
    assert (started.world_size, one_started.world_size) == (2, 1)
    assert (started.total_steps, one_started.total_steps) == (4, 8)

    # Reported once: every step, evaluation and checkpoint a single time, by rank 0.
    assert [e.step.step for e in events if kind(e) == "step"] == [1, 2, 3, 4]
    assert [e.evaluated.step for e in events if kind(e) == "evaluated"] == [2, 4]
    assert [e.checkpoint.step for e in events if kind(e) == "checkpoint"] == [2, 4]

    # Checkpoints written once each: one adapter, both ranks' RNG states, then the COMPLETE marker.
    job_dir = data / "jobs" / "dp"
    assert sorted(d.name for d in (job_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    for d in (job_dir / "checkpoints").glob("checkpoint-*"):
        names = {p.name for p in d.iterdir()}
        assert {COMPLETE, "adapter_model.safetensors", "rng_state_0.pth", "rng_state_1.pth"} <= names, names
        assert not any(n.startswith("rng_state_2") for n in names)

    # Both ranks trained, each its half of every global batch, in separate processes, in one gloo group.
    per_rank = sorted(ranks(job_dir), key=lambda r: r["rank"])
    assert [r["rank"] for r in per_rank] == [0, 1], per_rank
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in per_rank)
    assert len({r["pid"] for r in per_rank}) == 2
    assert [(r["optimizer_steps"], r["samples"]) for r in per_rank] == [(4, 16), (4, 16)]
    (one,) = ranks(tmp_path / "one")
    assert (one["world_size"], one["optimizer_steps"], one["samples"]) == (1, 8, 32)
    assert sum(r["samples"] for r in per_rank) == one["samples"]  # the same epoch, split in two
    assert (job_dir / "train.log").is_file() and (job_dir / "train.rank1.log").is_file()

    # The same adapter as one process makes: files, tensor names and shapes, config.
    final, one_final = job_dir / "final", tmp_path / "one" / "final"
    assert sorted(p.name for p in final.iterdir()) == sorted(p.name for p in one_final.iterdir())
    done = events[-1].done
    assert [f.path for f in done.files] == [f["path"] for f in one_events[-1]["files"]] \
        == ["adapter_config.json", "adapter_model.safetensors"]
    assert tensors(final / "adapter_model.safetensors") == tensors(one_final / "adapter_model.safetensors")
    irrelevant = {"base_model_name_or_path", "revision", "peft_version"}
    config, one_config = (json.loads((d / "adapter_config.json").read_text()) for d in (final, one_final))
    assert {k: v for k, v in config.items() if k not in irrelevant} == {k: v for k, v in one_config.items() if k not in irrelevant}
    assert done.global_step == 4 and done.validation["rank"] == "8"
    got = {}
    for chunk in s.DownloadAdapter(pb.DownloadAdapterRequest(job_id="dp"), timeout=30):
        if chunk.WhichOneof("part") == "file":
            current = chunk.file.path
            got[current] = b""
        else:
            got[current] += chunk.data
    assert {f.path: f.sha256 for f in done.files} == {k: hashlib.sha256(v).hexdigest() for k, v in got.items()}
    assert gone(job_dir / RUN_DIR)


def test_a_crashing_rank_fails_the_job_at_once(server, tiny_model, monkeypatch):
    s, data = server
    monkeypatch.setenv("DART_TRAINER_TEST_CRASH_RANK", "1")
    ds = upload(s, "dataset", {"train.jsonl": DATASET}).id
    s.StartJob(job(tiny_model, ds, job_id="crash", processes=2, max_steps=200, save_steps=1000, eval_fraction=0), timeout=60)
    events, times = [], []
    for e in s.WatchJob(pb.WatchJobRequest(job_id="crash"), timeout=120):
        events.append(e)
        times.append(time.time())
    kinds = [kind(e) for e in events]
    assert kinds[0] == "started" and kinds[-1] == "failed" and kinds.count("failed") == 1 and "done" not in kinds
    failed = events[-1].failed
    assert failed.code == "internal"
    assert failed.message.startswith("rank 1 of 2 failed: RuntimeError: test hook: rank 1 crashed after step 1"), failed.message
    assert times[-1] - times[0] < 30  # rank 0 is not left waiting for its peer (the group timeout is 600 s)
    assert gone(data / "jobs" / "crash" / RUN_DIR)


def test_more_processes_than_devices_are_refused(server, tiny_model):
    s, _ = server
    ds = upload(s, "dataset", {"train.jsonl": DATASET}).id
    devices = torch.cuda.device_count() if torch.cuda.is_available() else (os.cpu_count() or 1)
    with pytest.raises(grpc.RpcError) as e:
        s.StartJob(job(tiny_model, ds, job_id="many", processes=devices + 1), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{devices + 1} processes" in e.value.details()


def test_the_rendezvous_store_listens_on_loopback_only(monkeypatch):
    """torchrun's store (what the ranks meet at) is served from 127.0.0.1 alone, not on every interface."""
    import torch.distributed.elastic.rendezvous.static_tcp_rendezvous as static
    monkeypatch.setattr(static, "TCPStore", static.TCPStore)  # put back after the test
    port = loopback_store()
    rendezvous = static.StaticTCPRendezvous("127.0.0.1", port, rank=0, world_size=1, run_id="t", timeout=10)
    rendezvous.next_rendezvous()
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                listening.append(local)
    assert listening == [f"0100007F:{port:04X}"]
