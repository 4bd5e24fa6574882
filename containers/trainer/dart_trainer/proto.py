"""Loads the gRPC contract from proto/ at run time, so no generated code is committed."""
import os
import sys
from pathlib import Path

import grpc


def _proto_root() -> Path:
    env = os.environ.get("DART_PROTO_ROOT")
    if env:
        return Path(env)
    # Repository layout: containers/trainer/dart_trainer/ -> proto/ at the top.
    return Path(__file__).resolve().parents[3] / "proto"


_root = str(_proto_root())
if _root not in sys.path:
    sys.path.insert(0, _root)

pb, services = grpc.protos_and_services("dart/trainer/v1/trainer.proto")
