"""Test support shared by the whole suite: the one DICOM factory (:mod:`_support.dicom`), the
cohort builders on :mod:`imharmony.datasets` (:mod:`_support.cohorts`) and the NIfTI stack of the
voxel-wise tests (:mod:`_support.voxel_stack`) and MR acquisitions as keyword dicts
(:mod:`_support.acquisitions`).

Importable as ``_support`` because pyproject's ``[tool.pytest.ini_options] pythonpath`` holds
``tests``.
"""
