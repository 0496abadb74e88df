"""PET stored values to standardized uptake values (SUV), exactly.

A PET series stores activity concentration (Bq/ml, counts, or an SUV already) per instance. This
module reads everything the conversion needs from the DICOM headers, checks it, and returns one
multiplicative factor per instance::

    SUV_i = (RescaleSlope_i * stored_i + RescaleIntercept_i) * f_i

The rescale is left to the caller (a colleague's series reader applies it per slice, since the
slope differs between slices in about half of real series); :func:`suv_factors` returns ``f_i``.
:func:`pet_parameters` returns the :class:`SUVParameters` the factors come from, so a user can see
exactly what went in (weight, dose, half-life, injection and reference times, which rule chose the
reference time, which unit conversions were applied).

Notes
-----
Body-weight SUV of activity data decay-corrected to the series start (``Decay Correction`` START)::

    SUVbw = A_c * W / D_ref,   D_ref = D_inj * exp(-ln 2 * (t_ref - t_inj) / T_half)

with ``A_c`` in Bq/ml, ``W`` in g and doses in Bq. The other normalizations replace ``W`` by the
lean body mass (g), the ideal body weight (g) or the body surface area (cm^2). ``t_ref`` is chosen
in the order of the QIBA vendor-neutral pseudo-code (see :func:`reference_time`). With ``Decay
Correction`` ADMIN the image is already corrected to the injection time, ``D_ref = D_inj``; with
NONE each instance is corrected from its own frame: ``A_c * lambda*T / (1 - exp(-lambda*T)) *
exp(lambda * (t_acq - t_inj)) / D_inj``.

References
----------
.. [1] QIBA FDG-PET/CT Profile, Appendix G: vendor-neutral pseudo-codes for SUV calculation.
.. [2] M. Vácha et al., IBSI: "Computation of standardised uptake values" (oncoray/suv_computation).
.. [3] DICOM PS3.3, C.8.9.1 PET Series and C.8.9.4 PET Image modules.
.. [4] P. James, "Research on obesity", HMSO, 1976 (lean body mass).
.. [5] S. Janmahasatian et al., Clin. Pharmacokinet. 44:1051-1065, 2005 (lean body mass, SUL).
.. [6] D. Du Bois, E. F. Du Bois, Arch. Intern. Med. 17:863-871, 1916 (body surface area).


The package is split along the module's former sections: :mod:`._header` (header access on top
of :mod:`imharmony._dicom.tags`, which holds the value, private-element and date / time helpers),
:mod:`._body` (body size and decay), :mod:`._vendor` (Philips and GE private parts),
:mod:`._times` (injection and reference times), :mod:`._ingredients` (what the factors are made
of) and :mod:`._suv` (the factors).
"""

from __future__ import annotations

from ._body import body_surface_area, decay_factor, ideal_body_weight, lean_body_mass
from ._header import SUVError
from ._suv import SUVParameters, activity_factors, pet_parameters, suv_factors
from ._times import ReferenceTime, injection_datetime, reference_time

__all__ = [
    "ReferenceTime",
    "SUVError",
    "SUVParameters",
    "activity_factors",
    "body_surface_area",
    "decay_factor",
    "ideal_body_weight",
    "injection_datetime",
    "lean_body_mass",
    "pet_parameters",
    "reference_time",
    "suv_factors",
]
