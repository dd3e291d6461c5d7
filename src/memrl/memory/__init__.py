"""Episodic kNN memory: question keys -> bounded FIFO lists of value vectors."""

from memrl.memory.backends import BACKENDS, topk_search
from memrl.memory.episodic import EpisodicMemory, MemoryFormatError

__all__ = ["BACKENDS", "EpisodicMemory", "MemoryFormatError", "topk_search"]
