"""POEM inside other prompt pipelines. Each submodule needs its framework as an optional extra:

* :mod:`memrl.integrations.langchain` — :class:`~memrl.integrations.langchain.PoemLangChainSelector`,
  a LangChain ``BaseExampleSelector`` for ``FewShotPromptTemplate`` (``pip install memrl[langchain]``).

Nothing here is imported by ``import memrl``; importing a submodule without its framework raises
an ``ImportError`` naming the extra to install.
"""
