"""Loopback helpers of the ``memrl serve`` tests: GSM8K questions with model-like completions, the
requests OpenRLHF would send for them (real SmolLM2 tokenizer), an in-process service and a
``memrl serve`` subprocess."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers.gsm8k_questions import QUESTION_AND_GOLD
from memrl.serve.app import ServiceThread, build_service
from memrl.serve.client import RewardClient
from memrl.serve.config import ServeConfig
from memrl.tasks.math import system_prompt

# the GSM8K questions and gold answers the steps use, from the shared data
Q = {name: QUESTION_AND_GOLD[name] for name in ("clips", "weng", "betty")}
# three GRPO steps of 2 questions x 4 completions, written like a small model's outputs
STEPS = [
    [("clips", "<think>\nIn May she sold 48 / 2 = 24 clips.\nAltogether 48 + 24 = 72.\n</think>\n<answer>\n72\n</answer>"),
     ("clips", "<think>\nHalf of 48 is 24. 48 + 24 = 82\n</think>\n<answer>\n82\n</answer>"),
     ("clips", "She sold 48 and then 24, so 72 clips."),
     ("clips", "<think>\n48 * 2 = 96\n</think>\n<answer>\n96\n</answer>"),
     ("weng", "<think>\n$12 per hour is $0.2 per minute. 50 * 0.2 = 10\n</think>\n<answer>\n10\n</answer>"),
     ("weng", "<think>\n12 * 50 = 600\n</think>\n<answer>\n600\n</answer>"),
     ("weng", ""),
     ("weng", "<think>\n50 minutes is 5/6 of an hour, 12 * 5/6 = 10\n</think>\n<answer>\n10\n</answer>")],
    [("clips", "<think>\nApril 48, May half of that: 24. Total 72.\n</think>\n<answer>\n72\n</answer>"),
     ("clips", "<think>\n48 + 48 / 2 = 48 + 24 = 72\n</think>\n<answer>\n72\n</answer>"),
     ("clips", "<think>\n48 - 24 = 24\n</think>\n<answer>\n24\n</answer>"),
     ("clips", "<answer>\n70\n</answer>"),
     ("weng", "<think>\n12 / 60 = 0.2 dollars a minute, times 50 is 10 dollars.\n</think>\n<answer>\n10\n</answer>"),
     ("weng", "<think>\n12 + 50 = 62\n</think>\n<answer>\n62\n</answer>"),
     ("weng", "<think>\n60 - 50 = 10 minutes short, so 12 - 2 = 10\n</think>\n<answer>\n10\n</answer>"),
     ("weng", "I think she earned 12 dollars.")],
    [("betty", "<think>\nShe has 50. Parents 15, grandparents 30. 50 + 15 + 30 = 95. 100 - 95 = 5\n</think>\n<answer>\n5\n</answer>"),
     ("betty", "<think>\n100 / 2 = 50, 50 + 15 = 65, 100 - 65 = 35\n</think>\n<answer>\n35\n</answer>"),
     ("betty", "<think>\n50 + 15 + 15 = 80, so 20 more\n</think>\n<answer>\n20\n</answer>"),
     ("betty", "<think>\nHalf is 50; 15 and 2 * 15 = 30 make 45; 50 - 45 = 5\n</think>\n<answer>\n5\n</answer>"),
     ("clips", "<think>\n48 / 2 = 24 in May; 48 + 24 = 72 in all\n</think>\n<answer>\n72\n</answer>"),
     ("clips", "<think>\n48 + 2 = 50\n</think>\n<answer>\n50\n</answer>"),
     ("weng", "<think>\n50 / 60 * 12 = 10\n</think>\n<answer>\n10\n</answer>"),
     ("weng", "<think>\n12 * 60 / 50 = 14.4\n</think>\n<answer>\n14.4\n</answer>")],
]
# memory-r+ with explore on from step 1 (warm-up 1 step) and a small N: every reward is live by step 2
VALUES = {"method": "memory-r+", "memory_explore_warmup_steps": 1, "memory_max_keys": 64}


def chat_prompt(tokenizer, question: str) -> str:
    messages = [{"role": "system", "content": system_prompt("think")}, {"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def openrlhf_query(tokenizer, prompt: str, response: str) -> str:
    """What OpenRLHF's SingleTurnAgentExecutor posts as ``query``: the prompt's tokens, the
    generated tokens (ending in EOS) decoded together with ``skip_special_tokens=False``."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids += tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return tokenizer.decode(ids, skip_special_tokens=False)


def samples_of(step: int, tokenizer, steps=STEPS) -> list[dict]:
    out = []
    for qid, response in steps[step]:
        question, gold = Q[qid]
        prompt = chat_prompt(tokenizer, question)
        out.append({"question": question, "prompt": prompt, "response": response, "answer": gold,
                    "query": openrlhf_query(tokenizer, prompt, response)})
    return out


@contextlib.contextmanager
def service(encoder, values=None, **options):
    config = ServeConfig(port=0, **options)
    engine, app = build_service(dict(values or VALUES), config, encoder=encoder)
    with ServiceThread(app) as server:
        yield engine, RewardClient(server.url, token=config.token)


class Server:
    """``memrl serve`` in a subprocess (the CLI, the tests' cpu-tiny preset plus the flags below)."""

    ARGS = ["--config", "cpu-tiny", "--method", "memory-r+", "--set", "memory_explore_warmup_steps=0", "--commit-every", "4",
            "--snapshot-every", "1", "--port", "0"]

    def __init__(self, state_dir: Path, env: dict[str, str] | None = None, extra: tuple | list = (),
                 file_size_limit: int | None = None) -> None:
        cmd = [sys.executable, "-m", "memrl.cli", "serve", *self.ARGS, "--state-dir", str(state_dir), *extra]
        limit = None
        if file_size_limit is not None:  # RLIMIT_FSIZE: writing a file past this size fails with EFBIG
            limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, resource.RLIM_INFINITY))  # noqa: E731
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, preexec_fn=limit)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 120
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError("server did not start:\n" + "".join(self.output)) from None
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        self.client = RewardClient(self.url, retries=0)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def lift_file_size_limit(self) -> None:
        """Let the server write files of any size again (its hard limit was left unlimited)."""
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    def kill9(self) -> None:
        self.proc.kill()  # SIGKILL: no shutdown handler runs
        self.proc.wait(timeout=30)

    def children(self) -> list[int]:
        """Processes the server forked (its snapshot writers), from /proc (Linux)."""
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        return pids


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie waiting for its reaper counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
