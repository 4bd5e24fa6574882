"""Data-parallel jobs (StartJobRequest.processes = K > 1): K ranks under torch.distributed.run (torchrun), the
launcher transformers documents for DDP (TRL's `accelerate launch` ends in the same torch.distributed process group).

The job's process (jobs._child) is the launcher here. It starts

    python -m dart_trainer.distributed torchrun --nnodes=1 --nproc-per-node=K --master-addr=127.0.0.1
        --local-addr=127.0.0.1 --max-restarts=0 ... -m dart_trainer.distributed rank RUN_DIR

(`torchrun` runs torch.distributed.run's own main, adding --master-port: a port it holds bound on 127.0.0.1 for
the rendezvous store, see loopback_store; it also ties torchrun to the launcher's life and keeps its failure
report), then: forwards rank 0's events (RUN_DIR/events.jsonl) to the server; turns a client's cancel into
RUN_DIR/cancel, which every rank reads after each step (train.py all-reduces it, so all stop at the same step);
and turns a failed run into exactly one Failed event. torchrun stops the other ranks as soon as one fails
(--max-restarts=0), so no rank waits for a dead peer; a process-group timeout bounds every wait besides.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

RUN_DIR = ".ranks"           # in the job folder: launch.json, events.jsonl, cancel, error-rank*.json, failure.json
CANCEL_GRACE_S = 45          # a cancelled job that has not stopped by then (a step that never ends) is killed
SHUTDOWN_S = 10              # torchrun's SIGTERM -> SIGKILL wait for its ranks


def loopback_store() -> int:
    """Binds a free port on 127.0.0.1 and has torchrun's rendezvous store (static backend, agent store shared with
    the ranks) serve on it; returns the port. torch's TCPStore would otherwise listen on every interface, whatever
    --master-addr says; given a listening socket (master_listen_fd) it serves on that one. The socket is bound
    before torchrun starts, so no other process can take the port in between."""
    import torch.distributed.elastic.rendezvous.static_tcp_rendezvous as static
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    real = static.TCPStore

    def store(host_name, port, world_size=None, is_master=False, *args, **kw):
        if is_master:
            kw["master_listen_fd"] = listener.fileno()
        return real(host_name, port, world_size, is_master, *args, **kw)
    static.TCPStore = store
    store.listener = listener  # kept open for the store's lifetime
    return listener.getsockname()[1]


def _append_event(path: Path, event: dict) -> None:
    """One line per event, written in one call, so the launcher never reads half of one it can parse."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(event) + "\n").encode())
    finally:
        os.close(fd)


class _Tail:
    """New complete lines of a file that another process appends to."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def read(self) -> list:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.decode().splitlines() if line.strip()]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to torchrun (it passes it on to every rank, then SIGKILLs them after SHUTDOWN_S), SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=SHUTDOWN_S + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def failure_event(run: Path, processes: int, returncode: int) -> dict:
    """The one Failed event for a run that ended without rank 0 reporting done/failed. The cause is a rank that
    torchrun saw end without a report of its own (killed: out of memory, a segfault), else the first rank to raise
    (its report, timed to the microsecond); the others' errors (a peer's connection closed) follow from it."""
    errors = []
    for f in run.glob("error-rank*.json"):
        try:
            errors.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            pass
    try:
        ended = json.loads((run / "failure.json").read_text())
    except (OSError, ValueError):
        ended = []
    # SIGTERM is torchrun stopping the ranks left after a failure: an effect, not the cause.
    silent = [e for e in ended if e["rank"] not in {x["rank"] for x in errors} and e.get("exitcode") != -signal.SIGTERM]
    if silent:
        message = f"rank {silent[0]['rank']} of {processes} {silent[0]['what']} without an error report"
    elif errors:
        first = min(errors, key=lambda e: e["time"])
        message = f"rank {first['rank']} of {processes} failed: {first['message']}"
    else:
        message = f"the {processes} training processes exited with code {returncode} and no error report"
    logs = ", ".join(["train.log"] + [f"train.rank{r}.log" for r in range(1, processes)])
    return {"kind": "failed", "code": "internal", "message": f"{message}; see {logs} in the job folder"}


def launch(spec: dict, job_dir: str, dataset_file: str, init_adapter: str | None, queue, cancel) -> None:
    """Runs a K-process job to its end; `queue` gets what one process would have put there."""
    processes = int(spec["processes"])
    job = Path(job_dir)
    run = job / RUN_DIR
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    (run / "launch.json").write_text(json.dumps({"spec": spec, "dataset": dataset_file, "init_adapter": init_adapter}))
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # One host: the ranks' collectives (gloo; NCCL's bootstrap) stay on the loopback interface.
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    cmd = [sys.executable, "-m", "dart_trainer.distributed", "torchrun",
           "--nnodes=1", f"--nproc-per-node={processes}", "--master-addr=127.0.0.1", "--local-addr=127.0.0.1",
           "--rdzv-backend=static", "--max-restarts=0",
           "--monitor-interval=0.2", f"--shutdown-timeout={SHUTDOWN_S}",
           "-m", "dart_trainer.distributed", "rank", str(run)]
    print("dart trainer: " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)

    def terminated(*_):  # the server gave up waiting for a cancelled job: take every rank down too
        _stop(proc)
        os._exit(128 + signal.SIGTERM)
    signal.signal(signal.SIGTERM, terminated)

    parent = os.getppid()
    events = _Tail(run / "events.jsonl")
    outcome, outcome_at, cancel_at = None, None, None
    while True:
        returncode = proc.poll()
        for event in events.read():  # read after poll: all that rank 0 wrote before torchrun ended is seen
            if outcome is not None:
                continue
            if event["kind"] in ("done", "failed"):
                outcome, outcome_at = event, time.monotonic()  # told once every rank is gone (GPUs free)
            else:
                queue.put(event)
        if returncode is not None:
            break
        now = time.monotonic()
        if cancel.is_set() and cancel_at is None:
            (run / "cancel").touch()
            cancel_at = now
        if (cancel_at is not None and now - cancel_at > CANCEL_GRACE_S) or (outcome_at is not None and now - outcome_at > 30):
            _stop(proc)
        if os.getppid() != parent:  # the server died: no one is left to report to
            _stop(proc)
            return
        time.sleep(0.2)
    if outcome is None and cancel_at is not None:
        outcome = {"kind": "failed", "code": "cancelled", "message": "cancelled by the client"}
    queue.put(outcome or failure_event(run, processes, returncode))


def _die_with_parent(sig: int) -> None:
    """Linux: this process gets `sig` when the one that started it dies (no rank outlives its launcher)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _torchrun(argv: list) -> None:
    """torch.distributed.run's main, its rendezvous store on 127.0.0.1 only; a failure it reports (which rank,
    how) is kept in RUN_DIR/failure.json."""
    parent = os.getppid()
    _die_with_parent(signal.SIGTERM)  # torchrun stops its ranks on SIGTERM
    if os.getppid() != parent:
        sys.exit(1)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main
    argv = [f"--master-port={loopback_store()}"] + argv
    try:
        main(argv)
    except ChildFailedError as e:
        ended = [{"rank": rank, "exitcode": f.exitcode,
                  "what": f"was killed by {f.signal_name()}" if f.exitcode < 0 else f"exited with code {f.exitcode}"}
                 for rank, f in sorted(e.failures.items())]
        (Path(argv[-1]) / "failure.json").write_text(json.dumps(ended))
        sys.exit(1)


def _watch_parent() -> None:
    """A rank whose torchrun is gone (SIGKILLed) stops instead of training on as an orphan."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _rank(run: Path) -> None:
    """One rank, started by torchrun (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment)."""
    _watch_parent()
    rank = int(os.environ["RANK"])
    job = run.parent
    # Rank 0 logs to train.log (with the launcher and torchrun), the others each to train.rank<N>.log.
    log = os.open(job / ("train.log" if rank == 0 else f"train.rank{rank}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    launch_spec = json.loads((run / "launch.json").read_text())
    cancel_flag = run / "cancel"

    def emit(event: dict) -> None:
        if rank == 0:  # the client hears from rank 0 only
            _append_event(run / "events.jsonl", event)

    from .train import run_training
    try:
        run_training(launch_spec["spec"], str(job), launch_spec["dataset"], launch_spec["init_adapter"], emit,
                     cancel_flag.exists)
    except BaseException as e:
        traceback.print_exc()
        (run / f"error-rank{rank}.json").write_text(json.dumps({"rank": rank, "time": time.time(),
                                                                 "message": f"{type(e).__name__}: {e}"}))
        sys.stderr.flush()
        os._exit(1)  # at once: the other ranks are stopped by torchrun, not left waiting on this one's teardown
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1:2] == ["torchrun"]:
        _torchrun(sys.argv[2:])
    elif sys.argv[1:2] == ["rank"]:
        _rank(Path(sys.argv[2]))
    else:
        sys.exit("usage: python -m dart_trainer.distributed (torchrun TORCHRUN_ARGS | rank RUN_DIR)")
