"""Loading a study's script (``studies/<name>/<script>``) as a module: the scripts are not a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def study_script(name: str, script: str = "run.py") -> ModuleType:
    """``studies/<name>/<script>`` loaded as a module."""
    spec = importlib.util.spec_from_file_location(f"study_{name}_{Path(script).stem}", STUDIES / name / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
