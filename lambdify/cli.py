"""The `lambdify` command line: `lambdify invoke TARGET [--event FILE|-]`, `lambdify serve TARGET...`."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__

EXIT_FUNCTION_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as argparse does, without the usage dump
        self.exit(EXIT_USAGE, f"lambdify: {message}\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {port}")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lambdify", description="Run functions with the AWS Lambda execution model.")
    parser.add_argument("--version", action="version", version=f"lambdify {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    invoke = commands.add_parser("invoke", help="run one invocation and print the result as JSON")
    invoke.add_argument("target", help="module:attr, path/to/file.py:attr, or path/to/file.py")
    invoke.add_argument("--event", default=None, help="JSON event file, or - for standard input (default: {})")
    _log_format_option(invoke)
    serve = commands.add_parser("serve", help="serve functions over HTTP and the Lambda Invoke API (uvicorn)")
    serve.add_argument("targets", nargs="+", metavar="TARGET", help="module:attr, file.py:attr, or file.py")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="port to bind, 0-65535 (default: 8080)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes, each with its own contexts")
    serve.add_argument("--reload", action="store_true", help="restart when source files change (development)")
    serve.add_argument("--isolation", choices=("thread", "process"), default=None, help="override every function's")
    serve.add_argument(
        "--status",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the status page at /_lambdify/ (default: on when bound to loopback, else off)",
    )
    _log_format_option(serve)
    emulate = commands.add_parser(
        "emulate", help="run COMMAND as a Lambda runtime (the Runtime API), behind the Invoke API and HTTP events"
    )
    emulate.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    emulate.add_argument("--port", type=_port, default=8080, help="port to bind, 0-65535 (default: 8080)")
    emulate.add_argument("--name", default="function", help="the function's name (default: function)")
    emulate.add_argument("--timeout", type=float, default=3.0, help="seconds per invocation (default: 3)")
    emulate.add_argument(
        "--memory-mb",
        type=int,
        default=None,
        help="memory size in MB (default: 128); a process whose peak passes it fails its invocation",
    )
    emulate.add_argument("--max-contexts", type=int, default=4, help="runtime processes at most (default: 4)")
    emulate.add_argument("--idle-ttl", type=float, default=600.0, help="seconds an idle process lives (default: 600)")
    emulate.add_argument("runtime", nargs=argparse.REMAINDER, metavar="-- COMMAND...", help="the runtime to run")
    _log_format_option(emulate)
    return parser


def _log_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="Lambda's text lines or its JSON records (default: $AWS_LAMBDA_LOG_FORMAT, else text)",
    )


def _apply_log_format(choice: str | None) -> None:
    """`--log-format` wins over the environment, and reaches `serve`'s worker processes through it."""
    if choice is not None:
        os.environ["AWS_LAMBDA_LOG_FORMAT"] = "JSON" if choice == "json" else "Text"


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _warn_exposed(host: str, what: str) -> None:
    print(
        f"lambdify: WARNING: serving on {host}, beyond this machine; the Invoke API has no "
        f"authentication, so anyone who can reach it can invoke {what}",
        file=sys.stderr,
    )


def _print_urls(host: str, port: int, names: list[str]) -> str:
    """Print each function's URL and Invoke API URL; return the base URL."""
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    for name in names:
        print(f"{name}: {base}/{name}/  (Invoke API: {base}/2015-03-31/functions/{name}/invocations)", flush=True)
    return base


def _bind_problem(host: str, port: int) -> str | None:
    """Why uvicorn could not listen on host:port, found before it starts (it would log the error
    only after starting the app, and exit 3); None if a trial bind succeeds."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror}"
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as trial:
                trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
                trial.bind(address)
        except OSError as exc:
            hint = "; is another server running there? choose another --port" if exc.errno == errno.EADDRINUSE else ""
            return f"cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}{hint}"
    return None


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
    from .core import json_logs

    if json_logs.json_requested():
        json_logs.configure()
        return
    log = logging.getLogger("lambdify")
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.NullHandler) for h in log.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(stream)
    log.setLevel(logging.INFO)


def invoke_command(target: str, event_source: str | None) -> int:
    from .core.errors import FunctionError, LambdifyError
    from .core.loader import TargetError

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
    # What the handler prints is its log, as on Lambda: keep stdout for the result, also at the
    # descriptor level, where a process-isolated handler's child writes.
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            output, status = json.dumps(function.invoke(event)), 0
    except FunctionError as error:
        output, status = json.dumps(error.to_payload()), EXIT_FUNCTION_ERROR
    except LambdifyError as error:
        payload = {"errorMessage": str(error), "errorType": type(error).__name__}
        output, status = json.dumps(payload), EXIT_FUNCTION_ERROR
    except TypeError as error:  # the event itself was unusable
        output, status = "", _fail(str(error))
    finally:
        function.shutdown()
        sys.stdout.flush()
        os.dup2(result_fd, 1)
        os.close(result_fd)
    if output:
        print(output)
    return status


_TARGETS_ENV = "LAMBDIFY_SERVE_TARGETS"
_ISOLATION_ENV = "LAMBDIFY_SERVE_ISOLATION"
_STATUS_ENV = "LAMBDIFY_SERVE_STATUS"


def serve_app() -> Any:
    """The app each `lambdify serve` worker runs (a uvicorn factory: workers import it afresh)."""
    from .http.app import FunctionApp

    functions = [fn for target in json.loads(os.environ[_TARGETS_ENV]) for fn in load_functions(target)]
    isolation = os.environ.get(_ISOLATION_ENV)
    for function in functions:
        if isolation and function.config.isolation != isolation:
            function.config = function.config.replace(isolation=isolation)
    _configure_logging()
    return FunctionApp(functions, status=os.environ.get(_STATUS_ENV) == "1")


def serve_command(args: argparse.Namespace) -> int:
    from .core.loader import TargetError

    if args.workers < 1:
        return _fail(f"--workers must be at least 1, got {args.workers}")
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return _fail("lambdify serve needs uvicorn: pip install 'lambdify[serve]'")
    try:
        functions = [fn for target in args.targets for fn in load_functions(target)]
    except TargetError as exc:
        return _fail(str(exc))
    names = [fn.config.name for fn in functions]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        return _fail(f"two functions are named {duplicates[0]!r}; give one a different name=")
    if args.isolation == "process" or any(fn.config.isolation == "process" for fn in functions):
        from .isolation.locating import handler_location

        try:
            for function in functions:
                handler_location(function.engine)
        except ValueError as exc:
            return _fail(str(exc))
    problem = _bind_problem(args.host, args.port)
    if problem is not None:
        return _fail(problem)
    loopback = _is_loopback(args.host)
    status = loopback if args.status is None else args.status
    if status and "_lambdify" in names:  # (the status page's path: FunctionApp refuses it too)
        return _fail(
            "a function named '_lambdify' would be hidden by the status page at /_lambdify/: "
            "give it a different name=, or pass --no-status"
        )
    if not loopback:
        _warn_exposed(args.host, "these functions")
        if status:
            print(
                "lambdify: WARNING: the status page (/_lambdify/) is on, beyond this machine; it has no "
                "authentication, so anyone who can reach it can read these functions' statistics and logs",
                file=sys.stderr,
            )
    base = _print_urls(args.host, args.port, names)
    if status:
        print(f"status: {base}/_lambdify/  (stats.json, metrics)", flush=True)
    os.environ[_STATUS_ENV] = "1" if status else "0"
    os.environ[_TARGETS_ENV] = json.dumps([os.path.abspath(t) if t.endswith(".py") else t for t in args.targets])
    if args.isolation:
        os.environ[_ISOLATION_ENV] = args.isolation
    import uvicorn

    with _status_dir(status and args.workers > 1):
        uvicorn.run(
            "lambdify.cli:serve_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            reload=args.reload,
            log_level="info",
            timeout_graceful_shutdown=None,
        )
    return 0


def emulate_command(args: argparse.Namespace) -> int:
    """`lambdify emulate ... -- COMMAND...`: COMMAND's processes are the function's execution contexts."""
    runtime = args.runtime[1:] if args.runtime[:1] == ["--"] else args.runtime
    if not runtime:
        return _fail("lambdify emulate needs a runtime command after --, e.g. -- python -m awslambdaric fn.handler")
    try:
        import uvicorn
    except ImportError:
        return _fail("lambdify emulate needs uvicorn: pip install 'lambdify[serve]'")
    from .aws.emulate import emulated_function
    from .http.app import FunctionApp

    try:
        function = emulated_function(
            runtime,
            name=args.name,
            timeout=args.timeout,
            memory_mb=args.memory_mb,
            max_contexts=args.max_contexts,
            idle_ttl=args.idle_ttl,
        )
    except (TypeError, ValueError) as exc:
        return _fail(str(exc))
    problem = _bind_problem(args.host, args.port)
    if problem is not None:
        return _fail(problem)
    loopback = _is_loopback(args.host)
    if not loopback:
        _warn_exposed(args.host, "this function")
    _print_urls(args.host, args.port, [args.name])
    _configure_logging()
    app = FunctionApp([function], status=loopback)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=None)
    return 0


@contextlib.contextmanager
def _status_dir(needed: bool) -> Any:
    """A private run directory where each worker publishes its statistics (see http.workers)."""
    if not needed:
        yield
        return
    import shutil
    import tempfile

    from .http.workers import ENV

    folder = tempfile.mkdtemp(prefix="lambdify-status-")  # (mode 0700)
    os.environ[ENV] = folder
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _apply_log_format(args.log_format)
    if args.command == "invoke":
        return invoke_command(args.target, args.event)
    if args.command == "serve":
        return serve_command(args)
    if args.command == "emulate":
        return emulate_command(args)
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def load_functions(target: str) -> list[Any]:
    """The Functions a TARGET names: one for `...:attr`, every one defined in a bare `file.py`."""
    from pathlib import Path

    from .core.loader import TargetError, import_file, load_attribute
    from .function import Function

    if target.endswith(".py") and ":" not in target.rpartition("/")[2]:
        module = import_file(Path(target))
        found = [value for value in vars(module).values() if isinstance(value, Function)]
        unique = list({id(fn): fn for fn in found}.values())
        if not unique:
            raise TargetError(f"{target}: defines no @handler function")
        return unique
    obj = load_attribute(target)
    if not isinstance(obj, Function):
        raise TargetError(f"{target}: is a {type(obj).__name__}, not a @handler function")
    return [obj]
