"""Explaining whole datasets: the result store, the shared row builder, the local and the Ray runner.

* :mod:`.store` — the Parquet result store (``onnxlrp-store/1``): manifest, parts, errors, resume
  bookkeeping and :func:`~.store.read_heatmaps`.
* :mod:`.rows` — :func:`~.rows.explain_files`, the one function both runners call: a list of image
  files in, the store's rows and the error records out.
* :mod:`.local` — the default runner (this machine, no Ray).
* :mod:`.ray_runner` — the Ray Data runner (``--ray``).

``onnxlrp explain-dataset`` (:mod:`onnxlrp.cli.explain_dataset`) puts them together; see
``docs/dataset.md``. pyarrow is needed (``pip install 'onnxlrp[dataset]'``), Ray only for ``--ray``.
"""

from __future__ import annotations

from .store import FORMAT, StoreError, StoreMismatchError, image_id, read_heatmaps, read_manifest, read_table

__all__ = ["FORMAT", "StoreError", "StoreMismatchError", "image_id", "read_heatmaps", "read_manifest", "read_table"]
