"""The ``qiao`` command: serve, config check, version; the admin commands live in
:mod:`qiao.cli_admin` (db, keys, teams, providers)."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence

from . import __version__, cli_admin
from .config import Config, ConfigError, KeyConfig, from_env, load, mock_demo
from .workers import ignore_hangup, supervise, worker_index

_GENERATED_ENV = "QIAO__GENERATED_KEY"

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qiao", description="Qiao (桥) LLM API gateway")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "-c",
        "--config",
        default=os.environ.get("QIAO_CONFIG"),
        help="YAML config file (default: $QIAO_CONFIG, else the environment)",
    )
    serve.add_argument("--listen", help="HOST:PORT to bind (default 127.0.0.1:8080)")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="serve the built-in mock provider: no keys, no network needed",
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="gateway processes sharing the port (default 1)"
    )
    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    sub.add_parser("version", help="print the version")
    cli_admin.add_commands(sub)
    return p


def _load_for_serve(args: argparse.Namespace) -> Config:
    if args.demo:
        config = mock_demo(listen=args.listen)
    elif args.config:
        config = load(args.config)
        if args.listen:
            config = config.model_copy(update={"listen": args.listen})
    else:
        config = from_env(listen=args.listen)
        if not config.providers:
            raise ConfigError(
                "no providers configured: set OPENAI_API_KEY, DEEPSEEK_API_KEY, DASHSCOPE_API_KEY, "
                "... or pass --config FILE, or try --demo"
            )
    if not config.keys and config.admin_key is None:
        # No default password: mint a random key for this run and show it once.
        key = "sk-qiao-" + secrets.token_urlsafe(24)
        config = config.model_copy(update={"keys": (KeyConfig(name="generated", key=key),)})
        print(f"qiao: no keys configured; this run accepts the key  {key}", file=sys.stderr)
    return config


def _serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    ignore_hangup()  # a closed terminal is no reason to stop serving
    config = _load_for_serve(args)
    index = worker_index()
    if args.workers > 1 and index is None:
        child_argv = _without_workers(argv)
        env = {**os.environ, "QIAO__BOOTSTRAP_TOKEN": "qiao-bootstrap-" + secrets.token_urlsafe(24)}
        return supervise(child_argv, args.workers, env)
    if index is not None:
        from .storage.journal import worker_journal

        storage = config.storage
        journal = worker_journal(storage.journal_dir, index)  # the others recover it too
        config = config.model_copy(
            update={"storage": storage.model_copy(update={"journal_dir": journal})}
        )
    from .app import run_server  # imported late: `qiao version` stays fast

    run_server(config, reuse_port=index is not None)
    return 0


def _without_workers(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def _check(args: argparse.Namespace) -> int:
    config = load(args.file)
    print(
        f"{args.file}: OK — {len(config.providers)} providers, {len(config.models)} models, "
        f"{len(config.keys)} keys, listen {config.listen}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args, argv)
        if args.command == "config":
            return _check(args)
        if args.command in cli_admin.COMMANDS:
            return cli_admin.run(args)
        print(f"qiao {__version__}")
        return 0
    except ConfigError as exc:
        print(f"qiao: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
