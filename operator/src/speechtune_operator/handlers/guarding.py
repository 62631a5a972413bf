"""Handler failures told in our words only.

kopf turns a handler's exception into a log line *and* an Event on the object, with
`str(exception)` and the traceback in the message. An exception's text can carry what the
user wrote (a ValueError quoting a spec value, an API error whose body echoes the request)
or what a trainer's endpoint sent; none of it may reach an Event, the status or a log line.
So every handler runs inside `in_our_words`: anything but kopf's own errors (whose messages
we write) becomes a kopf.TemporaryError with a fixed phrase of ours (kopf retries it), and
the log says which exception type failed at which line of our code, without its text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
from typing import Iterator

import kopf

from speechtune_operator.client import api

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def in_our_words(what: str, *, delay: float) -> Iterator[None]:
    try:
        yield
    except (kopf.TemporaryError, kopf.PermanentError):
        raise  # messages we wrote
    except Exception as error:  # noqa: BLE001 - the point: no exception text leaves here
        described = api.describe_error(error)
        logger.error("%s failed: %s at %s", what, described, where(error))
        raise kopf.TemporaryError(f"{what} failed: {described}; will retry", delay=delay) from None


def where(error: BaseException) -> str:
    """file:line of the innermost frame: our code or a library's, never a message."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno}"
