"""Reward state that belongs to one process.

A reward object that learns as it scores (Memory-R+'s memories, outcome-UCB's answer counts) is
only right in the process whose trainer saves it. TRL's ``AsyncGRPOTrainer`` pickles the reward
functions into a spawned child and scores there; a copy made that way (or by forking) would
write state that no checkpoint ever sees, silently. :class:`ProcessBound` makes such a copy
refuse to score, naming the fix.
"""

from __future__ import annotations

import os


class ProcessBound:
    """Mixin: the process that built the object (or claimed it) is the only one that may score.

    Subclasses call :meth:`_bind_process` when they are built and :meth:`_check_process` before
    they compute; ``_state_name`` names what a copy would lose, ``_copy_note`` adds what else it
    would get wrong.
    """

    _state_name = "state"
    _copy_note = ""

    def _bind_process(self) -> None:
        self._owner_pid = os.getpid()

    def _check_process(self) -> None:
        """Refuse to score in another process than the one that built this object (or claimed it)."""
        owner = getattr(self, "_owner_pid", None)
        if owner is not None and owner != os.getpid():
            raise RuntimeError(
                f"{type(self).__name__} was built in process {owner} and is computing rewards in process "
                f"{os.getpid()}: it is a copy (TRL's AsyncGRPOTrainer computes rewards in a spawned child process), "
                f"so the {self._state_name} it writes is not what the trainer saves in its checkpoints"
                f"{self._copy_note}. Keep it in a `memrl serve` process and give the trainer "
                "memrl.integrations.remote.RemoteMemoryReward(<service url>).reward_functions() instead "
                "(docs/training.md, AsyncGRPO). If this process saves it itself, call claim_process() on it.")

    def claim_process(self):
        """Make the calling process this object's owner: for a copy in a process that saves its
        state itself; :meth:`_check_process` then passes here. Returns the object."""
        self._bind_process()
        return self
