"""The streaming evaluation states of the validation and test stages, one mechanism for
:class:`imblab.models.classifier.Classifier` and :class:`imblab.callbacks.PerClassMetrics`.

:class:`EvalStates` holds, per stage, every torchmetrics state an evaluation epoch feeds with the
same ``(preds, target, ids)``: the count state every metric is computed from (``counts``), the
opt-in Poisson bootstrap (``bootstrap``) and the metric plugins' own states. It is reset at the
start of each epoch, summed across processes by torchmetrics, and moves with whatever owns it.

Exact under DDP: Lightning's default evaluation sampler (``DistributedSampler``) repeats the first
samples of the split so that every process gets as many; those repeats are the last sample of
some processes' shares. :func:`unpadded_share` reads this process's share from the stage's
loader and :meth:`EvalStates.take` counts only that many samples of the epoch, so the summed
counts cover each sample once. Loaders Lightning leaves alone (imblab's own, or any sampler
that is not a plain ``DistributedSampler``) are taken as they are: an evaluation sampler of your
own must not pad.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch import Trainer
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler
from torchmetrics import Metric

from imblab.errors import ConfigError
from imblab.metrics.bootstrap import BootstrapCounts
from imblab.metrics.counts import CountState

__all__ = ["BOOTSTRAP", "COUNTS", "STAGES", "EvalStates", "unpadded_share"]

STAGES = ("val", "test")
COUNTS = "counts"
"""Name of the count state among a stage's evaluation states."""
BOOTSTRAP = "bootstrap"
"""Name of the bootstrap state (``bootstrap=B``)."""


def _tolerate_plugin_states(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """Load-state-dict pre-hook: make the checkpoint's states match the module's, so a checkpoint
    loads whichever metric plugins either side has registered (a run resumed or evaluated with
    another metric set; ``imblab-eval`` builds the model before the plugins register their
    states). Matching states are restored; others are dropped or kept at their current (reset)
    value."""
    own = module.state_dict(prefix=prefix)
    for key in [k for k in state_dict if k.startswith(prefix)]:
        saved = state_dict[key]
        if key not in own or getattr(saved, "shape", None) != getattr(own[key], "shape", None):
            del state_dict[key]
    for key, value in own.items():
        state_dict.setdefault(key, value)


class EvalStates(nn.Module):
    """``states[stage][name]``: the streaming evaluation states of ``"val"`` and ``"test"`` (one
    ``ModuleDict`` child per stage).

    At construction it registers the count state (``counts``, not saved in checkpoints: reset
    every epoch, and at C = 8,142 ~250 MiB a stage) and, with ``bootstrap=B``, the Poisson
    bootstrap (``bootstrap``, saved); :meth:`add_eval_state` registers a metric plugin's state
    (saved). Its ``state_dict`` layout is ``<stage>.<name>.<buffer>``, as a ``Classifier``'s
    ``eval_states.*`` has always been; loading tolerates plugin states either side lacks.

    Args:
        num_classes: C.
        counts: keyword arguments of :class:`~imblab.metrics.counts.CountState` (``input``,
            ``ignore_index``, ``binary_threshold``, ...); ``thresholds`` (default 200) is the
            validation score grid, ``test_thresholds`` (default None: exact) the test one.
        bootstrap: B Poisson-bootstrap confusion matrices per stage (0: none).
        bootstrap_seed: seeds the bootstrap weights.
    """

    def __init__(
        self,
        num_classes: int,
        counts: Mapping[str, Any] | None = None,
        bootstrap: int = 0,
        bootstrap_seed: int = 0,
    ) -> None:
        super().__init__()
        for stage in STAGES:
            self.add_module(stage, nn.ModuleDict())
        count_kwargs = dict(counts or {})
        grids = {
            "val": count_kwargs.pop("thresholds", 200),
            "test": count_kwargs.pop("test_thresholds", None),
        }
        self._shares: dict[str, int | None] = dict.fromkeys(STAGES)
        self._seen = dict.fromkeys(STAGES, 0)
        self._add(
            COUNTS,
            lambda stage: CountState(
                num_classes, stage=stage, thresholds=grids[stage], **count_kwargs
            ),
            persistent=False,
        )
        if bootstrap:  # opt-in: B Poisson-bootstrap confusion matrices (batches carry ids)
            self._add(
                BOOTSTRAP,
                lambda stage: BootstrapCounts(
                    num_classes,
                    bootstrap,
                    seed=bootstrap_seed,
                    input=count_kwargs.get("input", "logits"),
                    ignore_index=count_kwargs.get("ignore_index"),
                ),
                persistent=True,
            )
        self.register_load_state_dict_pre_hook(_tolerate_plugin_states)

    def stage_states(self, stage: str) -> dict[str, Metric]:
        """The states of ``stage`` by name, in registration order."""
        return {name: cast(Metric, state) for name, state in self._stage(stage).items()}

    def count_state(self, stage: str) -> CountState:
        """The count state of ``stage`` ("val" or "test")."""
        return cast(CountState, self.eval_state(stage, COUNTS))

    def bootstrap_state(self, stage: str) -> BootstrapCounts | None:
        """The bootstrap confusion matrices of ``stage``; None without ``bootstrap=B``."""
        states = self._stage(stage)
        return cast(BootstrapCounts, states[BOOTSTRAP]) if BOOTSTRAP in states else None

    def eval_state(self, stage: str, name: str) -> Metric:
        """The state ``name`` of ``stage`` (KeyError if not registered)."""
        return cast(Metric, self._stage(stage)[name])

    def add_eval_state(self, name: str, factory: Callable[[], Metric]) -> None:
        """Register a metric plugin's state ``name``: ``factory()`` once per stage, made
        persistent (saved in checkpoints) and moved to the states' device. A name already
        registered is kept as it is (``setup`` runs again for ``trainer.test`` after
        ``trainer.fit``). ``counts`` and ``bootstrap`` are refused (ValueError)."""
        if name in (COUNTS, BOOTSTRAP):
            raise ValueError(
                f"eval state name {name!r} is the model's own state; give the plugin another name"
            )
        self._add(name, lambda stage: factory(), persistent=True)

    def start_epoch(self, stage: str, share: int | None = None) -> None:
        """Reset every state of ``stage``; count at most ``share`` samples of the coming epoch
        (this process's own, :func:`unpadded_share`; None: all)."""
        for state in self.stage_states(stage).values():
            state.reset()
        self._shares[stage] = share
        self._seen[stage] = 0

    def take(self, stage: str, n: int) -> int:
        """How many of the next ``n`` samples of the epoch are to be counted: all of them, or
        with a padding sampler the rest of this process's share (the padding comes last)."""
        share, seen = self._shares[stage], self._seen[stage]
        self._seen[stage] = seen + n
        return n if share is None else max(0, min(n, share - seen))

    def update(
        self, stage: str, preds: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None
    ) -> None:
        """Update every state of ``stage`` with one batch (see :meth:`take` for the rows to
        pass). Raises ValueError for a batch without ``ids`` when a bootstrap needs them."""
        states = self.stage_states(stage)
        if ids is None and BOOTSTRAP in states:
            raise ValueError(
                f"{stage} batches are (x, y) without sample ids, which the bootstrap needs; "
                "use a datamodule whose eval loaders yield (x, y, ids) (as data=mnist and "
                "data=image_folder do)"
            )
        if target.shape[0] == 0:
            return
        for state in states.values():
            state.update(preds, target, ids)

    def end_epoch(self, stage: str) -> None:
        """Sum the counts across processes now (every rank takes part), inside the evaluation
        loop: batches still buffered on the CPU are counted here and bad input fails in this
        epoch, whether or not a callback reads the counts."""
        self.count_state(stage).compute()

    def __getitem__(self, stage: str) -> nn.ModuleDict:
        """The states of ``stage`` (``states["val"]["counts"]``)."""
        return cast(nn.ModuleDict, self.get_submodule(stage))

    def _stage(self, stage: str) -> nn.ModuleDict:
        return self[stage]

    def _add(self, name: str, factory: Callable[[str], Metric], *, persistent: bool) -> None:
        if not name.isidentifier():
            raise ValueError(f"eval state name {name!r}: use a Python identifier")
        first = self._stage("val")
        device = cast(Metric, first[COUNTS]).device if COUNTS in first else None
        for stage in STAGES:
            states = self._stage(stage)
            if name in states:
                continue
            state = factory(stage)
            state.persistent(persistent)
            states[name] = state if device is None else state.to(device)


def _loaders(trainer: Trainer, stage: str) -> list[Any]:
    loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    return list(loaders) if isinstance(loaders, list | tuple) else [loaders]


def unpadded_share(trainer: Trainer | None, stage: str) -> int | None:
    """How many samples of the ``stage`` epoch this process may count so that all processes
    together count each sample once: the length of its share of a Lightning-injected
    ``DistributedSampler`` (which pads), else None (count every sample it is given).

    Raises:
        ConfigError: under DDP a loader that every process iterates whole (no distributed
            sampler), a ``DistributedSampler`` with ``drop_last=True`` that drops samples, or a
            padded sampler among several loaders of the stage.
    """
    if trainer is None or trainer.world_size == 1:
        return None
    loaders = _loaders(trainer, stage)
    shares = [_share(loader, stage) for loader in loaders]
    if len(shares) > 1 and any(share is not None for share in shares):
        raise ConfigError(
            f"{stage}: {len(shares)} {stage} loaders under DDP with Lightning's padding "
            "DistributedSampler, which imblab can only leave out of one loader; evaluate one "
            "loader, or give each an unpadded sampler (imblab.samplers.SequentialShard)"
        )
    return shares[0] if shares else None


def _share(loader: Any, stage: str) -> int | None:
    if not isinstance(loader, DataLoader):
        return None  # a loader of its own (imblab's TensorBatches): taken as it is
    sampler = loader.sampler
    if type(sampler) in (DistributedSampler, DistributedSamplerWrapper):
        dist = cast(DistributedSampler[Any], sampler)
        size = len(dist.dataset)  # type: ignore[arg-type]
        if dist.drop_last and size % dist.num_replicas:
            raise ConfigError(
                f"{stage} loader: DistributedSampler(drop_last=True) leaves "
                f"{size % dist.num_replicas} of {size} samples out of the {stage} metrics; use "
                "drop_last=False (imblab leaves out the padding instead)"
            )
        return len(range(dist.rank, size, dist.num_replicas))
    if isinstance(sampler, SequentialSampler | RandomSampler):
        raise ConfigError(
            f"{stage} loader: every process evaluates the whole split (a {type(sampler).__name__} "
            "under DDP), so the summed metrics count each sample once per process; keep "
            "Trainer(use_distributed_sampler=True) (the default) or give the loader a "
            "DistributedSampler"
        )
    return None  # a custom sampler (e.g. imblab's EvalShard): must not pad
