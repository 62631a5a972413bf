"""Handler failures reach logs and Events in our words only: the text of an exception (which
may quote a spec value, an API error body or a trainer's answer) never does."""

from __future__ import annotations

import logging

import kopf
import kubernetes
import pytest

from speechtune_operator.handlers import guarding

SECRET = "eyJhbGciOi-user-or-fetched-data-4242"


def api_error(status: int) -> kubernetes.client.ApiException:
    error = kubernetes.client.ApiException(status=status, reason=f"Bad {SECRET}")
    error.body = f'{{"message": "admission webhook denied: spec.image {SECRET}"}}'
    return error


@pytest.mark.parametrize(("error", "said"), [
    (ValueError(f"invalid literal for int() with base 10: '{SECRET}'"), "ValueError"),
    (KeyError(SECRET), "KeyError"),
    (UnicodeDecodeError("utf-8", SECRET.encode(), 0, 1, SECRET), "UnicodeDecodeError"),
    (api_error(422), "Kubernetes API 422 Unprocessable Entity"),
    (api_error(403), "Kubernetes API 403 Forbidden"),
    (api_error(599), "Kubernetes API 599"),
    (OSError(SECRET), "OSError"),
], ids=["value", "key", "unicode", "api-422", "api-403", "api-odd-status", "os"])
def test_exception_text_is_replaced_by_our_words(error: Exception, said: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(kopf.TemporaryError) as raised:
        with guarding.in_our_words("creating the children", delay=2):
            raise error
    assert str(raised.value) == f"creating the children failed: {said}; will retry"
    assert raised.value.delay == 2
    assert raised.value.__suppress_context__  # kopf's log of it prints no chained traceback
    assert SECRET not in caplog.text
    assert "test_operator_guarding.py:" in caplog.text  # where it failed, for us


def test_our_own_kopf_errors_pass_unchanged() -> None:
    with pytest.raises(kopf.TemporaryError, match="waiting for garbage collection"):
        with guarding.in_our_words("x", delay=1):
            raise kopf.TemporaryError("waiting for garbage collection", delay=2)
