"""Index samplers: the epoch's shuffle, class-rebalancing draws (the ``sampler=NAME`` config
group) and the in-order evaluation shard.

Every sampler makes its indices as one tensor on the device that holds the data
(:meth:`EpochSampler.indices`; on a GPU no index ever crosses to the host) and is also an
ordinary iterable of ints for a :class:`torch.utils.data.DataLoader`. Training samplers
subclass :class:`torch.utils.data.DistributedSampler`, so Lightning leaves them in place under
DDP and calls :meth:`set_epoch` on them every epoch.

One training epoch is one *global* draw of ``total_size = ceil(num_samples / num_replicas) *
num_replicas`` indices from a generator on the data's device seeded with ``seed + epoch``
(DistributedSampler's convention). Every process makes the same global draw and rank ``r`` takes
``draw[r::world]``: the ranks get disjoint shares of one globally seeded draw, of equal length
``total_size // num_replicas``. (A CUDA generator draws other numbers than a CPU one with the
same seed: a run is reproducible on the same kind of device.)

- :class:`ShuffleSampler`: a fresh permutation each epoch, padded by its own start to
  ``total_size`` (DistributedSampler's padding); the default without ``sampler=``.

Rebalancing samplers resample the training split only (validation and test are never
resampled):

- :class:`WeightedClassSampler`: per-sample weight ``w_{y_i}`` from per-class training counts
  ``n_c`` (``scheme``: ``inverse`` ``1/n_c``, ``sqrt`` ``1/sqrt(n_c)``, ``effective``
  ``(1-beta)/(1-beta^n_c)`` of Cui et al. 2019), drawn with :func:`torch.multinomial`. Class
  ``c`` is drawn with probability ``n_c w_c / sum_k n_k w_k``.
- :class:`ClassAwareSampler`: classifier-balancing's class-aware sampling: a shuffled cycle of
  the classes, a shuffled cycle of each class's samples, ``num_samples_cls`` consecutive draws
  per class visit, epoch ``max_c n_c * C`` (Shen et al. 2016; Kang et al. 2020).
- :class:`ClassUniformSampler`: each draw picks a class uniformly at random, then a sample
  uniformly within that class.

Bad options raise :class:`imblab.errors.ConfigError` with a one-line message
``sampler.<key>=<value>: <what is wrong>; <how to fix it>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DistributedSampler

from imblab.class_weights import check_effective_beta, effective_number_weights
from imblab.errors import ConfigError, config_error

__all__ = [
    "SCHEMES",
    "ClassAwareSampler",
    "ClassUniformSampler",
    "EpochSampler",
    "RebalancingSampler",
    "SequentialShard",
    "ShuffleSampler",
    "WeightedClassSampler",
    "training_sampler",
]

SCHEMES: tuple[str, ...] = ("inverse", "sqrt", "effective")


def _fail(key: str, value: Any, what: str, fix: str) -> ConfigError:
    """The one-line ``sampler.<key>=<value>: <what>; <fix>`` error."""
    return config_error(f"sampler.{key}", value, what, fix)


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``: from torch.distributed when it is initialised, else (1, 0)."""
    distributed = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if distributed else 1
    if rank is None:
        rank = dist.get_rank() if distributed else 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
    return num_replicas, rank


def training_sampler(
    factory: Callable[..., IndexSampler] | None, labels: Tensor, seed: int, num_classes: int
) -> IndexSampler:
    """The training split's sampler for this process: ``factory(labels=labels, seed=seed,
    num_classes=num_classes, num_replicas=..., rank=...)`` (a ``sampler=NAME`` option), else a
    :class:`ShuffleSampler` seeded with ``seed``; world size and rank from torch.distributed
    (else 1 and 0), so each process draws its share of the one global draw."""
    num_replicas, rank = _world(None, None)
    if factory is None:
        return ShuffleSampler(len(labels), seed=seed, num_replicas=num_replicas, rank=rank)
    return factory(
        labels=labels, seed=seed, num_classes=num_classes, num_replicas=num_replicas, rank=rank
    )


class IndexSampler(Protocol):
    """What :class:`imblab.data.tensors.TensorBatches` draws its batches with."""

    def set_epoch(self, epoch: int) -> None: ...

    def indices(self, device: torch.device) -> Tensor:
        """This process's indices of the current epoch, as one int64 tensor on ``device``."""
        ...

    def __len__(self) -> int: ...


class EpochSampler(DistributedSampler[int]):
    """Base class: one global draw per epoch, seeded with ``seed + epoch``; rank ``r`` takes
    ``draw[r::num_replicas]``.

    Args:
        size: number of items to index (``0 .. size - 1``).
        seed: base seed; epoch ``e`` draws from a generator seeded with ``seed + e``.
        num_samples: global epoch length (draws over all ranks); ``None`` = ``size``.
        num_replicas: number of processes; ``None`` = the torch.distributed world size, or 1.
        rank: this process's rank; ``None`` = the torch.distributed rank, or 0.

    Attributes: ``epoch_length`` (the global ``num_samples``), ``num_samples`` (this rank's
    share, as in DistributedSampler), ``total_size`` (global draw length, a multiple of
    ``num_replicas``).
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        num_samples: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if num_samples is not None and (
            isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
        ):
            raise _fail(
                "num_samples",
                num_samples,
                "must be an integer >= 1 or null",
                "set sampler.num_samples to the draws per epoch, or null for the training "
                "split's length",
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _fail("seed", seed, "must be an integer", "set seed=<int>")
        num_replicas, rank = _world(num_replicas, rank)
        # the base class only needs len(dataset)
        super().__init__(
            range(size),  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.size = size
        self.epoch_length = size if num_samples is None else num_samples
        self.num_samples = math.ceil(self.epoch_length / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """The generator of this epoch's global draw (the same on every rank)."""
        return torch.Generator(device=device).manual_seed(self.seed + self.epoch)

    def global_draw(self, device: torch.device | str = "cpu") -> Tensor:
        """This epoch's global draw: ``total_size`` indices on ``device``, the same on every
        rank."""
        raise NotImplementedError

    def indices(self, device: torch.device | str = "cpu") -> Tensor:
        """This rank's share ``global_draw(device)[rank::num_replicas]``."""
        return self.global_draw(device)[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


class ShuffleSampler(EpochSampler):
    """Each epoch a permutation of ``0 .. size - 1``, repeated from its start up to
    ``total_size`` (so every rank gets the same number of batches), without replacement.

    Args: ``size``, ``seed``, ``num_replicas``, ``rank``: see :class:`EpochSampler`.
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("ShuffleSampler needs at least one item")
        super().__init__(size, seed=seed, num_replicas=num_replicas, rank=rank)

    def global_draw(self, device: torch.device | str = "cpu") -> Tensor:
        perm = torch.randperm(self.size, device=device, generator=self.generator(device))
        repeats = math.ceil(self.total_size / self.size)
        return perm.repeat(repeats)[: self.total_size] if repeats > 1 else perm


class RebalancingSampler(EpochSampler):
    """Base class of the rebalancing samplers: labels and class counts.

    Args:
        labels: 1-d integer tensor of the training labels (``0 .. num_classes - 1``).
        seed, num_samples, num_replicas, rank: see :class:`EpochSampler`.
        num_classes: number of classes (a class of the range without samples is an error);
            ``None`` = ``labels.max() + 1``.

    Attributes (after construction): ``class_counts`` (C,), and those of
    :class:`EpochSampler`.
    """

    def __init__(
        self,
        labels: Tensor,
        *,
        seed: int = 0,
        num_samples: int | None = None,
        num_classes: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.numel() == 0 or labels.is_floating_point():
            raise _fail(
                "labels",
                f"tensor{tuple(labels.shape)} {labels.dtype}",
                "the training labels must be a non-empty 1-d integer tensor",
                "pass the training split's labels",
            )
        labels = labels.long().cpu()
        if int(labels.min()) < 0:
            raise _fail("labels", int(labels.min()), "negative class label", "use labels 0..C-1")
        top = int(labels.max()) + 1
        if num_classes is None:
            num_classes = top
        elif num_classes < top:
            raise _fail(
                "labels",
                top - 1,
                f"label outside 0..{num_classes - 1}",
                "pass num_classes covering all labels",
            )
        super().__init__(
            len(labels),
            seed=seed,
            num_samples=num_samples,
            num_replicas=num_replicas,
            rank=rank,
        )
        self.labels = labels
        self.class_counts = torch.bincount(labels, minlength=num_classes)
        self._on_device: dict[torch.device, dict[str, Tensor]] = {}

    def _check_no_empty_class(self, key: str, value: Any) -> None:
        empty = [c for c, n in enumerate(self.class_counts.tolist()) if n == 0]
        if empty:
            counts = self.class_counts.tolist()
            raise _fail(
                key,
                value,
                f"class {empty[0]} has no training samples (train counts {counts}), so it "
                "cannot be drawn",
                "use sampler=none, or change data.* so every class keeps training samples",
            )

    def _tables(self, device: torch.device | str, **tables: Tensor) -> dict[str, Tensor]:
        """``tables`` copied to ``device`` once and kept (the draw's lookup tensors)."""
        device = torch.device(device)
        if device not in self._on_device:
            self._on_device[device] = {k: v.to(device) for k, v in tables.items()}
        return self._on_device[device]


class WeightedClassSampler(RebalancingSampler):
    """Draw training indices with replacement, index ``i`` with probability proportional to
    its class weight ``w_{y_i}``.

    Args:
        labels, seed, num_samples, num_classes, num_replicas, rank: see
            :class:`RebalancingSampler`.
        scheme: ``inverse`` (``w_c = 1/n_c``: classes drawn equally often), ``sqrt``
            (``1/sqrt(n_c)``: class frequency ``~ sqrt(n_c)``) or ``effective``
            (``(1-beta)/(1-beta^n_c)``, Cui et al. 2019).
        beta: effective-number beta in [0, 1) (``scheme=effective`` only); 0 = no rebalancing,
            closer to 1 = closer to ``inverse``.
    """

    def __init__(
        self,
        labels: Tensor,
        *,
        scheme: str = "inverse",
        beta: float = 0.9999,
        seed: int = 0,
        num_samples: int | None = None,
        num_classes: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if scheme not in SCHEMES:
            raise _fail("scheme", scheme, "unknown scheme", f"use one of {list(SCHEMES)}")
        beta = check_effective_beta("sampler.beta", beta)
        super().__init__(
            labels,
            seed=seed,
            num_samples=num_samples,
            num_classes=num_classes,
            num_replicas=num_replicas,
            rank=rank,
        )
        self.scheme = scheme
        self.beta = beta
        self._check_no_empty_class("scheme", scheme)
        counts = self.class_counts.to(torch.float64)
        if scheme == "inverse":
            w = 1.0 / counts
        elif scheme == "sqrt":
            w = counts.rsqrt()
        else:
            w = effective_number_weights(counts, self.beta)
        self.class_weights: Tensor = w / w.sum()
        """Per-class weights ``w_c`` (float64), normalised to sum to 1."""
        self.weights: Tensor = self.class_weights[self.labels]
        """Per-sample weights ``w_{y_i}`` (float64)."""

    @property
    def class_probabilities(self) -> Tensor:
        """Probability of drawing each class: ``n_c w_c / sum_k n_k w_k``."""
        p = self.class_counts.to(torch.float64) * self.class_weights
        return p / p.sum()

    def global_draw(self, device: torch.device | str = "cpu") -> Tensor:
        weights = self._tables(device, weights=self.weights)["weights"]
        return torch.multinomial(
            weights, self.total_size, replacement=True, generator=self.generator(device)
        )


class ClassAwareSampler(RebalancingSampler):
    """Class-aware sampling as ``ClassAwareSampler`` of ``facebookresearch/classifier-balancing``
    (``data/ClassAwareSampler.py``; Shen et al., "Relay Backpropagation", ECCV 2016): classes
    come in a cycle through a shuffled class list (reshuffled at every pass), each class's
    samples in a cycle through its shuffled members (reshuffled at every pass, so without
    replacement within a pass), and each visit of a class takes ``num_samples_cls``
    consecutive samples of it. An epoch is ``max_c n_c * C`` draws (``num_samples=None``).

    Differences: the official iterators carry their position and shuffles from one epoch to the
    next (Python's global ``random``); here every epoch restarts both cycles from a generator
    seeded with ``seed + epoch`` (reproducible and resumable). Under DDP rank ``r`` takes
    ``draw[r::world]`` of the one global draw, so a rank's consecutive samples of a class are
    spread over the ranks. The official default is ``num_samples_cls=1``; its cRT/LWS configs
    use 4.

    Args:
        labels, seed, num_classes, num_replicas, rank: see :class:`RebalancingSampler`.
        num_samples_cls: consecutive draws of a class per visit (>= 1).
        num_samples: global draws per epoch; ``None`` = ``max_c n_c * C``.
    """

    def __init__(self, labels: Tensor, *, num_samples_cls: int = 1, **kwargs: Any) -> None:
        if (
            isinstance(num_samples_cls, bool)
            or not isinstance(num_samples_cls, int)
            or num_samples_cls < 1
        ):
            raise _fail("num_samples_cls", num_samples_cls, "not an integer >= 1", "e.g. 4")
        super().__init__(labels, **kwargs)
        self._check_no_empty_class("_target_", f"{type(self).__module__}.{type(self).__name__}")
        self.num_samples_cls = num_samples_cls
        if kwargs.get("num_samples") is None:  # the official epoch: largest class x C
            self.epoch_length = int(self.class_counts.max()) * len(self.class_counts)
            self.num_samples = math.ceil(self.epoch_length / self.num_replicas)
            self.total_size = self.num_samples * self.num_replicas
        # members of class c are by_class[starts[c] : starts[c] + counts[c]]
        self.by_class = torch.argsort(self.labels, stable=True)
        self.starts = torch.cumsum(self.class_counts, 0) - self.class_counts

    def global_draw(self, device: torch.device | str = "cpu") -> Tensor:
        """Block ``j`` (``num_samples_cls`` draws) is of class ``order[j]``, the class cycle;
        it is class c's ``q = j // C``-th visit (each pass holds every class once), so it takes
        positions ``q k .. q k + k - 1`` of c's member cycle."""
        t = self._tables(device, by_class=self.by_class, starts=self.starts)
        g = self.generator(device)
        k, n_classes = self.num_samples_cls, len(self.class_counts)
        blocks = math.ceil(self.total_size / k)
        passes = math.ceil(blocks / n_classes)
        keys = torch.rand(passes, n_classes, device=device, generator=g)
        order = keys.argsort(dim=1).flatten()[:blocks]
        length = passes * k  # the most draws any class gets
        streams = torch.empty(n_classes, length, dtype=torch.long, device=device)
        for c, n in enumerate(self.class_counts.tolist()):
            cycles = torch.rand(math.ceil(length / n), n, device=device, generator=g)
            streams[c] = cycles.argsort(dim=1).flatten()[:length]
        block = torch.arange(blocks, device=device)
        pos = (block // n_classes * k)[:, None] + torch.arange(k, device=device)
        member = streams[order[:, None], pos]
        draw = t["by_class"][t["starts"][order][:, None] + member].flatten()
        return draw[: self.total_size]


class ClassUniformSampler(RebalancingSampler):
    """Each draw picks a class uniformly at random, then a training sample uniformly within
    that class, both with replacement (imblab's earlier ``class_aware``; a simplification of
    :class:`ClassAwareSampler`, whose cycles draw without replacement).

    Args: those of :class:`RebalancingSampler`.
    """

    def __init__(self, labels: Tensor, **kwargs: Any) -> None:
        super().__init__(labels, **kwargs)
        self._check_no_empty_class("_target_", f"{type(self).__module__}.{type(self).__name__}")
        # members of class c are by_class[starts[c] : starts[c] + counts[c]]
        self.by_class = torch.argsort(self.labels, stable=True)
        self.starts = torch.cumsum(self.class_counts, 0) - self.class_counts

    def global_draw(self, device: torch.device | str = "cpu") -> Tensor:
        t = self._tables(
            device, counts=self.class_counts, by_class=self.by_class, starts=self.starts
        )
        g = self.generator(device)
        size = (self.total_size,)
        classes = torch.randint(len(self.class_counts), size, device=device, generator=g)
        n = t["counts"][classes]
        u = torch.rand(size, dtype=torch.float64, device=device, generator=g)
        member = torch.minimum((u * n).long(), n - 1)  # uniform in 0..n_c-1
        return t["by_class"][t["starts"][classes] + member]


class SequentialShard:
    """Evaluation order: rank ``r`` gets ``r, r + num_replicas, ...`` of ``0 .. size - 1``,
    without padding, so evaluation over all ranks sees each item exactly once.

    Args: ``size``, ``num_replicas``, ``rank``: see :class:`EpochSampler`.
    """

    def __init__(self, size: int, num_replicas: int | None = None, rank: int | None = None) -> None:
        self.size = size
        self.num_replicas, self.rank = _world(num_replicas, rank)

    def set_epoch(self, epoch: int) -> None:
        """The order is the same every epoch."""

    def indices(self, device: torch.device | str = "cpu") -> Tensor:
        start = min(self.rank, self.size)  # arange rejects start > end
        return torch.arange(start, self.size, self.num_replicas, device=device)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.num_replicas))
