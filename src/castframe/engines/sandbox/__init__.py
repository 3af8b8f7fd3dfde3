"""The sandbox engine: character-consistent pictures on a CPU with no model weights."""

from castframe.engines.sandbox.engine import SandboxEngine

__all__ = ["SandboxEngine"]
