"""The pipelines: what a command runs, composed from data, models, callbacks and reports.

:mod:`~imblab.pipelines.training` (``imblab-train``: data -> model -> trainer -> fit -> test,
``metrics.json``) and :mod:`~imblab.pipelines.evaluation` (``imblab-eval``: checkpoint + its
run's config -> test or val -> reports). A pipeline only composes: the Lightning callbacks it
uses live in :mod:`imblab.callbacks`, the math in :mod:`imblab.metrics`.
"""
