"""Synthetic travelling-subject studies with known truth (for tests, the demo and benchmarks).

Everything is generated from a ``random_state``; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import HarmonizationError

__all__ = ["TravellingStudy", "make_travelling_study"]


@dataclass
class TravellingStudy:
    """A travelling-subject data set, a main cohort measured at the same sites, and the truth.

    Attributes
    ----------
    travellers : DataFrame
        Columns ``subject``, ``site`` and the features ``f000``...: one row per visit.
    cohort : DataFrame
        Columns ``subject``, ``site`` and the features: one row per main-cohort participant.
    cohort_truth : DataFrame, shape (n_cohort, n_features)
        The cohort's values without measurement bias or noise, on the mean-site scale (what a
        perfect removal of the measurement bias returns, up to the noise).
    offset, gain : DataFrame, shape (n_sites, n_features)
        The true measurement bias, with mean offset 0 and mean gain 1 across sites.
    population_shift : DataFrame, shape (n_sites, n_features)
        How far each site's recruited population lies from the others' (sampling bias: biology).
    """

    travellers: pd.DataFrame
    cohort: pd.DataFrame
    cohort_truth: pd.DataFrame
    offset: pd.DataFrame
    gain: pd.DataFrame
    population_shift: pd.DataFrame


def make_travelling_study(
    *,
    n_sites: int = 4,
    n_travellers: int = 10,
    n_features: int = 5,
    n_cohort_per_site: int = 40,
    design: str = "complete",
    gain_spread: float = 0.0,
    offset_sd: float = 1.0,
    population_shift_sd: float = 1.0,
    noise_sd: float = 0.1,
    random_state: int | np.random.Generator | None = None,
) -> TravellingStudy:
    """Generate a travelling-subject study with known additive and multiplicative bias.

    Parameters
    ----------
    n_sites, n_travellers, n_features, n_cohort_per_site : int
    design : {"complete", "incomplete", "hub"}
        ``"complete"``: every traveller visits every site; ``"incomplete"``: each visits a random
        subset of at least two sites (all sites covered); ``"hub"``: each visits the first site
        (the hub) and one other site in turn (hub-and-spoke).
    gain_spread : float
        Half-width of the uniform distribution of the gains around 1 (0: additive bias only).
    offset_sd, population_shift_sd, noise_sd : float
        Standard deviations of the site offsets, of the sites' population means (sampling bias)
        and of the measurement noise. Participants' values have mean 10 and SD 2.
    random_state : int or numpy.random.Generator, optional

    Returns
    -------
    TravellingStudy
    """
    if design not in ("complete", "incomplete", "hub"):
        raise HarmonizationError(
            f"design must be 'complete', 'incomplete' or 'hub'; got {design!r}."
        )
    if n_sites < 2 or n_travellers < 2:
        raise HarmonizationError("a travelling study needs at least 2 sites and 2 travellers.")
    rng = np.random.default_rng(random_state)
    J, S, G = n_sites, n_travellers, n_features
    sites = np.array([f"site{j}" for j in range(J)])
    cols = [f"f{g:03d}" for g in range(G)]
    offset = rng.normal(0.0, offset_sd, (J, G))
    offset -= offset.mean(axis=0)
    gain = 1.0 + rng.uniform(-gain_spread, gain_spread, (J, G))
    gain /= gain.mean(axis=0)
    shift = rng.normal(0.0, population_shift_sd, (J, G))

    if design == "complete":
        visits = [(s, j) for s in range(S) for j in range(J)]
    elif design == "hub":
        visits = [v for s in range(S) for v in ((s, 0), (s, 1 + s % (J - 1)))]
    else:
        visits = []
        for s in range(S):
            k = int(rng.integers(2, J + 1))
            chosen = set(rng.choice(J, size=k, replace=False).tolist())
            chosen |= {s % J, (s + 1) % J}  # every site is visited and the design is connected
            visits.extend((s, j) for j in sorted(chosen))
    subj = np.array([v[0] for v in visits])
    vsite = np.array([v[1] for v in visits])
    t = rng.normal(10.0, 2.0, (S, G))
    X = offset[vsite] + gain[vsite] * t[subj] + rng.normal(0.0, noise_sd, (subj.size, G))
    travellers = pd.DataFrame(X, columns=cols)
    travellers.insert(0, "site", sites[vsite])
    travellers.insert(0, "subject", [f"T{s:02d}" for s in subj])

    csite = np.repeat(np.arange(J), n_cohort_per_site)
    truth = 10.0 + shift[csite] + rng.normal(0.0, 2.0, (csite.size, G))
    Xc = offset[csite] + gain[csite] * truth + rng.normal(0.0, noise_sd, truth.shape)
    cohort = pd.DataFrame(Xc, columns=cols)
    cohort.insert(0, "site", sites[csite])
    cohort.insert(0, "subject", [f"P{i:04d}" for i in range(csite.size)])
    frame = lambda a: pd.DataFrame(a, index=pd.Index(sites, name="site"), columns=cols)  # noqa: E731
    return TravellingStudy(
        travellers=travellers,
        cohort=cohort,
        cohort_truth=pd.DataFrame(truth, columns=cols),
        offset=frame(offset),
        gain=frame(gain),
        population_shift=frame(shift),
    )
