"""The shape every one-shot command shares: run, report a failure in one line, print JSON.

A user who mistypes a path or has no model installed gets `<prog>: error: <why>` and a
non-zero exit, never a traceback: 2 for bad arguments, 1 when the work itself failed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from workers.runtime.audio import AudioFileError
from workers.runtime.bus import BusError
from workers.runtime.config import Settings
from workers.runtime.models import ModelNotFoundError
from workers.runtime.natsd import NatsServerError, ensure_nats


class CommandError(RuntimeError):
    """A command cannot do what was asked; the message says why and what to do."""


#: What a command reports in one line. RuntimeError covers the workers' own explanations
#: (a worker that exited, a turn that timed out) raised by the pipeline helpers.
COMMAND_ERRORS: tuple[type[BaseException], ...] = (
    CommandError,
    AudioFileError,
    ModelNotFoundError,
    BusError,
    NatsServerError,
    RuntimeError,
    TimeoutError,
    OSError,
)


def usage_error(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def run_command(
    prog: str,
    work: Callable[[], dict[str, Any]],
    *,
    json_out: bool,
    nats: Settings | None = None,
    show: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Run `work` (with an embedded NATS server for its duration when `nats` is given and
    nothing listens at its URL); its result is printed as the last stdout line with
    `json_out`, else handed to `show`."""
    server = None
    try:
        if nats is not None:
            server = ensure_nats(nats)
        result = work()
    except COMMAND_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.stop()
    if json_out:
        print(json.dumps(result))
    elif show is not None:
        show(result)
    return 0
