"""Datasets: the data contract (:mod:`~imblab.data.base`), the datamodules built on it (MNIST, image
folders) and their parts, one module per concern. Submodules are imported where used, so that
light tools (``imblab-scrape``, ``imblab-compare``) load neither torch nor Lightning."""
