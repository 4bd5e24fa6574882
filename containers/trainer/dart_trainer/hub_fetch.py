"""Fetches Hugging Face hub models into the shared HF cache, or checks that they can be fetched.

    python3 -m dart_trainer.hub_fetch (--check|--download) [--revision REV] REPO_ID [REPO_ID ...]

DART's containers run offline against one HF cache; a throwaway "fetch task" runs this module with the network on
to fill it (--download), and preflight runs it with --check so a wrong id or a gated model without a token fails
before paid work starts. With HF_HUB_OFFLINE=1, --check looks only at the cache.

stdout carries one JSON object per line and nothing else:
    {"event":"progress","repo":R,"done_bytes":N,"total_bytes":M,"files_done":a,"files_total":b}
    {"event":"ok","repo":R,"revision":SHA,"path":SNAPSHOT_DIR,"bytes":TOTAL,"cached":BOOL}
    {"event":"error","repo":R,"kind":K,"message":TEXT}
Exit status: 0 when every repo is ok, 2 when any failed (the others are still processed), 1 on bad usage.
"""
import os

# Progress bars would go to stderr as noise; they must be off before huggingface_hub reads its constants.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse
import hashlib
import importlib.util
import json
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import (
    HfApi,
    constants,
    get_cached_repo_tree,
    get_hf_file_metadata,
    get_session,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    DisabledRepoError,
    GatedRepoError,
    HFValidationError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    XetDownloadError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import (
    WeakFileLock,
    build_hf_headers,
    disable_progress_bars,
    filter_repo_objects,
    get_token,
    hf_raise_for_status,
    set_client_factory,
    validate_repo_id,
)
from huggingface_hub.utils import logging as hf_logging

# What vLLM serving and LoRA training read: config, safetensors weights, tokenizer and chat template.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
# Other weight formats, and Meta's original/ checkpoint that duplicates the weights in another layout.
IGNORE_PATTERNS = ["*.bin", "*.pth", "*.pt", "*.gguf", "original/*", "*.onnx", "*.msgpack", "*.h5"]
PROGRESS_EVERY_S = 2.0
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _xet_in_use() -> bool:
    """huggingface_hub's own rule: Xet transfers whenever hf_xet is installed and HF_HUB_DISABLE_XET is not set."""
    return not constants.HF_HUB_DISABLE_XET and importlib.util.find_spec("hf_xet") is not None


class UsageError(Exception):
    pass


class RepoError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


@dataclass(frozen=True)
class Args:
    mode: str  # "check" | "download"
    revision: str | None
    repos: list[str]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit 2, which the contract keeps for repo failures
        raise UsageError(message)


def parse_args(argv: list[str]) -> Args:
    p = _Parser(prog="python3 -m dart_trainer.hub_fetch", add_help=False, allow_abbrev=False)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--download", action="store_true")
    p.add_argument("--revision")
    p.add_argument("repos", nargs="+", metavar="REPO_ID")
    a = p.parse_args(argv)
    if a.revision is not None and not a.revision.strip():
        raise UsageError("--revision is empty")
    return Args("check" if a.check else "download", a.revision, list(a.repos))


# ---------------------------------------------------------------- errors


def _page(repo_id: str) -> str:
    return f"{constants.ENDPOINT}/{repo_id}"


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def classify(exc: BaseException, repo_id: str, has_token: bool, revision: str | None = None) -> tuple[str, str]:
    """The contract's error kind for an exception, and a short message naming the repo."""
    if isinstance(exc, RepoError):
        return exc.kind, exc.message
    if isinstance(exc, GatedRepoError):  # before RepositoryNotFoundError: it subclasses it
        if has_token:
            return "gated", (f"{repo_id} is gated and the HF_TOKEN account has no access yet: accept the licence on "
                             f"{_page(repo_id)} with that account (some models also wait for approval)")
        return "gated", f"{repo_id} is gated: accept the licence on {_page(repo_id)} and set HF_TOKEN to a token of that account"
    if isinstance(exc, RevisionNotFoundError):
        return "revision_not_found", f"{repo_id} has no revision {revision!r}" if revision else f"{repo_id} has no such revision"
    if isinstance(exc, DisabledRepoError):
        return "other", f"{repo_id} has been disabled on the Hub"
    if isinstance(exc, RepositoryNotFoundError):
        # The Hub answers the same for a missing repo and a private one the caller cannot read.
        hint = "or HF_TOKEN cannot read it" if has_token else "or it is private and HF_TOKEN is not set"
        return "not_found", f"{repo_id} was not found on {constants.ENDPOINT} (check the id, {hint})"
    if isinstance(exc, HFValidationError):
        return "not_found", f"{repo_id!r} is not a valid Hugging Face repo id (expected namespace/name)"
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 401:
            return "unauthorized", f"{constants.ENDPOINT} rejected HF_TOKEN while reading {repo_id}: check the token"
        if status == 403:
            return "unauthorized", f"HF_TOKEN may not read {repo_id}: give the token read access to it"
        if status == 429 or status >= 500:
            return "network", f"{constants.ENDPOINT} answered {status} for {repo_id}; try again later"
        return "other", f"{repo_id}: {constants.ENDPOINT} answered {status}: {_first_line(exc)}"
    for cause in _causes(exc):
        if isinstance(cause, OfflineModeIsEnabled):
            return "network", f"cannot reach {constants.ENDPOINT} for {repo_id}: HF_HUB_OFFLINE=1 is set"
        if isinstance(cause, (httpx2.TransportError, XetDownloadError, TimeoutError, ConnectionError)):
            return "network", f"cannot reach {constants.ENDPOINT} for {repo_id}: {_first_line(cause) or type(cause).__name__}"
        if cause is not exc and isinstance(cause, HfHubHTTPError):
            return classify(cause, repo_id, has_token, revision)
    if isinstance(exc, LocalEntryNotFoundError):
        return "network", f"cannot reach {constants.ENDPOINT} for {repo_id}: {_first_line(exc)}"
    if isinstance(exc, OSError) and exc.errno == 28:
        return "other", f"no space left in the HF cache while fetching {repo_id}"
    return "other", f"{repo_id}: {type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


# ---------------------------------------------------------------- output


class Events:
    """One JSON object per line on the real stdout, flushed; the token is scrubbed from every string."""

    def __init__(self, out: TextIO, token: str | None):
        self._out, self._token, self._lock = out, token, threading.Lock()

    def emit(self, **event):
        if self._token:
            event = {k: v.replace(self._token, "***") if isinstance(v, str) else v for k, v in event.items()}
        line = json.dumps(event)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


# ---------------------------------------------------------------- plans


@dataclass(frozen=True)
class Planned:
    path: str
    size: int
    etag: str  # the blob's name in the cache: the LFS sha256, or the git blob id of a small file
    lfs_sha256: str | None
    xet: bool


def wanted(paths) -> list[str]:
    return list(filter_repo_objects(list(paths), allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS))


def _storage(cache_dir: str, repo_id: str) -> Path:
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def plan_remote(api: HfApi, repo_id: str, revision: str | None, token: str | None) -> tuple[str, list[Planned]]:
    """Resolves the revision and lists what a download would fetch; raises when the repo cannot be served."""
    timeout = constants.HF_HUB_ETAG_TIMEOUT
    sha = api.model_info(repo_id, revision=revision, timeout=timeout, token=token).sha
    if not sha:
        raise RepoError("other", f"{constants.ENDPOINT} gave no commit for {repo_id}")
    files = {f.path: f for f in api.list_repo_tree(repo_id, recursive=True, revision=sha, token=token) if isinstance(f, RepoFile)}
    plan = [Planned(p, files[p].size, lfs.sha256 if (lfs := files[p].lfs) else files[p].blob_id, lfs.sha256 if lfs else None,
                    bool(files[p].xet_hash)) for p in sorted(wanted(files))]
    if not any(p.path.endswith(".safetensors") for p in plan):
        other = sorted({Path(p).suffix for p in files if Path(p).suffix in (".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx")})
        found = f" (it has {', '.join(other)} weights)" if other else ""
        raise RepoError("no_weights", f"{repo_id} has no *.safetensors weights{found}; DART serves safetensors only")
    if "config.json" not in files:
        raise RepoError("no_weights", f"{repo_id} has no config.json, so it is not a model DART can serve")
    # A download starts with this HEAD: gated and unreadable repos refuse it, and no weight byte moves.
    get_hf_file_metadata(hf_hub_url(repo_id, "config.json", revision=sha), token=token, timeout=timeout)
    return sha, plan


def _partials(blobs: Path) -> dict[str, list[Path]]:
    """huggingface_hub downloads into blobs/<etag>.<random>.incomplete and renames it when complete."""
    out: dict[str, list[Path]] = {}
    try:
        names = os.listdir(blobs)
    except FileNotFoundError:
        return out
    for name in names:
        if name.endswith(".incomplete"):
            out.setdefault(name.split(".", 1)[0], []).append(blobs / name)
    return out


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def present(storage: Path, sha: str, plan: list[Planned]) -> tuple[int, int]:
    """(bytes, files) of the plan already in the cache, counting partial downloads."""
    blobs, snap = storage / "blobs", storage / "snapshots" / sha
    parts = _partials(blobs)
    done = files = 0
    for f in plan:
        if (snap / f.path).is_file():
            done, files = done + f.size, files + 1
        elif (blobs / f.etag).is_file():
            done += f.size
        else:
            done += min(f.size, max((_size(p) for p in parts.get(f.etag, [])), default=0))
    return done, files


class Progress:
    """Reports the cache's fill level every PROGRESS_EVERY_S; polling works the same for HTTP and Xet transfers."""

    def __init__(self, events: Events, repo_id: str, storage: Path, sha: str, plan: list[Planned]):
        self._args = (storage, sha, plan)
        self._events, self._repo = events, repo_id
        self._total = sum(f.size for f in plan)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def emit(self):
        done, files = present(*self._args)
        self._events.emit(event="progress", repo=self._repo, done_bytes=done, total_bytes=self._total,
                          files_done=files, files_total=len(self._args[2]))

    def _run(self):
        while not self._stop.wait(PROGRESS_EVERY_S):
            self.emit()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- resuming


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _resume(partial: Path, blob: Path, url: str, f: Planned, token: str | None):
    """Appends the rest of `f` to `partial` and moves it into place once its sha256 is right; else drops it."""
    have = _size(partial)
    if have < f.size:
        meta = get_hf_file_metadata(url, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        if meta.etag != f.etag:  # not the bytes the partial began with: let snapshot_download start afresh
            partial.unlink(missing_ok=True)
            return
        headers = build_hf_headers(token=token)
        if not _same_origin(url, meta.location):  # a signed CDN url: the token stays with the Hub
            headers.pop("authorization", None)
        headers["Range"] = f"bytes={have}-"
        with partial.open("ab") as out, get_session().stream(
                "GET", meta.location, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as r:
            hf_raise_for_status(r)
            if r.status_code != 206:  # the server ignored the range: start over
                out.truncate(0)
            for chunk in r.iter_bytes(1 << 20):
                out.write(chunk)
    if _sha256(partial) != f.lfs_sha256:
        print(f"hub_fetch: {f.path} did not match its sha256 after resuming; downloading it again", file=sys.stderr)
        partial.unlink(missing_ok=True)
        return
    os.replace(partial, blob)


def resume_partials(cache_dir: str, storage: Path, repo_id: str, sha: str, plan: list[Planned], token: str | None):
    """Finishes weight files a killed run left half-written, with a Range request.

    huggingface_hub 2.4 neither resumes nor removes another process's partial file (each download writes to its own
    random name), so a killed fetch would restart every shard from zero and leave its partials behind. A live
    download holds the cache's per-blob lock, so taking that lock makes any partial found under it a dead one.
    """
    blobs = storage / "blobs"
    parts = _partials(blobs)
    for f in plan:
        if f.etag not in parts:
            continue
        lock = Path(cache_dir) / ".locks" / storage.name / f"{f.etag}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(lock):
            stale = sorted((p for p in parts[f.etag] if p.exists()), key=_size, reverse=True)
            blob = blobs / f.etag
            # Xet writes a file out of order, so only an HTTP partial of an LFS file is a prefix worth continuing.
            resumable = f.lfs_sha256 is not None and not (f.xet and _xet_in_use()) and not blob.exists()
            keep = stale[0] if stale and resumable else None
            for p in stale:
                if p != keep:
                    p.unlink(missing_ok=True)
            if keep is not None:
                try:
                    _resume(keep, blob, hf_hub_url(repo_id, f.path, revision=sha), f, token)
                except (httpx2.TransportError, HfHubHTTPError) as e:
                    # The partial is still a good prefix; snapshot_download reports the failure if it persists.
                    print(f"hub_fetch: resuming {repo_id}/{f.path} failed: {_first_line(e)}", file=sys.stderr)


# ---------------------------------------------------------------- cache-only check


def _walk(snap: Path):
    for root, _dirs, names in os.walk(snap):
        for name in names:
            p = Path(root) / name
            yield p.relative_to(snap).as_posix(), p


def check_cached(cache_dir: str, repo_id: str, revision: str | None) -> dict:
    """The repo is complete in the cache: config, every listed file, every index shard, no dangling link."""
    validate_repo_id(repo_id)
    storage = _storage(cache_dir, repo_id)
    rev = revision or "main"
    absent = RepoError("not_found", f"{repo_id}{'@' + revision if revision else ''} is not in the HF cache {cache_dir}: fetch it first")
    if COMMIT.match(rev):
        sha = rev
    else:
        ref = storage / "refs" / rev
        if not ref.is_file():
            raise absent
        sha = ref.read_text().strip()
    snap = storage / "snapshots" / sha
    if not snap.is_dir():
        raise absent
    on_disk = dict(_walk(snap))
    missing: list[str] = [rel for rel, p in on_disk.items() if not p.is_file()]  # links whose blob is gone
    try:
        # The listing snapshot_download saved says exactly which files this commit has.
        listed = {f.path: f.size for f in get_cached_repo_tree(repo_id, revision=sha, cache_dir=cache_dir)}
    except CachedRepoTreeNotFoundError:
        listed = None
    expected = {p: listed[p] for p in wanted(listed)} if listed is not None else {}
    if listed is not None and not any(p.endswith(".safetensors") for p in expected):
        raise RepoError("no_weights", f"{repo_id} has no *.safetensors weights; DART serves safetensors only")
    required = set(expected) | {"config.json"}
    index = snap / "model.safetensors.index.json"
    if index.is_file():
        try:
            required |= set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, AttributeError):
            missing.append("model.safetensors.index.json (unreadable)")
    for rel in sorted(required):
        p = snap / rel
        if not p.is_file():
            missing.append(rel)
        elif rel in expected and p.stat().st_size != expected[rel]:
            missing.append(f"{rel} (size {p.stat().st_size}, expected {expected[rel]})")
    if not any(rel.endswith(".safetensors") and p.is_file() for rel, p in on_disk.items()):
        missing.append("*.safetensors")
    if missing:
        shown = ", ".join(sorted(set(missing))[:4]) + (", …" if len(set(missing)) > 4 else "")
        raise RepoError("not_found", f"{repo_id} is incomplete in the HF cache {cache_dir}: missing {shown}; fetch it again")
    return dict(revision=sha, path=str(snap), bytes=snapshot_bytes(snap), cached=True)


def snapshot_bytes(snap: Path) -> int:
    """Size of what serving and training read from a snapshot (the links resolved)."""
    on_disk = dict(_walk(snap))
    return sum(on_disk[rel].stat().st_size for rel in wanted(on_disk) if on_disk[rel].is_file())


# ---------------------------------------------------------------- online


def check_remote(api: HfApi, cache_dir: str, repo_id: str, revision: str | None, token: str | None) -> dict:
    validate_repo_id(repo_id)
    sha, plan = plan_remote(api, repo_id, revision, token)
    storage = _storage(cache_dir, repo_id)
    _, files = present(storage, sha, plan)
    return dict(revision=sha, path=str(storage / "snapshots" / sha), bytes=sum(f.size for f in plan), cached=files == len(plan))


def download(api: HfApi, events: Events, cache_dir: str, repo_id: str, revision: str | None, token: str | None) -> dict:
    validate_repo_id(repo_id)
    if constants.is_offline_mode():
        try:
            return check_cached(cache_dir, repo_id, revision)
        except RepoError as e:
            if e.kind != "not_found":
                raise
            raise RepoError("network", f"HF_HUB_OFFLINE=1 is set, so {repo_id} cannot be downloaded ({e.message})") from None
    sha, plan = plan_remote(api, repo_id, revision, token)
    storage = _storage(cache_dir, repo_id)
    _, files_before = present(storage, sha, plan)
    cached = files_before == len(plan)
    with Progress(events, repo_id, storage, sha, plan) as progress:
        if not cached:
            progress.emit()  # what earlier runs left, before any byte moves
            resume_partials(cache_dir, storage, repo_id, sha, plan, token)
        path = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                 allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS,
                                 etag_timeout=constants.HF_HUB_ETAG_TIMEOUT)
    # The branch may have moved between the listing and the download: describe the snapshot on disk.
    return dict(revision=Path(path).name, path=path, bytes=snapshot_bytes(Path(path)), cached=cached)


# ---------------------------------------------------------------- process


def _bound_timeouts(request: httpx2.Request):
    """huggingface_hub sends some API calls with no timeout at all; a silent endpoint must still fail, as `network`."""
    limit = float(constants.HF_HUB_ETAG_TIMEOUT)
    timeout = dict(request.extensions.get("timeout") or {})
    request.extensions = {**request.extensions, "timeout": {k: (limit if timeout.get(k) is None else timeout[k])
                                                            for k in ("connect", "read", "write", "pool")}}


def _install_client():
    hooks = get_session().event_hooks  # huggingface_hub's own hooks: offline mode, request ids
    set_client_factory(lambda: httpx2.Client(
        event_hooks={"request": [*hooks.get("request", []), _bound_timeouts], "response": list(hooks.get("response", []))},
        follow_redirects=True, timeout=None))


def run(args: Args, events: Events, token: str | None) -> int:
    api = HfApi(token=token)
    cache_dir = constants.HF_HUB_CACHE
    failed = False
    for repo_id in args.repos:
        try:
            if args.mode == "download":
                ok = download(api, events, cache_dir, repo_id, args.revision, token)
            elif constants.is_offline_mode():
                ok = check_cached(cache_dir, repo_id, args.revision)
            else:
                ok = check_remote(api, cache_dir, repo_id, args.revision, token)
            events.emit(event="ok", repo=repo_id, **ok)
        except Exception as e:  # one repo's failure must not hide the next repo's
            kind, message = classify(e, repo_id, token is not None, args.revision)
            events.emit(event="error", repo=repo_id, kind=kind, message=message)
            failed = True
    return 2 if failed else 0


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> int:
    # Only events go to the real stdout; anything else that prints (libraries, native code) lands on stderr.
    if stdout is None:
        stdout = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"usage: python3 -m dart_trainer.hub_fetch (--check|--download) [--revision REV] REPO_ID [REPO_ID ...]\n{e}",
              file=sys.stderr)
        return 1
    disable_progress_bars()
    hf_logging.set_verbosity_error()
    _install_client()
    token = get_token()
    return run(args, Events(stdout, token), token)


if __name__ == "__main__":
    sys.exit(main())
