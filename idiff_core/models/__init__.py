"""Network architectures only, key-compatible with the published checkpoints they load."""
