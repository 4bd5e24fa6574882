"""hub_fetch's pure parts: arguments, error kinds from huggingface_hub's exceptions, the cache-only check.

No network: Hub answers are built as httpx2 responses and turned into exceptions by huggingface_hub's own
hf_raise_for_status, so the kinds follow the library's reading of the Hub's status codes and X-Error-* headers.
The end-to-end behaviour against a stand-in Hub is test/training/HubFetch.test.ts.
"""
import io
import json
import os
from pathlib import Path

import httpx2
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import hf_raise_for_status, validate_repo_id

from dart_trainer import hub_fetch
from dart_trainer.hub_fetch import Events, Planned, RepoError, UsageError, check_cached, classify, parse_args, present, wanted

REPO = "meta-llama/Llama-3.1-8B-Instruct"
SHA = "0123456789abcdef0123456789abcdef01234567"


def hub_error(status: int, url: str, code: str | None = None, message: str | None = None) -> Exception:
    headers = {k: v for k, v in (("X-Error-Code", code), ("X-Error-Message", message)) if v is not None}
    response = httpx2.Response(status, headers=headers, json={"error": message or "x"}, request=httpx2.Request("GET", url))
    with pytest.raises(Exception) as caught:
        hf_raise_for_status(response)
    return caught.value


API = f"https://huggingface.co/api/models/{REPO}"
RESOLVE = f"https://huggingface.co/{REPO}/resolve/main/config.json"


def test_arguments():
    assert parse_args(["--check", "a/b"]) == hub_fetch.Args("check", None, ["a/b"])
    assert parse_args(["--download", "--revision", "v1", "a/b", "c/d"]) == hub_fetch.Args("download", "v1", ["a/b", "c/d"])
    for bad in ([], ["a/b"], ["--check"], ["--check", "--download", "a/b"], ["--chec", "a/b"], ["--check", "--revision", "", "a/b"],
                ["--check", "--token", "x", "a/b"]):
        with pytest.raises(UsageError):
            parse_args(bad)


def test_main_exits_1_on_bad_usage_with_nothing_on_stdout(capsys):
    out = io.StringIO()
    assert hub_fetch.main(["--download"], stdout=out) == 1
    assert out.getvalue() == ""
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("status, url, code, message, has_token, kind", [
    (401, RESOLVE, "GatedRepo", "Access to model x is restricted. You must have access to it and be authenticated", False, "gated"),
    (403, RESOLVE, "GatedRepo", "Access to model x is restricted and you are not in the authorized list", True, "gated"),
    (401, API, "RepoNotFound", "Repository not found", False, "not_found"),
    (404, API, "RepoNotFound", "Repository not found", True, "not_found"),
    (401, API, None, "Invalid credentials in Authorization header", True, "unauthorized"),
    (403, RESOLVE, None, "Forbidden", True, "unauthorized"),
    (404, API + "/revision/v9", "RevisionNotFound", "Invalid rev id: v9", False, "revision_not_found"),
    (503, API, None, None, False, "network"),
    (429, API, None, None, False, "network"),
    (400, API, None, "Bad request", False, "other"),
])
def test_hub_answers_map_to_kinds(status, url, code, message, has_token, kind):
    got, text = classify(hub_error(status, url, code, message), REPO, has_token, "v9")
    assert got == kind
    assert REPO in text


def test_gated_message_says_what_to_do():
    _, anonymous = classify(hub_error(401, RESOLVE, "GatedRepo", "restricted"), REPO, False)
    assert "licence" in anonymous and f"/{REPO}" in anonymous and "HF_TOKEN" in anonymous
    _, with_token = classify(hub_error(403, RESOLVE, "GatedRepo", "restricted"), REPO, True)
    assert "licence" in with_token and "no access" in with_token
    _, private = classify(hub_error(401, API, "RepoNotFound", "Repository not found"), REPO, False)
    assert "private" in private and "HF_TOKEN" in private


def test_transport_failures_are_network():
    request = httpx2.Request("GET", API)
    assert classify(httpx2.ConnectError("refused", request=request), REPO, False)[0] == "network"
    assert classify(httpx2.ReadTimeout("timed out", request=request), REPO, False)[0] == "network"
    assert classify(OfflineModeIsEnabled("offline"), REPO, False)[0] == "network"
    try:  # how snapshot_download reports a Hub that went away mid-way
        try:
            raise httpx2.ConnectError("reset", request=request)
        except httpx2.ConnectError as e:
            raise LocalEntryNotFoundError("cannot find the requested files") from e
    except LocalEntryNotFoundError as wrapped:
        assert classify(wrapped, REPO, False)[0] == "network"


def test_other_failures():
    with pytest.raises(Exception) as invalid:
        validate_repo_id("not a repo id")
    assert classify(invalid.value, "not a repo id", False)[0] == "not_found"
    assert classify(RepoError("no_weights", "m"), REPO, False) == ("no_weights", "m")
    assert classify(OSError(28, "No space left on device"), REPO, False)[0] == "other"
    kind, text = classify(RuntimeError("boom"), REPO, False)
    assert (kind, REPO in text) == ("other", True)


def test_events_are_json_lines_without_the_token():
    out = io.StringIO()
    events = Events(out, "hf_secret")
    events.emit(event="error", repo="a/b", kind="other", message="sent hf_secret to the server")
    events.emit(event="ok", repo="a/b", revision=SHA, path="/p", bytes=3, cached=True)
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["error", "ok"]
    assert "hf_secret" not in out.getvalue()


def test_only_what_serving_reads_is_fetched():
    paths = ["config.json", "generation_config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
             "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "chat_template.jinja",
             "merges.txt", "vocab.tiktoken", "README.md", ".gitattributes", "pytorch_model.bin", "original/params.json",
             "original/consolidated.00.pth", "model.gguf", "onnx/model.onnx", "flax_model.msgpack", "tf_model.h5", "training_args.pt"]
    assert wanted(paths) == paths[:11]


# ---------------------------------------------------------------- the cache, offline


def blob(storage: Path, content: bytes, name: str) -> Path:
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    p = storage / "blobs" / name
    p.write_bytes(content)
    return p


def cached_repo(cache: Path, files: dict[str, bytes], repo: str = REPO, ref: str = "main") -> Path:
    """The layout huggingface_hub writes: refs/<rev> holds the commit, snapshot entries link to blobs."""
    storage = cache / ("models--" + repo.replace("/", "--"))
    snap = storage / "snapshots" / SHA
    for i, (rel, content) in enumerate(files.items()):
        target = blob(storage, content, f"blob{i}")
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(target, link.parent))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / ref).write_text(SHA)
    return snap


SHARDED = {
    "config.json": b"{}",
    "tokenizer.json": b"{}",
    "model.safetensors.index.json": json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}).encode(),
    "model-00001-of-00002.safetensors": b"x" * 10,
    "model-00002-of-00002.safetensors": b"y" * 20,
    "pytorch_model.bin": b"z" * 1000,
}


def test_a_complete_sharded_snapshot_is_ok(tmp_path):
    snap = cached_repo(tmp_path, SHARDED)
    ok = check_cached(str(tmp_path), REPO, None)
    assert ok == {"revision": SHA, "path": str(snap), "bytes": sum(len(v) for k, v in SHARDED.items() if k != "pytorch_model.bin"), "cached": True}
    assert check_cached(str(tmp_path), REPO, SHA)["revision"] == SHA


def test_a_shard_named_by_the_index_but_absent_is_not_found(tmp_path):
    cached_repo(tmp_path, {k: v for k, v in SHARDED.items() if k != "model-00002-of-00002.safetensors"})
    with pytest.raises(RepoError) as e:
        check_cached(str(tmp_path), REPO, None)
    assert e.value.kind == "not_found" and "model-00002-of-00002.safetensors" in e.value.message


def test_a_dangling_tokenizer_link_is_not_found(tmp_path):
    snap = cached_repo(tmp_path, SHARDED)
    (snap / "tokenizer.json").resolve().unlink()
    with pytest.raises(RepoError) as e:
        check_cached(str(tmp_path), REPO, None)
    assert e.value.kind == "not_found" and "tokenizer.json" in e.value.message


def test_an_absent_repo_or_revision_is_not_found(tmp_path):
    cached_repo(tmp_path, SHARDED)
    for repo, revision in (("other/model", None), (REPO, "v2"), (REPO, "f" * 40)):
        with pytest.raises(RepoError) as e:
            check_cached(str(tmp_path), repo, revision)
        assert e.value.kind == "not_found" and repo in e.value.message


def test_the_saved_tree_listing_names_every_file_the_snapshot_needs(tmp_path):
    files = {"config.json": b"{}", "model.safetensors": b"w" * 8, "tokenizer.model": b"t" * 4}
    snap = cached_repo(tmp_path, files)
    storage = snap.parents[1]
    listing = {p: {"size": len(c), "blob_id": f"{i:040x}"} for i, (p, c) in enumerate(files.items())}
    (storage / "trees").mkdir()
    (storage / "trees" / f"{SHA}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    assert check_cached(str(tmp_path), REPO, None)["bytes"] == 14
    (snap / "tokenizer.model").unlink()  # a link never made: nothing dangles, only the listing knows
    with pytest.raises(RepoError) as e:
        check_cached(str(tmp_path), REPO, None)
    assert "tokenizer.model" in e.value.message


def test_progress_counts_finished_blobs_and_partial_downloads(tmp_path):
    storage = tmp_path / "models--a--b"
    plan = [Planned("config.json", 2, "c" * 40, None, False), Planned("model.safetensors", 100, "d" * 64, "d" * 64, False),
            Planned("tokenizer.json", 5, "e" * 40, None, False)]
    snap = storage / "snapshots" / SHA
    snap.mkdir(parents=True)
    (snap / "config.json").symlink_to(blob(storage, b"{}", "c" * 40))
    blob(storage, b"w" * 30, "d" * 64 + ".1a2b3c4d.incomplete")
    blob(storage, b"w" * 10, "d" * 64 + ".9f9f9f9f.incomplete")
    blob(storage, b"12345", "e" * 40)  # a blob whose snapshot link is not made yet
    assert present(storage, SHA, plan) == (2 + 30 + 5, 1)
