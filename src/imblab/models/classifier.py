"""The LightningModule: backbone + loss + the shared per-stage metric count state."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, cast

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import Metric

from imblab.errors import ConfigError, config_error
from imblab.metrics.bootstrap import BootstrapCounts
from imblab.metrics.counts import CountState

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

EVAL_STAGES = ("val", "test")
COUNTS = "counts"
"""Name of the count state among a stage's evaluation states."""
BOOTSTRAP = "bootstrap"
"""Name of the bootstrap state (``bootstrap=B``)."""

EvalOutput = dict[str, torch.Tensor | None]
"""What ``validation_step`` / ``test_step`` return: ``preds``, ``target``, ``ids`` (the shape of
``imblab.callbacks.contract.EvalStepOutput``)."""


class MeanLoss(Metric):
    """Sample-weighted mean of batch means (a loss, an accuracy), sum(v_b * n_b) / sum(n_b),
    summed across processes; no NaN check, so no host sync per batch on CUDA.

    (torchmetrics' ``MeanMetric(nan_strategy="disable")`` drops the weights: torchmetrics 1.9.)
    """

    full_state_update = False
    total: torch.Tensor
    count: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, loss: torch.Tensor, n: int | torch.Tensor) -> None:
        self.total += loss.detach().to(torch.float64) * n
        self.count += n

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


def _tolerate_eval_states(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """Load-state-dict pre-hook: make the checkpoint's plugin states (``eval_states.*``) match
    the module's, so a checkpoint loads whichever metric plugins either side has attached (a
    run resumed or evaluated with another metric set; ``imblab-eval`` builds the model before
    the plugins register their states). Matching states are restored; others are dropped or
    kept at their current (reset) value."""
    key = f"{prefix}eval_states."
    own = {k: v for k, v in module.state_dict(prefix=prefix).items() if k.startswith(key)}
    for k in [k for k in state_dict if k.startswith(key)]:
        saved = state_dict[k]
        if k not in own or getattr(saved, "shape", None) != getattr(own[k], "shape", None):
            del state_dict[k]
    for k, v in own.items():
        state_dict.setdefault(k, v)


class Classifier(LightningModule):
    """Image classifier whose validation/test outputs feed one count state per stage.

    Implements :class:`imblab.callbacks.contract.EvaluatedModel`, what imblab's callbacks read
    (structurally: models do not import callbacks):

    Every streaming evaluation state lives in ``self.eval_states[stage][name]``, is reset at
    the start of each validation/test epoch and updated once per batch in ``validation_step`` /
    ``test_step`` with the same ``(preds, target, ids)``, moves with the model and is summed
    across processes by torchmetrics. Three kinds are registered the same way:

    * ``count_state(stage)``: the :class:`~imblab.metrics.counts.CountState` (name ``counts``)
      every metric callback reads at the end of the epoch; the validation one bins the scores
      (``counts.thresholds``), the test one keeps them (``counts.test_thresholds``, default
      None: exact AUROC/AP on the test set, which fits in memory);
    * ``bootstrap_state(stage)``: with ``bootstrap=B``, the streaming Poisson bootstrap
      (``bootstrap``), else None;
    * ``add_eval_state(name, factory)`` / ``eval_state(stage, name)``
      (:class:`imblab.callbacks.contract.StatefulModel`): a metric plugin's own state, saved in
      checkpoints. A checkpoint's plugin states that the model does not hold (or the reverse)
      are tolerated on loading: the states are reset every epoch, so they carry no training
      progress.

    ``class_names`` and ``train_counts`` (the training samples per class, empty when not given)
    complete :class:`imblab.callbacks.contract.EvaluatedModel`.

    ``validation_step`` / ``test_step`` return the batch's
    :class:`~imblab.callbacks.contract.EvalStepOutput` (``preds``: the logits or probabilities
    as the count state takes them, ``target``, ``ids``), which a prediction recorder collects
    when one is attached; the model keeps no predictions itself.
    """

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: OptimizerFactory,
        num_classes: int,
        class_names: Sequence[str],
        train_counts: Sequence[int] | None = None,
        scheduler: SchedulerFactory | None = None,
        loss: nn.Module | None = None,
        counts: Mapping[str, Any] | None = None,
        channels_last: bool | Literal["auto"] = "auto",
        compile: bool = False,
        bootstrap: int = 0,
        bootstrap_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["backbone", "optimizer", "scheduler", "loss"], logger=False
        )
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        count_kwargs = dict(counts or {})
        ignore_index = count_kwargs.get("ignore_index")
        self.loss = loss or nn.CrossEntropyLoss(
            ignore_index=-100 if ignore_index is None else ignore_index
        )
        self.num_classes = num_classes
        self.class_names = [str(name) for name in class_names]
        self.train_counts = [int(n) for n in train_counts or ()]
        if self.train_counts and len(self.train_counts) != num_classes:
            raise config_error(
                "train_counts",
                self.train_counts,
                f"{len(self.train_counts)} class counts for {num_classes} classes",
                "pass one training count per class (the datamodule's train_counts)",
            )
        if channels_last not in (True, False, "auto"):
            raise ConfigError(
                f"model.channels_last={channels_last!r}: not true, false or auto; use auto "
                "(channels_last on CUDA devices) or true/false"
            )
        self.channels_last_option = channels_last
        self.channels_last = channels_last is True
        self.compile_backbone = compile
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._compile_checked = False
        self._compile_failed = False
        self.eval_loss = nn.ModuleDict({s: MeanLoss() for s in EVAL_STAGES})
        self.train_means = nn.ModuleDict({"loss": MeanLoss(), "accuracy": MeanLoss()})
        self.ignore_index = ignore_index
        # every streaming evaluation state, eval_states[stage][name], updated with the same
        # (preds, target, ids) each batch: the count state, the bootstrap (opt-in) and the
        # metric plugins' states (imblab.callbacks.stateful), registered the same way
        self.eval_states = nn.ModuleDict({s: nn.ModuleDict() for s in EVAL_STAGES})
        thresholds = count_kwargs.pop("thresholds", 200)
        test_thresholds = count_kwargs.pop("test_thresholds", None)
        stage_thresholds = {"val": thresholds, "test": test_thresholds}
        # the count states are reset every epoch and at C = 8,142 weigh ~250 MiB a stage: not
        # saved in checkpoints
        self._add_state(
            COUNTS,
            lambda stage: CountState(
                num_classes, stage=stage, thresholds=stage_thresholds[stage], **count_kwargs
            ),
            persistent=False,
        )
        if bootstrap:  # opt-in: B Poisson-bootstrap confusion matrices (batches carry ids)
            self._add_state(
                BOOTSTRAP,
                lambda stage: BootstrapCounts(
                    num_classes,
                    bootstrap,
                    seed=bootstrap_seed,
                    input=count_kwargs.get("input", "logits"),
                    ignore_index=ignore_index,
                ),
                persistent=True,
            )
        self.register_load_state_dict_pre_hook(_tolerate_eval_states)

    def configure_model(self) -> None:
        """Resolve ``channels_last="auto"`` for the device the model runs on (on for CUDA, where
        cuDNN's NHWC kernels are faster; off elsewhere) and convert the backbone; with
        ``compile``: compile the backbone's forward (parameter names unchanged, so checkpoints
        load with or without it)."""
        if self.channels_last_option == "auto":
            trainer = self._trainer
            device = (
                trainer.strategy.root_device
                if trainer is not None
                else next(self.parameters()).device
            )
            self.channels_last = device.type == "cuda"
        if self.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        if self.compile_backbone and self._compiled is None and not self._compile_failed:
            self._compiled = torch.compile(self.backbone.forward)
            self._compile_checked = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._compiled is None:
            return self.backbone(x)
        if self._compile_checked:
            return self._compiled(x)
        # torch.compile compiles on the first call: that is where it fails (no C++ compiler,
        # unsupported op or platform); eager mode computes the same function
        try:
            out = self._compiled(x)
        except Exception as err:  # compilation raises many types
            log.warning(
                "model.compile=true: torch.compile could not compile the backbone (%s: %s); "
                "running it eagerly instead (set model.compile=false to skip the attempt)",
                type(err).__name__,
                str(err).splitlines()[0] if str(err) else "",
            )
            self._compiled = None
            self._compile_failed = True
            out = self.backbone(x)
        self._compile_checked = True
        return out

    def on_train_epoch_start(self) -> None:
        set_epoch = getattr(self.loss, "set_epoch", None)  # deferred re-weighting (LDAM-DRW)
        if callable(set_epoch):
            set_epoch(self.current_epoch)
        for name in ("loss", "accuracy"):
            self._train_mean(name).reset()

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        """Loss and accuracy are summed on the device every step and logged as epoch means
        (``train/loss_epoch``, ``train/accuracy``); ``train/loss_step`` only on the steps the
        logger writes (every ``trainer.log_every_n_steps``): Lightning's ``self.log`` costs
        ~0.5 ms per call, as much as a whole training step of the small CNN on a GPU."""
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        n = y.shape[0]
        detached = loss.detach()
        self._train_mean("loss").update(detached, n)
        self._train_mean("accuracy").update((logits.argmax(dim=1) == y).float().mean(), n)
        every = self.trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by Lightning
        if (self.global_step + 1) % every == 0:
            self.log("train/loss_step", detached, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss_epoch", self._train_mean("loss").compute())
        self.log("train/accuracy", self._train_mean("accuracy").compute())

    def _eval_step(self, stage: str, batch: Sequence[torch.Tensor]) -> EvalOutput:
        """Update the stage's loss mean and every evaluation state with one batch; return its
        ``{"preds", "target", "ids"}`` (an ``EvalStepOutput``).

        ``batch`` is ``(x, y)`` or ``(x, y, ids)``, ids the samples' indices in the split (needed
        by the bootstrap and by a prediction recorder; ``None`` in the output without them)."""
        x, y = batch[0], batch[1]
        ids = batch[2] if len(batch) > 2 else None
        logits = self(x)
        n = y.shape[0] if self.ignore_index is None else (y != self.ignore_index).sum()
        self._eval_loss(stage).update(self.loss(logits, y), n)
        states = self._eval_states(stage)
        if ids is None and BOOTSTRAP in states:
            raise ValueError(
                f"{stage} batches are (x, y) without sample ids, which the bootstrap needs; "
                "use a datamodule whose eval loaders yield (x, y, ids) (as data=mnist and "
                "data=image_folder do)"
            )
        for state in states.values():
            cast(Metric, state).update(logits, y, ids)
        return {"preds": logits, "target": y, "ids": ids}

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> EvalOutput:
        return self._eval_step("val", batch)

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> EvalOutput:
        return self._eval_step("test", batch)

    def count_state(self, stage: str) -> CountState:
        """The count state of ``stage`` ("val" or "test")."""
        return cast(CountState, self.eval_state(stage, COUNTS))

    def bootstrap_state(self, stage: str) -> BootstrapCounts | None:
        """The bootstrap confusion matrices of ``stage``; None without ``bootstrap=B``."""
        states = self._eval_states(stage)
        return cast(BootstrapCounts, states[BOOTSTRAP]) if BOOTSTRAP in states else None

    def add_eval_state(self, name: str, factory: Callable[[], Metric]) -> None:
        """Register a metric plugin's streaming state ``name``: ``factory()`` is called once per
        stage, the state is made persistent (saved in checkpoints) and moved to the model's
        device. Idempotent: a name already registered is kept as it is (``setup`` runs again
        for ``trainer.test`` after ``trainer.fit``). ``counts`` and ``bootstrap`` are the
        model's own states (registered the same way at construction)."""
        if name in (COUNTS, BOOTSTRAP):
            raise ValueError(
                f"eval state name {name!r} is the model's own state; give the plugin another name"
            )
        self._add_state(name, lambda stage: factory(), persistent=True)

    def _add_state(self, name: str, factory: Callable[[str], Metric], *, persistent: bool) -> None:
        if not name.isidentifier():
            raise ValueError(f"eval state name {name!r}: use a Python identifier")
        device = self._eval_loss("val").total.device
        for stage in EVAL_STAGES:
            states = self._eval_states(stage)
            if name in states:
                continue
            state = factory(stage)
            state.persistent(persistent)
            states[name] = state.to(device)

    def eval_state(self, stage: str, name: str) -> Metric:
        """The evaluation state ``name`` of ``stage`` (KeyError if not registered)."""
        return cast(Metric, self._eval_states(stage)[name])

    def _eval_states(self, stage: str) -> nn.ModuleDict:
        return cast(nn.ModuleDict, self.eval_states[stage])

    def _train_mean(self, name: str) -> MeanLoss:
        return cast(MeanLoss, self.train_means[name])

    def _eval_loss(self, stage: str) -> MeanLoss:
        return cast(MeanLoss, self.eval_loss[stage])

    def _eval_epoch_start(self, stage: str) -> None:
        self._eval_loss(stage).reset()
        for state in self._eval_states(stage).values():
            cast(Metric, state).reset()

    def _eval_epoch_end(self, stage: str) -> None:
        self.log(f"{stage}/loss", self._eval_loss(stage).compute(), prog_bar=stage == "val")
        # sum the counts across processes now, inside the evaluation loop, whether or not a
        # callback reads them: batches still buffered on the CPU are counted here (not at the
        # next device move, outside inference mode) and bad input fails in this epoch
        self.count_state(stage).compute()

    def on_validation_epoch_start(self) -> None:
        self._eval_epoch_start("val")

    def on_test_epoch_start(self) -> None:
        self._eval_epoch_start("test")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
