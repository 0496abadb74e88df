"""Body size and decay: small pure functions."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ._header import _LBM_FORMULAS, SUVError

logger = logging.getLogger(__name__)


def _check_positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise SUVError(f"{name} must be a positive finite number; got {value!r}.")
    return value


def _sex_code(sex: str | None) -> str | None:
    """'M', 'F', or None for other / unknown (then formulas use the mean of both sexes)."""
    if sex is None:
        return None
    s = str(sex).strip().upper()
    if s in ("M", "MALE"):
        return "M"
    if s in ("F", "FEMALE"):
        return "F"
    return None


def _by_sex(sex: str | None, male: Callable[[], float], female: Callable[[], float]) -> float:
    code = _sex_code(sex)
    if code == "M":
        return male()
    if code == "F":
        return female()
    return 0.5 * (male() + female())


def decay_factor(elapsed_s: Any, half_life_s: float) -> Any:
    """Fraction of activity left after ``elapsed_s`` seconds: ``exp(-ln 2 * t / T_half)``.

    Parameters
    ----------
    elapsed_s : float or array_like
        Elapsed time in seconds (negative values give factors above 1).
    half_life_s : float
        Radionuclide half-life in seconds (F-18: 6586.2 s).

    Returns
    -------
    float or numpy.ndarray
        Same shape as ``elapsed_s``; 1 at ``elapsed_s == 0``.

    Examples
    --------
    >>> decay_factor(6586.2, 6586.2)
    0.5
    """
    half_life_s = _check_positive(half_life_s, "Half-life (s)")
    result = np.exp2(-np.asarray(elapsed_s, dtype=np.float64) / half_life_s)
    return float(result) if result.ndim == 0 else result


def lean_body_mass(
    weight_kg: float, height_m: float, sex: str | None = None, formula: str = "james128"
) -> float:
    """Lean body mass in kg.

    Parameters
    ----------
    weight_kg : float
        Body weight in kg.
    height_m : float
        Height in metres.
    sex : {"M", "F", "O", None}
        Patient's Sex (0010,0040). Other or unknown: the mean of the male and female formulas.
    formula : {"james128", "james120", "janmahasatian"}
        ``"james128"`` (DICOM ``LBMJAMES128``): male ``1.10 W - 128 (W/H)^2``, female
        ``1.07 W - 148 (W/H)^2`` with H in cm. ``"james120"``: the male coefficient 120 some
        vendors use (female unchanged). ``"janmahasatian"`` (the basis of SUL): male
        ``9270 W / (6680 + 216 BMI)``, female ``9270 W / (8780 + 244 BMI)``, BMI = W / h^2.

    Returns
    -------
    float
        Lean body mass in kg.

    Raises
    ------
    SUVError
        For non-positive inputs, an unknown formula, or a James formula that gives a non-positive
        mass (it does for high BMI; use ``"janmahasatian"`` there).

    Examples
    --------
    >>> round(lean_body_mass(75.0, 1.85, "M", "janmahasatian"), 7)
    60.9153359
    """
    w = _check_positive(weight_kg, "Weight (kg)")
    h = _check_positive(height_m, "Height (m)")
    if formula in ("james128", "james120"):
        k = 128.0 if formula == "james128" else 120.0
        h_cm = 100.0 * h
        lbm = _by_sex(
            sex,
            lambda: 1.10 * w - k * (w / h_cm) ** 2,
            lambda: 1.07 * w - 148.0 * (w / h_cm) ** 2,
        )
        if lbm <= 0:
            raise SUVError(
                f"James lean body mass is {lbm:.3g} kg for weight {w} kg and height {h} m "
                "(the James formula breaks down at high BMI); use lbm_formula='janmahasatian'."
            )
        return lbm
    if formula == "janmahasatian":
        bmi = w / h**2
        return _by_sex(
            sex,
            lambda: 9270.0 * w / (6680.0 + 216.0 * bmi),
            lambda: 9270.0 * w / (8780.0 + 244.0 * bmi),
        )
    raise SUVError(
        f"Unknown lean body mass formula {formula!r}; use one of {', '.join(_LBM_FORMULAS)}."
    )


def body_surface_area(weight_kg: float, height_m: float) -> float:
    """Body surface area in m^2 (Du Bois): ``0.007184 * W^0.425 * H^0.725`` (W kg, H cm).

    Parameters
    ----------
    weight_kg : float
        Body weight in kg.
    height_m : float
        Height in metres.

    Returns
    -------
    float
        Body surface area in m^2 (SUVbsa uses it in cm^2, i.e. times 1e4).

    Examples
    --------
    >>> round(body_surface_area(75.0, 1.85), 6)
    1.981376
    """
    w = _check_positive(weight_kg, "Weight (kg)")
    h = _check_positive(height_m, "Height (m)")
    return 0.007184 * w**0.425 * (100.0 * h) ** 0.725


def ideal_body_weight(height_m: float, sex: str | None = None) -> float:
    """Ideal body weight in kg (Devine form): male ``48.0 + 1.06 (H - 152)``, female
    ``45.5 + 0.91 (H - 152)``, H in cm; other or unknown sex: the mean of both.

    Parameters
    ----------
    height_m : float
        Height in metres.
    sex : {"M", "F", "O", None}
        Patient's Sex (0010,0040).

    Returns
    -------
    float
        Ideal body weight in kg.

    Raises
    ------
    SUVError
        If the height is not positive or gives a non-positive ideal weight (very short patients).
    """
    h_cm = 100.0 * _check_positive(height_m, "Height (m)")
    ibw = _by_sex(sex, lambda: 48.0 + 1.06 * (h_cm - 152.0), lambda: 45.5 + 0.91 * (h_cm - 152.0))
    if ibw <= 0:
        raise SUVError(
            f"Ideal body weight is {ibw:.3g} kg for height {height_m} m; check the height."
        )
    return ibw


def _frame_average_factor(duration_s: float, lam: float) -> float:
    """``lambda T / (1 - exp(-lambda T))``: frame-averaged activity -> activity at frame start."""
    x = lam * duration_s
    return x / -math.expm1(-x) if x > 0 else 1.0


def _decay_average_time(duration_s: float, lam: float) -> float:
    """Time after frame start (s) at which the activity equals its average over the frame."""
    return math.log(_frame_average_factor(duration_s, lam)) / lam
