"""Without their framework, the integration modules fail on import with the extra to install."""

import importlib
import re
import sys

import pytest


@pytest.mark.parametrize(("module", "framework", "extra"), [
    ("memrl.integrations.langchain", "langchain_core", "memrl[langchain]"),
    ("memrl.integrations.dspy", "dspy", "memrl[dspy]"),
])
def test_missing_framework_names_the_extra(monkeypatch, module, framework, extra):
    monkeypatch.delitem(sys.modules, module, raising=False)
    for name in [m for m in sys.modules if m == framework or m.startswith(framework + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, framework, None)  # `import framework` now raises ImportError
    with pytest.raises(ImportError, match=re.escape(f"pip install '{extra}'")):
        importlib.import_module(module)
    import memrl.integrations  # noqa: F401  (the package itself needs no framework)
