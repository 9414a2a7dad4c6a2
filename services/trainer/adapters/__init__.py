"""Adapters of the trainer: torch, ONNX, the registry, the artifact store."""
