"""The ``aeserve`` command line: the Typer app, the error wrapper and the entry point.

One module per area registers its verbs on ``app``: :mod:`.train_cmds` (train, export),
:mod:`.calibrate_cmds` (calibrate),
:mod:`.file_cmds` (score, encode, decode, reconstruct, sample), :mod:`.serve_cmds` (serve),
:mod:`.inspect_cmds` (info, plot, report, bench, demo); shared options and choices live
in :mod:`.options`. Stage code is imported inside each verb, so ``aeserve --help`` and the
scoring verbs start without importing torch.

Every user mistake (bad file, bad bundle, missing backend) prints one red line on stderr
and exits with status 2; no traceback. Ctrl-C exits 130 and SIGTERM 143, after removing the
temporary output files (outputs are written atomically, so nothing partial is left).
"""

from __future__ import annotations

import functools
import signal
import sys
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

from aeserve.errors import AeserveError, Interrupted

__all__ = ["app", "main", "user_errors", "err", "out", "Terminated"]

app = typer.Typer(
    name="aeserve",
    help="Energy-based autoencoders: train in PyTorch, export to ONNX, score files without PyTorch.\n\n"
         "Start with `aeserve demo`, then `aeserve train DATA --kind ae` and `aeserve score BUNDLE DATA -o OUT`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
#: progress, summaries and errors go to stderr; results (tables, JSON) to stdout
err = Console(stderr=True, soft_wrap=True, highlight=False)
out = Console(soft_wrap=True, highlight=False)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt, so that ``finally`` blocks and
    atomic writers clean up before the process exits with 143."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def user_errors(fn: Callable) -> Callable:
    """Turn AeserveError into one red line and exit code 2; Ctrl-C into exit 130, SIGTERM 143."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Interrupted as exc:
            err.print(f"[red]{'terminated' if exc.exit_code == 143 else 'interrupted'}[/]: {escape(str(exc))}")
            raise typer.Exit(exc.exit_code) from None
        except AeserveError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]: nothing was written")
            raise typer.Exit(130) from None
        except Terminated:
            err.print("[red]terminated[/]: nothing was written")
            raise typer.Exit(143) from None
    return wrapper


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point: usage errors, like user errors, are one line and exit 2."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Abort:
        err.print("[red]interrupted[/]")
        code = 130
    except Terminated:
        err.print("[red]terminated[/]")
        code = 143
    except Exception as exc:
        # Click's exception protocol (click, or the copy typer vendors): format_message + exit_code.
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            out.print(ctx.get_help(), markup=False)
            code = 0
        else:
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            err.print(f"[bold red]error:[/] {escape(exc.format_message())}{escape(hint)}")
            code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)


# the verbs register themselves on ``app`` (in this order in --help)
from aeserve.cli import train_cmds, calibrate_cmds, file_cmds, serve_cmds, inspect_cmds  # noqa: E402,F401,I001
