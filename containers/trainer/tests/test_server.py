import hashlib
import json

import grpc
import pytest
from conftest import rows
from dart_trainer.proto import pb, services
from dart_trainer.server import serve
from grpc_health.v1 import health_pb2, health_pb2_grpc


@pytest.fixture
def stub(tmp_path):
    server, port = serve(0, tmp_path / "data", max_lora_rank=16)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield services.TrainerStub(channel), channel
    channel.close()
    server.stop(None)


def upload(stub, kind, files):
    def chunks():
        yield pb.UploadChunk(header=pb.UploadHeader(kind=kind, name="t"))
        for name, data in files.items():
            yield pb.UploadChunk(file=pb.FileHeader(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
            for i in range(0, len(data), 1000):
                yield pb.UploadChunk(data=data[i:i + 1000])
    return stub.Upload(chunks(), timeout=30)


def job(tiny, dataset_id, **over):
    base = dict(job_id="j1", dataset_id=dataset_id, base_model=str(tiny), dtype="float32",
                lora=pb.LoraParams(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none"),
                epochs=1, learning_rate=1e-2, per_device_batch_size=4, gradient_accumulation_steps=1, max_length=256, seed=1,
                lr_scheduler="constant", eval_fraction=0.1, eval_steps=2, save_steps=2, max_steps=4, optimizer="adamw_torch")
    base.update(over)
    return pb.StartJobRequest(**base)


def test_health_and_version(stub):
    s, channel = stub
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="dart.trainer.v1.Trainer"), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    v = s.GetVersion(pb.VersionRequest(), timeout=30)
    assert v.protocol == "dart.trainer.v1" and v.max_lora_rank == 16 and "trl" in v.libraries


def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(stub, tiny_model):
    s, _ = stub
    data = ("\n".join(json.dumps(r) for r in rows(12)) + "\n").encode()
    good = upload(s, "dataset", {"train.jsonl": data}).id

    def status_of(call):
        with pytest.raises(grpc.RpcError) as e:
            call()
        return e.value.code(), e.value.details()

    assert status_of(lambda: upload(s, "dataset", {"train.jsonl": b""})) == (grpc.StatusCode.INVALID_ARGUMENT, "train.jsonl: dataset is empty")
    code, msg = status_of(lambda: upload(s, "dataset", {"train.jsonl": b'{"id": "a", "messages": [{"role": "user", "content": "x"}]}\n'}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "row 1 (a): messages must be a list of at least two" in msg
    code, msg = status_of(lambda: upload(s, "dataset", {"train.jsonl": b"{oops\n"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "row 1: malformed JSON" in msg

    def corrupt():
        def chunks():
            yield pb.UploadChunk(header=pb.UploadHeader(kind="dataset", name="t"))
            yield pb.UploadChunk(file=pb.FileHeader(path="train.jsonl", size=len(data), sha256="0" * 64))
            yield pb.UploadChunk(data=data)
        return s.Upload(chunks(), timeout=30)
    assert status_of(corrupt)[0] == grpc.StatusCode.DATA_LOSS

    code, msg = status_of(lambda: s.StartJob(job(tiny_model, good, base_model="/no/such/model"), timeout=60))
    assert (code, msg) == (grpc.StatusCode.INVALID_ARGUMENT, "unknown base model path /no/such/model")
    code, msg = status_of(lambda: s.StartJob(job(tiny_model, good, lora=pb.LoraParams(r=32, alpha=64, target_modules=["q_proj"])), timeout=60))
    assert (code, msg) == (grpc.StatusCode.INVALID_ARGUMENT, "LoRA rank 32 is outside 1..16 (the configured max_lora_rank)")
    assert status_of(lambda: s.StartJob(job(tiny_model, "dataset-nope"), timeout=60))[0] == grpc.StatusCode.NOT_FOUND
    assert status_of(lambda: s.StartJob(job(tiny_model, good, qlora=pb.QloraParams(enabled=True)), timeout=60))[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert status_of(lambda: list(s.WatchJob(pb.WatchJobRequest(job_id="nope"), timeout=10)))[0] == grpc.StatusCode.NOT_FOUND
    assert s.GetVersion(pb.VersionRequest(), timeout=30).protocol == "dart.trainer.v1"


def test_a_job_streams_events_resumably_and_the_adapter_downloads_intact(stub, tiny_model):
    s, _ = stub
    data = ("\n".join(json.dumps(r) for r in rows(20)) + "\n").encode()
    ds = upload(s, "dataset", {"train.jsonl": data})
    assert ds.rows == 20
    reply = s.StartJob(job(tiny_model, ds.id), timeout=60)
    assert (reply.train_rows, reply.eval_rows, reply.dropped_too_long) == (18, 2, 0)
    events = list(s.WatchJob(pb.WatchJobRequest(job_id="j1"), timeout=120))
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done" and "checkpoint" in kinds and "evaluated" in kinds
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # Re-attach after event 3: the rest, nothing repeated.
    again = list(s.WatchJob(pb.WatchJobRequest(job_id="j1", after_seq=3), timeout=30))
    assert [e.seq for e in again] == [e.seq for e in events[3:]]
    done = events[-1].done
    assert done.global_step == 4 and done.validation["rank"] == "8"
    got, current = {}, None
    for chunk in s.DownloadAdapter(pb.DownloadAdapterRequest(job_id="j1"), timeout=30):
        if chunk.WhichOneof("part") == "file":
            current = chunk.file
            got[current.path] = b""
        else:
            got[current.path] += chunk.data
    assert {f.path: f.sha256 for f in done.files} == {k: hashlib.sha256(v).hexdigest() for k, v in got.items()}


def test_too_long_rows_are_reported_not_cut(stub, tiny_model):
    s, _ = stub
    long_row = rows(1, 100)[0]
    long_row["messages"][-1]["content"] = "the facts differ. " * 200 + "\nconclusion: yes"
    data = ("\n".join(json.dumps(r) for r in rows(8) + [long_row]) + "\n").encode()
    ds = upload(s, "dataset", {"train.jsonl": data}).id
    reply = s.StartJob(job(tiny_model, ds, job_id="long", max_steps=1, eval_fraction=0), timeout=60)
    assert reply.dropped_too_long == 1 and list(reply.dropped_ids) == ["item-100"] and reply.train_rows == 8
    s.CancelJob(pb.CancelJobRequest(job_id="long"), timeout=10)


def test_require_cuda_refuses_to_start_without_cuda(tmp_path):
    """With DART_REQUIRE_CUDA=1 (a host given GPUs) a sidecar without CUDA exits at once, saying why."""
    import os
    import subprocess
    import sys

    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot be shown here")
    r = subprocess.run([sys.executable, "-m", "dart_trainer.server", "--port", "0", "--data-dir", str(tmp_path)],
                       env={**os.environ, "DART_REQUIRE_CUDA": "1"}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    assert "this host was given GPUs but" in r.stderr
    assert "LISTENING" not in r.stdout


def test_hub_ids_are_served_from_the_hf_cache_offline(stub, tiny_model, tmp_path, monkeypatch):
    """Offline (every dart container), a hub id is accepted only when dart's fetch put it in the HF cache."""
    from huggingface_hub import constants

    from dart_trainer.server import _in_hf_cache
    cache = tmp_path / "hub"
    snapshot = cache / "models--dart-test--tiny-chat" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text((tiny_model / "config.json").read_text())
    (cache / "models--dart-test--tiny-chat" / "refs").mkdir()
    (cache / "models--dart-test--tiny-chat" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _in_hf_cache("dart-test/tiny-chat")
    assert not _in_hf_cache("dart-test/not-fetched")
    assert not _in_hf_cache("../../etc")

    s, _ = stub
    data = ("\n".join(json.dumps(r) for r in rows(12)) + "\n").encode()
    good = upload(s, "dataset", {"train.jsonl": data}).id
    with pytest.raises(grpc.RpcError) as e:
        s.StartJob(job(tiny_model, good, base_model="dart-test/not-fetched"), timeout=60)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "dart-test/not-fetched is not in this host's HF cache" in e.value.details()


def test_probe_chat_template_over_grpc(stub, tiny_model, tmp_path):
    import json
    s, _ = stub
    student = {"name": "student", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}],
               "add_generation_prompt": True}
    reply = s.ProbeChatTemplate(pb.ProbeChatTemplateRequest(base_model=str(tiny_model), conversations_json=json.dumps({"conversations": [student]})), timeout=60)
    result = json.loads(reply.result_json)
    assert result["layout"] == "native" and result["conversations"][0]["native"] == "ok"
    with pytest.raises(grpc.RpcError) as bad:
        s.ProbeChatTemplate(pb.ProbeChatTemplateRequest(base_model=str(tiny_model), conversations_json="{}"), timeout=60)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as missing:
        s.ProbeChatTemplate(pb.ProbeChatTemplateRequest(base_model=str(tmp_path / "none"), conversations_json=json.dumps({"conversations": [student]})), timeout=60)
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT and missing.value.details() == f"unknown base model path {tmp_path / 'none'}"
