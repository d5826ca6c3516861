"""Human inspection of a run's ranked candidates.

``python -m catalogs.inspect RUN_DIR`` serves a grading page on 127.0.0.1;
``--gallery OUT_DIR`` writes a static HTML gallery and ``--export PREFIX`` the graded
list with consensus grades. Modules:

* :mod:`~catalogs.inspect.data` — read the run (catalogue, stamps, model);
* :mod:`~catalogs.inspect.images` — colour composites, stretches, saliency overlays;
* :mod:`~catalogs.inspect.cache` — PNGs and a manifest cached in ``RUN_DIR/inspect_cache``;
* :mod:`~catalogs.inspect.grades` — validated grades appended to ``RUN_DIR/inspections.parquet``;
* :mod:`~catalogs.inspect.consensus` — mean grade, classes A/B/C, combined rank;
* :mod:`~catalogs.inspect.server` — the local web server;
* :mod:`~catalogs.inspect.gallery` — the static gallery.
"""
