"""Hydra configs shipped with imblab (found as pkg://imblab.conf)."""
