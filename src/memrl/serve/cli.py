"""``memrl serve``: the command line of the reward service.

The reward options are ``memrl train``'s (a grpo preset or YAML file with ``--config``, then
``--set key=value``, then the flags: ``--method``, ``--prompt-style``, ``--checker``, every
``--memory-*`` and ``--outcome-explore-*`` option), so a service and a TRL run built from the same
options compute the same rewards. The service options are :class:`~memrl.serve.config.ServeConfig`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from memrl.grpo.config import DEFAULT_PRESET, PRESET_FAMILY, TrainConfig, read_yaml_config
from memrl.options import (
    add_dataclass_arguments,
    build_config,
    field_names,
    given_values,
    parse_set,
    preset_names,
    preset_path,
)
from memrl.rewards.exploration import OutcomeExplorationConfig
from memrl.rewards.memory_rewards import MemoryRewardConfig
from memrl.rewards.registry import DERIVED_MEMORY_FIELDS
from memrl.serve.config import TRAIN_FIELDS, ServeConfig

logger = logging.getLogger(__name__)


def add_serve_subparser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve", help="the Memory-R / Memory-R+ reward service for OpenRLHF, verl and other trainers",
        description="Serve the rewards of a training config over HTTP: POST /get_reward (OpenRLHF's "
                    "--reward.remote_url protocol; memrl.integrations.verl for verl), with the memory in this "
                    "one process. Reward options as in `memrl train` (--config: a YAML file or a preset: "
                    f"{', '.join(preset_names(PRESET_FAMILY))}; default {DEFAULT_PRESET}; then --set, then the "
                    "flags). See docs/serve.md.")
    p.add_argument("--config", default=None, help=f"YAML file or preset name (default: {DEFAULT_PRESET})")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="override any training option (repeatable), e.g. --set max_completion_length=200")
    p.add_argument("--print-config", action="store_true", help="print the reward set and exit")
    add_dataclass_arguments(p, TrainConfig, title="reward options (TrainConfig)",
                            skip=[f for f in field_names(TrainConfig) if f not in TRAIN_FIELDS])
    add_dataclass_arguments(p, MemoryRewardConfig, title="Memory-R / Memory-R+ options (MemoryRewardConfig)",
                            skip=DERIVED_MEMORY_FIELDS)
    add_dataclass_arguments(p, OutcomeExplorationConfig,
                            title="outcome-ucb / outcome-batch options (OutcomeExplorationConfig)")
    add_dataclass_arguments(p, ServeConfig, title="service options (ServeConfig)")
    p.set_defaults(func=_cmd_serve)
    return p


def reward_values(args: argparse.Namespace) -> dict[str, Any]:
    """Flat reward options: preset/YAML, then ``--set``, then the flags (as ``memrl train``)."""
    values = read_yaml_config(preset_path(args.config or DEFAULT_PRESET, PRESET_FAMILY))
    values.update(parse_set(args.overrides))
    for cls in (TrainConfig, MemoryRewardConfig, OutcomeExplorationConfig):
        values.update(given_values(args, cls))
    return values


def _cmd_serve(args: argparse.Namespace) -> int:
    import json

    from memrl.serve.app import bind_socket, build_service, uvicorn_server
    from memrl.serve.config import build_reward_spec, check_respond_mode

    config = build_config(ServeConfig, given_values(args, ServeConfig))
    values = reward_values(args)
    if args.print_config:  # the reward set only: no snapshot is read, nothing is served
        spec = build_reward_spec(values)
        check_respond_mode(spec, config.respond)
        print(json.dumps({"rewards": dict(zip(spec.names, spec.weights)), "respond": config.respond,
                          "options": spec.options}, indent=2))
        return 0
    engine, app = build_service(values, config)
    spec = engine.spec
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.token:
        logger.warning("serving on %s without a token: anyone who can reach this port can read and change the memory "
                       "(set --token or $MEMRL_SERVE_TOKEN)", config.host)
    if not config.commit_every and not config.commit_idle_s:
        logger.warning("no automatic step boundary (--commit-every, --commit-idle-s): steps commit only on POST "
                       "/commit or a request with a higher 'step'")
    sock = bind_socket(config.host, config.port)
    host, port = sock.getsockname()[:2]
    resumed = f", resumed from {engine.resumed_from}" if engine.resumed_from else ""
    print(f"memrl serve: {spec.method} rewards ({', '.join(spec.names)}), respond={config.respond}, step "
          f"{engine.step}{resumed}", flush=True)
    print(f"memrl serve: listening on http://{host}:{port} (POST /get_reward)", flush=True)
    # uvicorn shuts down gracefully on SIGTERM (the final snapshot is written) and then re-raises
    # the signal under the handler found before it started: make that a clean exit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn_server(app).run(sockets=[sock])
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM after the graceful shutdown
        pass
    finally:
        engine.stop()
    if engine.final_error:  # the commits since the last snapshot are lost: say so, and exit non-zero
        print(f"memrl serve: error: stopped at step {engine.step} after {engine.commits} commits; "
              f"{engine.final_error}", file=sys.stderr, flush=True)
        return 1
    print(f"memrl serve: stopped at step {engine.step} after {engine.commits} commits"
          + (f"; snapshot {engine.stats()['last_snapshot']}" if engine.store is not None else ""), flush=True)
    return 0
