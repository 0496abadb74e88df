"""What every harmonizer shares: one parameter rule, one fitted check, one model-file envelope.

A harmonizer (ComBat, the Nyúl standardizer, ...) derives from :class:`HarmonizerMixin` and a
scikit-learn base class, declares

- ``_parameter_constraints``: ``{name: Rule}`` for every ``__init__`` parameter (checked by
  :meth:`~HarmonizerMixin._validate_params` with one uniform message);
- ``_fitted_attribute``: a learned attribute that exists only once fitted;
- ``_model_kind`` / ``_model_version``: what its model files are;

and implements ``_model_content`` (fields + arrays to save), ``_model_arrays`` (type-check the
loaded fields, return the arrays they imply) and ``_restore`` (set the learned attributes).
:meth:`~HarmonizerMixin.save` and :meth:`~HarmonizerMixin.load` are then the same for all of
them (:mod:`imharmony._persist`).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import _persist
from .errors import HarmonizationError, ModelFileError, NotFittedError

__all__ = ["HarmonizerMixin", "Rule"]


@dataclass(frozen=True)
class Rule:
    """A parameter constraint: a test and the words that say what it accepts."""

    test: Callable[[Any], bool]
    text: str

    @staticmethod
    def boolean() -> Rule:
        return Rule(lambda v: isinstance(v, bool | np.bool_), "a bool")

    @staticmethod
    def real(low: float, *, strict: bool = True) -> Rule:
        def test(v: Any) -> bool:
            if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
                return False
            return math.isfinite(float(v)) and (v > low if strict else v >= low)

        return Rule(test, f"a finite number {'>' if strict else '>='} {low:g}")

    @staticmethod
    def integer(low: int) -> Rule:
        return Rule(
            lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)
            and v >= low,
            f"an int >= {low}",
        )

    @staticmethod
    def label_or_none() -> Rule:
        def test(v: Any) -> bool:
            if v is None or isinstance(v, str | numbers.Integral):
                return True
            return isinstance(v, numbers.Real) and math.isfinite(float(v))

        return Rule(test, "one site label (a str or a number) or None")

    @staticmethod
    def one_of(*options: Any) -> Rule:
        return Rule(
            lambda v: isinstance(v, str | int | float | bool | None) and v in options,
            f"one of {list(options)}",
        )


class HarmonizerMixin:
    """Shared parameter validation, fitted check and model files of every harmonizer."""

    _parameter_constraints: ClassVar[Mapping[str, Rule]] = {}
    _fitted_attribute: ClassVar[str] = ""
    _model_kind: ClassVar[str] = ""
    _model_version: ClassVar[int] = 1

    # -- parameters ----------------------------------------------------------------------------
    def _validate_params(self) -> None:
        """Check every constrained ``__init__`` parameter; one message for every class."""
        for name, rule in self._parameter_constraints.items():
            if not hasattr(self, name):  # a subclass without that parameter (CovBat: no smooth)
                continue
            value = getattr(self, name)
            if not rule.test(value):
                raise HarmonizationError(
                    f"The {name!r} parameter of {type(self).__name__} must be {rule.text}; "
                    f"got {value!r}."
                )

    # -- fitted state --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, self._fitted_attribute):
            name = type(self).__name__
            raise NotFittedError(
                f"This {name} instance is not fitted yet; call fit(...) first or load a saved "
                f"model with {name}.load(path)."
            )

    # -- model files ---------------------------------------------------------------------------
    def _model_content(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON fields (besides ``params``) and arrays that make up the fitted model."""
        raise NotImplementedError

    @classmethod
    def _model_arrays(
        cls, path: Path, content: dict[str, Any]
    ) -> Mapping[str, _persist.ArraySpec]:
        """Type-check the loaded fields (naming a bad one) and return the arrays they imply."""
        raise NotImplementedError

    def _restore(
        self, path: Path, content: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> None:
        """Set the learned attributes from verified fields and arrays (errors name ``path``)."""
        raise NotImplementedError

    def _params_for_file(self) -> dict[str, Any]:
        return self.get_params(deep=False)  # type: ignore[attr-defined,no-any-return]

    def save(
        self, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None
    ) -> Path:
        """Save the fitted model: ``path`` (a JSON manifest) and its arrays beside it (``.npz``).

        ``metadata`` is any JSON-serializable mapping stored with the model (the command line
        keeps the table's column roles there); it comes back as ``metadata_`` after :meth:`load`.
        The model is replaced as a whole (see :mod:`imharmony._persist`): a reader sees the old
        model or the new one, never a mix, and every field is under a checksum.
        """
        self._check_fitted()
        content, arrays = self._model_content()
        meta = dict(metadata if metadata is not None else getattr(self, "metadata_", {}) or {})
        doc = {"params": self._params_for_file(), **content, "metadata": meta}
        return _persist.save_model(
            path, kind=self._model_kind, version=self._model_version, content=doc, arrays=arrays
        )

    @classmethod
    def _from_file_params(cls, path: Path, content: dict[str, Any]) -> Any:
        """An unfitted instance from a model file's ``params`` field (checked like ``__init__``;
        a bad field raises :class:`ModelFileError` naming it)."""
        params = _persist.check(
            path, "params", content.get("params"), isinstance(content.get("params"), dict),
            "an object of parameters",
        )
        unknown = sorted(set(params) - set(cls._get_param_names()))  # type: ignore[attr-defined]
        _persist.check(path, "params", params, not unknown, "the model's parameters only")
        model = cls(**params)
        try:
            model._validate_params()
        except HarmonizationError as exc:
            raise ModelFileError(f"{path}: field 'params': {exc}") from None
        return model

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        """Load a model written by :meth:`save` (safe for files from strangers; never pickle).

        Raises
        ------
        ModelFileError
            If the file is missing, truncated, edited, inconsistent, too large for what it
            declares, of another kind, or written by an incompatible version (re-fit it).
        """
        path = Path(path)
        made: dict[str, Any] = {}

        def validate(content: dict[str, Any]) -> Mapping[str, _persist.ArraySpec]:
            model = cls._from_file_params(path, content)
            _persist.check(
                path, "metadata", content.get("metadata"),
                isinstance(content.get("metadata"), dict), "an object",
            )
            made["model"] = model
            return cls._model_arrays(path, content)

        loaded = _persist.load_model(
            path, kind=cls._model_kind, version=cls._model_version, validate=validate
        )
        model = made["model"]
        model._restore(path, loaded.content, loaded.arrays)
        model.metadata_ = dict(loaded.content["metadata"])
        return model
