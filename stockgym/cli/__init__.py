"""The ``stockgym`` command line. Thin: parse arguments, call the library, print.

User errors (bad data, unknown symbols, no network) print ``error: ...`` on stderr and
exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from stockgym.core import UsageError
from stockgym.data.errors import DataError

# Each module adds its subcommand group with ``register(subparsers)`` and binds handlers
# with ``parser.set_defaults(func=handler)``; handlers import heavy libraries lazily.
SUBCOMMAND_MODULES: list[str] = [
    "stockgym.cli.data",
    "stockgym.cli.backtest",
    "stockgym.cli.forecast",
    "stockgym.cli.train",
    "stockgym.cli.evaluate",
    "stockgym.cli.sweep",
    "stockgym.cli.quickstart",
]

EXAMPLES = """examples:
  stockgym quickstart                                   (the whole pipeline, offline)
  stockgym data show AAPL --source sample
  stockgym train --algo ppo --symbol AAPL --source sample --backbone lstm
  stockgym backtest --model runs/agents/RUN_DIR
  stockgym COMMAND --help                               (each command's own examples)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stockgym",
        description="Train and backtest RL agents that trade stocks, exactly and leak-free.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).register(sub)
    for p in parsers(parser):  # the deepest parser a command line reaches is the one to blame
        p.set_defaults(_parser=p)
    return parser


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every sub-parser below it."""
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out += parsers(sub)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's usage, not the top level's
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        args.func(args)
    except (DataError, UsageError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional extra is missing: say how to install it
        if "pip install" not in str(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
