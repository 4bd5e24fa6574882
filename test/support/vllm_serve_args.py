"""Parses `vllm serve` argument lists with vLLM's own parser (as the official image's entrypoint does).

Reads a JSON list of argument lists (the containers' Cmd; the image's entrypoint is `vllm serve`) on stdin and
prints one JSON line: for each list, what vLLM understood, or the error it would stop with. One process for all,
because importing vLLM takes tens of seconds.
"""
import contextlib
import io
import json
import sys

import vllm.entrypoints.cli.serve as serve
from vllm.utils.argparse_utils import FlexibleArgumentParser

KEYS = ["model_tag", "model", "served_model_name", "host", "port", "dtype", "max_model_len", "enable_lora", "max_lora_rank",
        "max_loras", "max_cpu_loras", "generation_config", "gpu_memory_utilization", "enable_sleep_mode", "runner", "convert"]


def parse(argv: list) -> dict:
    parser = FlexibleArgumentParser(description="vllm serve argument check")
    subparsers = parser.add_subparsers(required=True, dest="subparser")
    commands = {}
    for cmd in serve.cmd_init():
        cmd.subparser_init(subparsers).set_defaults(dispatch_function=cmd.cmd)
        commands[cmd.name] = cmd
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(["serve", *argv])
            commands["serve"].validate(args)
    except SystemExit:
        return {"ok": False, "error": err.getvalue()}
    except Exception as e:  # noqa: BLE001 — validate() raises plain errors
        return {"ok": False, "error": f"{err.getvalue()}{e}"}
    return {"ok": True, "warnings": err.getvalue(), "args": {k: getattr(args, k, None) for k in KEYS}}


def main() -> None:
    print(json.dumps([parse(a) for a in json.load(sys.stdin)], default=str))


if __name__ == "__main__":
    main()
