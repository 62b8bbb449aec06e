"""imblab's Optuna sweeper for Hydra (``hydra/sweeper=imblab_optuna``), found by Hydra's plugin
discovery in the ``hydra_plugins`` namespace package; see :mod:`.optuna_sweeper`."""
