"""The ``qiao`` command: serve, config check, version."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence

from . import __version__
from .config import Config, ConfigError, KeyConfig, from_env, load, mock_demo

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
    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    sub.add_parser("version", help="print the version")
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


def _serve(args: argparse.Namespace) -> int:
    config = _load_for_serve(args)
    from .app import run_server  # imported late: `qiao version` stays fast

    run_server(config)
    return 0


def _check(args: argparse.Namespace) -> int:
    config = load(args.file)
    print(
        f"{args.file}: OK — {len(config.providers)} providers, {len(config.models)} models, "
        f"{len(config.keys)} keys, listen {config.listen}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "config":
            return _check(args)
        print(f"qiao {__version__}")
        return 0
    except ConfigError as exc:
        print(f"qiao: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
