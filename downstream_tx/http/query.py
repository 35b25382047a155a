"""Query-string parameters, checked: a value that is not what the route takes is a JSON 400
``invalid_query`` saying what was wrong (absent: the default; given, even empty: checked)."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.iweb import IRequest

from downstream_tx.http.errors import ApiError, error_body


def bad_query(message: str) -> ApiError:
    return ApiError(400, error_body("invalid_query", message))


def query_arg(request: IRequest, name: str) -> str | None:
    """The query parameter's last value, None when it is absent (an empty value is a value)."""
    values = (request.args or {}).get(name.encode())
    if not values:
        return None
    try:
        return values[-1].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise bad_query(f"{name} is not UTF-8") from None


def int_arg(request: IRequest, name: str, default: int, lo: int, hi: int) -> int:
    """A whole number from ``lo`` to ``hi``."""
    text = query_arg(request, name)
    if text is None:
        return default
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise bad_query(f"{name} must be an integer from {lo} to {hi}")
    return int(text)


def choice_arg(request: IRequest, name: str, default: str, choices: Sequence[str]) -> str:
    """One of ``choices``."""
    text = query_arg(request, name)
    if text is None:
        return default
    if text not in choices:
        raise bad_query(f"{name} must be one of {', '.join(choices)}")
    return text
