"""The `lambdify` command line: `lambdify invoke TARGET [--event FILE|-]`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

EXIT_FUNCTION_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as argparse does, without the usage dump
        self.exit(EXIT_USAGE, f"lambdify: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lambdify", description="Run functions with the AWS Lambda execution model.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    invoke = commands.add_parser("invoke", help="run one invocation and print the result as JSON")
    invoke.add_argument("target", help="module:attr, path/to/file.py:attr, or path/to/file.py")
    invoke.add_argument("--event", default=None, help="JSON event file, or - for standard input (default: {})")
    return parser


def _fail(message: str) -> int:
    print(f"lambdify: {message}", file=sys.stderr)
    return EXIT_USAGE


def _read_event(source: str | None) -> Any:
    if source is None:
        return {}
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()  # noqa: SIM115
    except OSError as exc:
        raise ValueError(f"cannot read event file {source}: {exc.strerror}") from None
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"event {'from stdin' if source == '-' else source} is not valid JSON: {exc}") from None


def _configure_logging() -> None:
    log = logging.getLogger("lambdify")
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.NullHandler) for h in log.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(stream)
    log.setLevel(logging.INFO)


def invoke_command(target: str, event_source: str | None) -> int:
    from ._loader import TargetError, load_functions
    from .errors import FunctionError, LambdifyError

    try:
        event = _read_event(event_source)
        functions = load_functions(target)
    except (TargetError, ValueError) as exc:
        return _fail(str(exc))
    if len(functions) > 1:
        names = ", ".join(fn.config.name for fn in functions)
        return _fail(f"{target}: defines {len(functions)} functions ({names}); name one as {target}:NAME")
    function = functions[0]
    _configure_logging()
    try:
        # What the handler prints is its log, as on Lambda: keep stdout for the result.
        with contextlib.redirect_stdout(sys.stderr):
            result = function.invoke(event)
    except FunctionError as error:
        print(json.dumps(error.to_payload()))
        return EXIT_FUNCTION_ERROR
    except LambdifyError as error:
        print(json.dumps({"errorMessage": str(error), "errorType": type(error).__name__}))
        return EXIT_FUNCTION_ERROR
    except TypeError as error:  # the event itself was unusable
        return _fail(str(error))
    finally:
        function.shutdown()
    print(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "invoke":
        return invoke_command(args.target, args.event)
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
