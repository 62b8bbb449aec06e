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
from imblab.eval_states import STAGES, EvalStates, unpadded_share
from imblab.metrics.bootstrap import BootstrapCounts
from imblab.metrics.counts import CountState

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

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


NO_STEP = 2**62  # Classifier.first_nonfinite_step before any non-finite step


class TrainingDiverged(ConfigError):
    """Training diverged: a step's loss or outputs were NaN or infinite. One line: the epoch,
    the first non-finite (global) step, the learning rate then (``lr``) and the configured one
    (``base_lr``), what to try; ``checkpoint`` (the last one written before: "" none, None not
    known) is named in it too."""

    def __init__(
        self, epoch: int, step: int, lr: float, base_lr: float, checkpoint: str | None = None
    ) -> None:
        self.epoch, self.step, self.lr, self.base_lr = epoch, step, lr, base_lr
        self.checkpoint = checkpoint
        kept = (
            f"; the last good checkpoint is kept: {checkpoint}"
            if checkpoint
            else "; no checkpoint was written before"
            if checkpoint == ""
            else ""
        )
        super().__init__(
            f"training diverged at epoch {epoch}, step {step}: NaN or infinite loss or outputs "
            f"(learning rate {lr:.3g} then, model.optimizer.lr={base_lr:.3g}); lower "
            f"model.optimizer.lr (e.g. to {base_lr / 10:.3g}) or clip gradients "
            f"(trainer.gradient_clip_val=1.0){kept}"
        )


class Classifier(LightningModule):
    """Image classifier whose validation/test outputs feed one count state per stage.

    Implements :class:`imblab.callbacks.contract.EvaluatedModel`, what imblab's callbacks read
    (structurally: models do not import callbacks):

    Every streaming evaluation state lives in ``self.eval_states[stage][name]``
    (:class:`~imblab.eval_states.EvalStates`, the mechanism ``imblab.callbacks.PerClassMetrics``
    uses for any module), is reset at the start of each validation/test epoch and updated once
    per batch in ``validation_step`` / ``test_step`` with the same ``(preds, target, ids)``,
    moves with the model and is summed across processes by torchmetrics (the padding of
    Lightning's ``DistributedSampler`` left out, :func:`~imblab.eval_states.unpadded_share`; the
    loss too). Three kinds are registered the same way:

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

    A training step with a NaN or infinite loss or output marks ``first_nonfinite_step`` on
    the device; the epoch's end raises :class:`TrainingDiverged` (:meth:`check_finite`).
    """

    first_nonfinite_step: torch.Tensor

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
        cuda_graph: bool = False,
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
        self.cuda_graph = cuda_graph
        self._graphs: dict[tuple[object, ...], Callable[[torch.Tensor], torch.Tensor]] = {}
        self._graph_failed = False
        self.eval_loss = nn.ModuleDict({s: MeanLoss() for s in STAGES})
        self.train_means = nn.ModuleDict({"loss": MeanLoss(), "accuracy": MeanLoss()})
        # the first training step whose loss or outputs were not finite (NO_STEP: none), kept
        # on the device and read once per epoch (check_finite): no host sync per step; no
        # buffer, so neither saved nor overwritten by DDP's broadcast of rank 0's buffers
        self.first_nonfinite_step = torch.tensor(NO_STEP)
        self.ignore_index = ignore_index
        # every streaming evaluation state, eval_states[stage][name], updated with the same
        # (preds, target, ids) each batch: the count state, the bootstrap (opt-in) and the
        # metric plugins' states (imblab.callbacks.stateful), registered the same way
        self.eval_states = EvalStates(
            num_classes, count_kwargs, bootstrap=bootstrap, bootstrap_seed=bootstrap_seed
        )

    def configure_model(self) -> None:
        """Resolve ``channels_last="auto"`` for the device the model runs on (on for CUDA, where
        cuDNN's NHWC kernels are faster; off elsewhere) and convert the backbone; with
        ``compile``: compile the backbone's forward (parameter names unchanged, so checkpoints
        load with or without it); drop the CUDA graphs of an earlier fit (``cuda_graph``)."""
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
        self._graphs.clear()  # captured for parameters that a device move may have replaced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.cuda_graph and self.training and torch.is_grad_enabled():
            return self._graphed_backbone(x)
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

    # -- CUDA graphs of the training step (model.cuda_graph) ------------------------------------

    def _graphed_backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's training forward, replayed from a CUDA graph of its forward and
        backward: one graph per input signature (:func:`graph_key`), captured on the first
        batch that has it (:func:`capture_backbone`), at most :data:`MAX_GRAPHS` (the full
        batch and the epoch's last, partial one). A batch of any further signature runs
        eagerly; so does every batch once a capture failed or could not be attempted
        (:meth:`_graph_obstacle`), after one warning."""
        if self._graph_failed:
            return self.backbone(x)
        key = graph_key(x, self.backbone)
        graphed = self._graphs.get(key)
        if graphed is None:
            if len(self._graphs) >= MAX_GRAPHS:
                return self.backbone(x)
            reason = self._graph_obstacle(x)
            if reason is None:
                try:
                    graphed = capture_backbone(self.backbone, x)
                except Exception as err:  # capture raises many types
                    first = str(err).splitlines()[0] if str(err) else ""
                    reason = f"CUDA graph capture failed ({type(err).__name__}: {first})"
            if graphed is None:
                log.warning(
                    "model.cuda_graph=true: %s; training eagerly instead (set "
                    "model.cuda_graph=false to skip the attempt)",
                    reason,
                )
                self._graph_failed = True
                self._graphs.clear()
                return self.backbone(x)
            self._graphs[key] = graphed
        return graphed(x)

    def _graph_obstacle(self, x: torch.Tensor) -> str | None:
        """Why the step of ``x`` is not captured, or None: CUDA only; one process (DDP is not
        supported); no gradient accumulation (a replay overwrites the gradient buffers that the
        accumulated ``.grad`` may share)."""
        if x.device.type != "cuda":
            return f"the model trains on {x.device.type}, and CUDA graphs need a CUDA GPU"
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            return f"not supported with {trainer.world_size} processes (DDP)"
        if trainer is not None and trainer.accumulate_grad_batches > 1:
            return (
                f"not supported with trainer.accumulate_grad_batches="
                f"{trainer.accumulate_grad_batches}"
            )
        return None

    def on_train_epoch_start(self) -> None:
        set_epoch = getattr(self.loss, "set_epoch", None)  # deferred re-weighting (LDAM-DRW)
        if callable(set_epoch):
            set_epoch(self.current_epoch)
        for name in ("loss", "accuracy"):
            self._train_mean(name).reset()
        self.first_nonfinite_step = self.first_nonfinite_step.to(self.device)

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
        finite = torch.isfinite(detached).all() & torch.isfinite(logits.detach()).all()
        first = self.first_nonfinite_step
        first.copy_(torch.where(finite, first, first.clamp(max=self.global_step)))
        self._train_mean("loss").update(detached, n)
        self._train_mean("accuracy").update((logits.argmax(dim=1) == y).float().mean(), n)
        every = self.trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by Lightning
        if (self.global_step + 1) % every == 0:
            self.log("train/loss_step", detached, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        self.log("train/loss_epoch", self._train_mean("loss").compute())
        self.log("train/accuracy", self._train_mean("accuracy").compute())

    def _eval_step(self, stage: str, batch: Sequence[torch.Tensor]) -> EvalOutput:
        """Update the stage's loss mean and every evaluation state with one batch; return its
        ``{"preds", "target", "ids"}`` (an ``EvalStepOutput``) of the rows counted (the padding
        of Lightning's ``DistributedSampler`` left out).

        ``batch`` is ``(x, y)`` or ``(x, y, ids)``, ids the samples' indices in the split (needed
        by the bootstrap and by a prediction recorder; ``None`` in the output without them)."""
        x, y = batch[0], batch[1]
        ids = batch[2] if len(batch) > 2 else None
        logits = self(x)
        keep = self.eval_states.take(stage, int(y.shape[0]))
        if keep < y.shape[0]:  # the padding of Lightning's DistributedSampler
            logits, y = logits[:keep], y[:keep]
            ids = None if ids is None else ids[:keep]
        if keep:
            n = y.shape[0] if self.ignore_index is None else (y != self.ignore_index).sum()
            self._eval_loss(stage).update(self.loss(logits, y), n)
        self.eval_states.update(stage, logits, y, ids)
        return {"preds": logits, "target": y, "ids": ids}

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> EvalOutput:
        return self._eval_step("val", batch)

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> EvalOutput:
        return self._eval_step("test", batch)

    def count_state(self, stage: str) -> CountState:
        """The count state of ``stage`` ("val" or "test")."""
        return self.eval_states.count_state(stage)

    def bootstrap_state(self, stage: str) -> BootstrapCounts | None:
        """The bootstrap confusion matrices of ``stage``; None without ``bootstrap=B``."""
        return self.eval_states.bootstrap_state(stage)

    def add_eval_state(self, name: str, factory: Callable[[], Metric]) -> None:
        """Register a metric plugin's streaming state ``name``
        (:meth:`~imblab.eval_states.EvalStates.add_eval_state`: one ``factory()`` per stage,
        saved in checkpoints, on the model's device; a name already registered is kept)."""
        self.eval_states.add_eval_state(name, factory)

    def eval_state(self, stage: str, name: str) -> Metric:
        """The evaluation state ``name`` of ``stage`` (KeyError if not registered)."""
        return self.eval_states.eval_state(stage, name)

    def check_finite(self) -> None:
        """Raise :class:`TrainingDiverged` when a training step since the fit began had a
        non-finite loss or output (on any process: one gather per call, the only host sync of
        the check); called at the end of each training epoch and before its validation, so
        no checkpoint of a diverged epoch is written."""
        first = int(cast(torch.Tensor, self.all_gather(self.first_nonfinite_step)).min())
        if first == NO_STEP:
            return
        group = self.trainer.optimizers[0].param_groups[0]
        lr = float(group["lr"])
        raise TrainingDiverged(self.current_epoch, first, lr, float(group.get("initial_lr", lr)))

    def _train_mean(self, name: str) -> MeanLoss:
        return cast(MeanLoss, self.train_means[name])

    def _eval_loss(self, stage: str) -> MeanLoss:
        return cast(MeanLoss, self.eval_loss[stage])

    def _eval_epoch_start(self, stage: str) -> None:
        self._eval_loss(stage).reset()
        self.eval_states.start_epoch(stage, unpadded_share(self._trainer, stage))

    def _eval_epoch_end(self, stage: str) -> None:
        self.log(f"{stage}/loss", self._eval_loss(stage).compute(), prog_bar=stage == "val")
        self.eval_states.end_epoch(stage)  # the counts summed across processes now

    def on_validation_epoch_start(self) -> None:
        if self._trainer is not None and self.trainer.state.fn == "fit":
            self.check_finite()  # before the epoch's validation reads diverged outputs
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


# -- CUDA graphs of the training step (model.cuda_graph) ------------------------------------------

MAX_GRAPHS = 2
"""CUDA graphs one model captures per fit: the full training batch and the last, partial one."""


class _GraphedBackbone(nn.Module):
    """The backbone behind a module of its own, which ``make_graphed_callables`` can graph once
    per input signature (it replaces the graphed module's ``forward``); its parameters are the
    backbone's. Never registered as a submodule: no new state-dict keys."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.backbone(x))


def graph_key(x: torch.Tensor, backbone: nn.Module) -> tuple[object, ...]:
    """What a captured graph is valid for: the input's shape, strides, dtype and device, the
    autocast state, and which parameters require gradients."""
    kind = x.device.type
    autocast = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
    trainable = tuple(p.requires_grad for p in backbone.parameters())
    return (tuple(x.shape), x.stride(), x.dtype, x.device, autocast, trainable)


def capture_backbone(
    backbone: nn.Module, x: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.cuda.make_graphed_callables`` of ``backbone`` in training mode for inputs like
    ``x`` (CUDA): the returned callable copies its input into a static one and replays the
    forward graph, and its backward the backward graph; parameter gradients reach ``.grad``
    through autograd as in eager mode. Captured under the current autocast state with its
    weight cache off (each replay casts the current weights). The warm-up passes it runs leave
    no trace: the backbone's buffers (batch-norm statistics) and the CUDA random state are
    restored. Raises whatever the capture raises."""
    kind = x.device.type
    autocast = torch.autocast(
        kind,
        dtype=torch.get_autocast_dtype(kind),
        enabled=torch.is_autocast_enabled(kind),
        cache_enabled=False,
    )
    buffers = [(b, b.detach().clone()) for b in backbone.buffers()]
    rng = torch.cuda.get_rng_state(x.device)
    try:
        with torch.cuda.device(x.device), autocast:
            graphed = torch.cuda.make_graphed_callables(
                _GraphedBackbone(backbone),
                (x.detach().clone(),),
                allow_unused_input=True,
            )
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        torch.cuda.set_rng_state(rng, x.device)
    return cast(Callable[[torch.Tensor], torch.Tensor], graphed)
