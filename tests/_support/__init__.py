"""Test support shared by the whole suite: the one DICOM factory (:mod:`_support.dicom`) and the
cohort builders behind the cohort fixtures (:mod:`_support.cohorts`).

Importable as ``_support`` because pyproject's ``[tool.pytest.ini_options] pythonpath`` holds
``tests``.
"""
