"""DART trainer sidecar: TRL/PEFT LoRA and QLoRA training served over gRPC (proto/dart/trainer/v1)."""

__version__ = "0.1.0"
PROTOCOL = "dart.trainer.v1"
