"""Private DICOM layer used by :mod:`imharmony.io` and :mod:`imharmony.physics`.

* :mod:`.header` — the one header reader and its acceptance policy (size guards, truncation,
  preamble-less files, transfer syntax checks), :class:`~.header.Header`, the DICOM errors;
* :mod:`.framing` — the quick framing of plain headers handed to pydicom;
* :mod:`.tags` — tag labels, value look-ups, numeric parsing, functional-group access;
* :mod:`.walk` — the folder walk;
* :mod:`.mosaic` — Siemens mosaic detection and unpacking;
* :mod:`.multiframe` — where the frames of a classic multi-frame image lie;
* :mod:`.slices` — the equidistant grid for unequally spaced slices and the resampling onto it.

Nothing here is public API; the public names live in :mod:`imharmony.io.dicom` and
:mod:`imharmony.protocols`.
"""
