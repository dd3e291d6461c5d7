"""memrl inside other frameworks. Each submodule needs its framework as an optional extra:

* :mod:`memrl.integrations.langchain` — :class:`~memrl.integrations.langchain.PoemLangChainSelector`,
  a LangChain ``BaseExampleSelector`` for ``FewShotPromptTemplate`` (``pip install memrl[langchain]``).
* :mod:`memrl.integrations.dspy` — :class:`~memrl.integrations.dspy.PoemFewShot`, a DSPy
  teleprompter whose compiled program sets each query's demonstrations at call time
  (``pip install memrl[dspy]``).
* :mod:`memrl.integrations.verl` — ``compute_score`` for verl's ``custom_reward_function``, which
  calls a ``memrl serve`` reward service. OpenRLHF needs no adapter: its ``--reward.remote_url``
  speaks ``memrl serve``'s protocol.
* :mod:`memrl.integrations.remote` — :class:`~memrl.integrations.remote.RemoteMemoryReward`, TRL
  reward functions computed by a ``memrl serve`` service (TRL's ``AsyncGRPOTrainer``, whose
  rewards run in a spawned process; standard library only).

Nothing here is imported by ``import memrl``; importing a submodule without its framework raises
an ``ImportError`` naming the extra to install.
"""
