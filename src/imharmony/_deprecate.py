"""One way to rename a public keyword or option value without breaking its callers.

The vocabulary (the README's "Vocabulary" section) gives each concept one name. When a public
keyword or a string choice is renamed, the old name keeps working for a while and warns with a
:class:`DeprecationWarning` that names the new one:

- :func:`renamed_keywords`: a decorator, ``@renamed_keywords(kind="biology_type")``; the
  function's signature (``inspect.signature``) shows only the new names;
- :func:`renamed_value`: an old string choice, e.g. ``normalize="robust"`` for
  ``"robust_zscore"``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import DataError

__all__ = ["renamed_keywords", "renamed_value"]

F = TypeVar("F", bound=Callable[..., Any])


def renamed_keywords(**renames: str) -> Callable[[F], F]:
    """Accept old keyword names (``old="new"``), warn, and pass the value on under the new name.

    Parameters
    ----------
    **renames : str
        ``old_name="new_name"`` for each renamed keyword.

    Raises
    ------
    DataError
        At call time, when both the old and the new name are given.
    """

    def decorate(func: F) -> F:
        where = func.__qualname__

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise DataError(
                        f"{where}(): got both {old!r} (its former name) and {new!r}; pass only "
                        f"{new!r}."
                    )
                warnings.warn(
                    f"{where}(): the keyword {old!r} is deprecated; use {new!r}.",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def renamed_value(value: Any, renames: Mapping[str, str], what: str) -> Any:
    """``value``, or its new name (with a warning) when it is a former name of a choice.

    Parameters
    ----------
    value : object
        The value given.
    renames : mapping of str to str
        Former name -> current name.
    what : str
        How the option is named in the message, e.g. ``"harmonize_images(normalize=...)"``.
    """
    if isinstance(value, str) and value in renames:
        warnings.warn(
            f"{what}: {value!r} is deprecated; use {renames[value]!r}.",
            DeprecationWarning,
            stacklevel=3,
        )
        return renames[value]
    return value
