"""Datasets and datamodules: MNIST sources, imbalance profiles, stratified splits, image folders,
image validation and on-device batches. Submodules are imported where used, so that light tools
(``imblab-scrape``, :mod:`imblab.data.images`) do not load torch and Lightning."""
