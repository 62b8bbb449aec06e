"""Class-rebalancing samplers: weights, target frequencies, seeding, DDP shares, config and
errors, an end-to-end run and a real Lightning DDP run on CPU."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

from imblab.config import instantiate
from imblab.errors import ConfigError
from imblab.pipelines.training import build_datamodule, train
from imblab.samplers import (
    ClassAwareSampler,
    ClassUniformSampler,
    EpochSampler,
    RebalancingSampler,
    SequentialShard,
    ShuffleSampler,
    WeightedClassSampler,
)

from .conftest import FAST, run_script

CONF = Path(__file__).parents[1] / "conf" / "sampler"
COUNTS = [500, 200, 50, 10, 3]


def make_labels(counts: list[int] = COUNTS, seed: int = 0) -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def target_class_weights(scheme: str, counts: list[int], beta: float = 0.9999) -> torch.Tensor:
    """The per-class weight formulas, written out independently of the implementation."""
    if scheme == "inverse":
        w = [1 / n for n in counts]
    elif scheme == "sqrt":
        w = [1 / math.sqrt(n) for n in counts]
    else:
        w = [(1 - beta) / (1 - beta**n) for n in counts]
    t = torch.tensor(w, dtype=torch.float64)
    return t / t.sum()


def target_class_probs(scheme: str, counts: list[int], beta: float = 0.9999) -> torch.Tensor:
    p = torch.tensor(counts, dtype=torch.float64) * target_class_weights(scheme, counts, beta)
    return p / p.sum()


def sampler(kind: str, labels: torch.Tensor, **kw) -> RebalancingSampler:
    kw.setdefault("num_replicas", 1)
    kw.setdefault("rank", 0)
    if kind == "class_aware":
        return ClassAwareSampler(labels, **kw)
    if kind == "class_uniform":
        return ClassUniformSampler(labels, **kw)
    return WeightedClassSampler(labels, scheme=kind, **kw)


KINDS = ["inverse", "sqrt", "effective", "class_aware", "class_uniform"]
CLASS_BALANCED = ("class_aware", "class_uniform")


@pytest.mark.parametrize("scheme", ["inverse", "sqrt", "effective"])
@pytest.mark.parametrize("beta", [0.0, 0.9, 0.9999])
def test_class_and_sample_weights_follow_the_formula(scheme: str, beta: float) -> None:
    labels = make_labels()
    s = WeightedClassSampler(labels, scheme=scheme, beta=beta, num_replicas=1, rank=0)
    expected = target_class_weights(scheme, COUNTS, beta)
    torch.testing.assert_close(s.class_weights, expected)
    torch.testing.assert_close(s.weights, expected[labels])
    assert s.class_counts.tolist() == COUNTS
    assert len(s) == s.epoch_length == len(labels)


@pytest.mark.parametrize("kind", KINDS)
def test_long_draw_matches_the_target_class_distribution(kind: str) -> None:
    labels = make_labels()
    s = sampler(kind, labels, seed=3, num_samples=200_000)
    drawn = labels[torch.tensor(list(s))]
    freq = torch.bincount(drawn, minlength=len(COUNTS)).double() / len(drawn)
    if kind in CLASS_BALANCED:
        target = torch.full((len(COUNTS),), 1 / len(COUNTS), dtype=torch.float64)
    else:
        target = target_class_probs(kind, COUNTS)
    torch.testing.assert_close(freq, target, atol=0.006, rtol=0.0)
    if kind == "inverse":  # inverse weights balance the classes exactly in expectation
        torch.testing.assert_close(freq, torch.full_like(freq, 0.2), atol=0.006, rtol=0.0)


def test_class_uniform_picks_classes_uniformly_and_members_uniformly() -> None:
    labels = make_labels([1000, 20, 5])
    s = ClassUniformSampler(labels, seed=1, num_samples=60_000, num_replicas=1, rank=0)
    drawn = torch.tensor(list(s))
    freq = torch.bincount(labels[drawn], minlength=3).double() / len(drawn)
    torch.testing.assert_close(
        freq, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01, rtol=0
    )
    # within the 5-sample class every member is drawn about equally often (~4000 each)
    members = (labels == 2).nonzero().flatten()
    hits = torch.stack([(drawn == i).sum() for i in members]).double()
    assert ((hits - 4000).abs() < 400).all(), hits


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_by_seed_and_epoch(kind: str) -> None:
    labels = make_labels()

    def draw(seed: int, epoch: int) -> list[int]:
        s = sampler(kind, labels, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert draw(5, 0) == draw(5, 0)
    assert draw(5, 2) == draw(5, 2)
    assert draw(5, 0) != draw(5, 1)
    assert draw(5, 0) != draw(6, 0)
    # the same sampler object follows set_epoch
    s = sampler(kind, labels, seed=5)
    s.set_epoch(1)
    assert list(s) == draw(5, 1)
    assert all(0 <= i < len(labels) for i in draw(5, 0))


def official_class_aware(labels: list[int], num_samples_cls: int, seed: int) -> list[int]:
    """facebookresearch/classifier-balancing ``data/ClassAwareSampler.py``, transcribed (one
    epoch; its ``RandomCycleIter`` shuffles with ``random``, here seeded)."""
    rng = random.Random(seed)

    class RandomCycleIter:
        def __init__(self, data: Iterable[int]) -> None:
            self.data_list = list(data)
            self.length = len(self.data_list)
            self.i = self.length - 1

        def __next__(self) -> int:
            self.i += 1
            if self.i == self.length:
                self.i = 0
                rng.shuffle(self.data_list)
            return self.data_list[self.i]

    num_classes = len(set(labels))
    class_iter = RandomCycleIter(range(num_classes))
    cls_data_list: list[list[int]] = [[] for _ in range(num_classes)]
    for i, label in enumerate(labels):
        cls_data_list[label].append(i)
    data_iter_list = [RandomCycleIter(x) for x in cls_data_list]
    n = max(len(x) for x in cls_data_list) * len(cls_data_list)
    out, i, j = [], 0, 0
    temp: tuple[int, ...] = ()
    while i < n:
        if j >= num_samples_cls:
            j = 0
        if j == 0:
            it = data_iter_list[next(class_iter)]
            temp = tuple(next(it) for _ in range(num_samples_cls))
        out.append(temp[j])
        i += 1
        j += 1
    return out


def assert_class_aware_structure(draw: list[int], labels: list[int], k: int) -> None:
    """What classifier-balancing's sampler guarantees: blocks of ``k`` draws of one class; the
    blocks' classes in passes holding every class once; each class's draws in passes through
    its members without repetition."""
    num_classes = max(labels) + 1
    blocks = [draw[i : i + k] for i in range(0, len(draw), k)]
    block_classes = []
    for block in blocks:
        assert len({labels[i] for i in block}) == 1, block
        block_classes.append(labels[block[0]])
    for start in range(0, len(block_classes), num_classes):
        one_pass = block_classes[start : start + num_classes]
        assert len(set(one_pass)) == len(one_pass)
    for c in range(num_classes):
        members = [i for i, y in enumerate(labels) if y == c]
        mine = [i for i in draw if labels[i] == c]
        for start in range(0, len(mine), len(members)):
            chunk = mine[start : start + len(members)]
            assert len(set(chunk)) == len(chunk) and set(chunk) <= set(members)


@pytest.mark.parametrize("k", [1, 3, 4])
def test_class_aware_follows_classifier_balancing(k: int) -> None:
    counts = [50, 20, 7, 3, 1]
    labels = make_labels(counts)
    s = ClassAwareSampler(labels, num_samples_cls=k, seed=3, num_replicas=1, rank=0)
    official = official_class_aware(labels.tolist(), k, seed=3)
    assert len(s) == len(official) == max(counts) * len(counts)  # epoch = largest class x C
    assert_class_aware_structure(official, labels.tolist(), k)  # the checker fits the original
    for epoch in range(3):
        s.set_epoch(epoch)
        draw = s.global_draw().tolist()
        assert_class_aware_structure(draw, labels.tolist(), k)
        # as in the original, the classes' shares differ by less than one visit (k draws)
        freq = torch.bincount(labels[draw], minlength=len(counts))
        official_freq = torch.bincount(labels[official], minlength=len(counts))
        assert int(freq.max() - freq.min()) <= k
        assert int(official_freq.max() - official_freq.min()) <= k


def test_class_aware_bad_num_samples_cls_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^sampler\.num_samples_cls=0: "):
        ClassAwareSampler(make_labels(), num_samples_cls=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("num_samples", [None, 100, 101])
def test_ddp_shares_are_disjoint_slices_of_one_global_draw(
    kind: str, world: int, num_samples: int | None
) -> None:
    labels = make_labels()
    default = max(COUNTS) * len(COUNTS) if kind == "class_aware" else len(labels)
    epoch_length = num_samples or default
    shares, draws = [], []
    for rank in range(world):
        s = sampler(kind, labels, seed=11, num_samples=num_samples, num_replicas=world, rank=rank)
        s.set_epoch(4)
        shares.append(list(s))
        draws.append(s.global_draw().tolist())
        assert len(s) == len(shares[-1]) == math.ceil(epoch_length / world)
        assert s.total_size == len(s) * world >= epoch_length
    # every rank makes the same global draw and takes its own positions r::world
    assert all(d == draws[0] for d in draws)
    assert len({len(x) for x in shares}) == 1
    for rank, share in enumerate(shares):
        assert share == draws[0][rank::world]
    positions = [set(range(rank, len(draws[0]), world)) for rank in range(world)]
    assert sum(len(p) for p in positions) == len(set().union(*positions)) == len(draws[0])
    interleaved = [x[i] for i in range(len(shares[0])) for x in shares]
    assert interleaved == draws[0]


def test_single_process_draw_is_the_global_draw() -> None:
    labels = make_labels()
    one = WeightedClassSampler(labels, seed=2, num_samples=120, num_replicas=1, rank=0)
    two = [
        WeightedClassSampler(labels, seed=2, num_samples=120, num_replicas=2, rank=r)
        for r in (0, 1)
    ]
    interleaved = [i for pair in zip(*(list(s) for s in two), strict=True) for i in pair]
    assert interleaved == list(one)


def test_without_a_process_group_defaults_to_one_replica() -> None:
    s = WeightedClassSampler(make_labels())
    assert (s.num_replicas, s.rank) == (1, 0)
    assert isinstance(s, torch.utils.data.DistributedSampler)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"scheme": "median"}, "sampler.scheme='median'"),
        ({"scheme": "effective", "beta": 1.0}, "sampler.beta=1.0"),
        ({"scheme": "effective", "beta": -0.1}, "sampler.beta=-0.1"),
        ({"scheme": "inverse", "num_samples": 0}, "sampler.num_samples=0"),
        ({"scheme": "inverse", "num_samples": 2.5}, "sampler.num_samples=2.5"),
    ],
)
def test_bad_options_raise_a_one_line_config_error(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        WeightedClassSampler(make_labels(), num_replicas=1, rank=0, **kwargs)
    message = str(err.value)
    assert message.startswith(key + ":") and "\n" not in message and ";" in message


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_training_class_is_a_config_error(kind: str) -> None:
    labels = make_labels([30, 0, 20])  # class 1 has no training samples
    with pytest.raises(ConfigError) as err:
        sampler(kind, labels)
    message = str(err.value)
    assert "\n" not in message and "class 1 has no training samples" in message
    assert "sampler=none" in message
    if kind not in CLASS_BALANCED:
        assert message.startswith(f"sampler.scheme='{kind}':")
    # an empty class at the end of the range is only visible through num_classes
    with pytest.raises(ConfigError, match="class 3 has no training samples"):
        sampler(kind, make_labels([30, 10, 20]), num_classes=4)


def test_num_samples_zero_fails_when_building_the_datamodule(compose_cfg) -> None:
    cfg = compose_cfg(*FAST, "sampler=class_aware", "sampler.num_samples=0")
    with pytest.raises(ConfigError, match=r"^sampler\.num_samples=0: "):
        build_datamodule(cfg)


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_every_sampler_config_composes_and_builds(compose_cfg, name: str) -> None:
    text = (CONF / f"{name}.yaml").read_text()
    assert text.startswith("# ")
    cfg = compose_cfg(f"sampler={name}")
    if name == "none":
        assert not cfg.sampler
        return
    factory = instantiate(cfg.sampler)
    s = factory(labels=make_labels(), seed=cfg.seed, num_replicas=1, rank=0)
    assert isinstance(s, RebalancingSampler)
    assert len(s) == (max(COUNTS) * len(COUNTS) if name == "class_aware" else sum(COUNTS))
    # every option is documented by a comment line above it
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", " ", "{")):
            assert lines[i - 1].startswith("#"), f"{name}.yaml: {line} is undocumented"


def test_default_is_no_sampler(compose_cfg) -> None:
    cfg = compose_cfg(*FAST)
    assert not cfg.sampler
    dm = build_datamodule(cfg)
    s = dm.train_dataloader().sampler
    assert isinstance(s, ShuffleSampler) and s.seed == dm.seed


def test_datamodule_resamples_only_the_training_split(compose_cfg) -> None:
    dm = build_datamodule(compose_cfg(*FAST, "sampler=sqrt", "sampler.num_samples=333"))
    s = dm.train_dataloader().sampler
    assert isinstance(s, WeightedClassSampler) and s.scheme == "sqrt"
    assert s.class_counts.tolist() == dm.train_counts
    assert len(s) == 333 and s.seed == dm.seed
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        assert isinstance(loader.sampler, SequentialShard)


def test_fast_dev_run_with_inverse_sampler(compose_cfg) -> None:
    metrics = train(compose_cfg(*FAST, "sampler=inverse", "debug=fdr"))
    assert "val/f1_macro" in metrics and "test/f1_macro" in metrics


def test_lightning_ddp_ranks_get_disjoint_shares(tmp_path: Path) -> None:
    script = Path(__file__).parent / "ddp" / "sampler_shares.py"
    run_script(script, "2", str(tmp_path), "inverse", cwd=tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2
    assert result["errors"] == []
    assert result["share_len"] == 125
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text())["seen"] for r in (0, 1)]
    assert len(seen[0]["0"]) == len(seen[1]["0"]) == 125


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 10, 101])
def test_shuffle_sampler_covers_every_item_each_epoch(world: int, n: int) -> None:
    shares = []
    for rank in range(world):
        s = ShuffleSampler(n, seed=4, num_replicas=world, rank=rank)
        s.set_epoch(2)
        shares.append(list(s))
        assert len(s) == len(shares[-1]) == math.ceil(n / world)
    draw = [shares[r][i] for i in range(len(shares[0])) for r in range(world)]
    # a permutation of all n items, then its own start again as padding
    assert sorted(draw[:n]) == list(range(n)) and draw[n:] == draw[: len(draw) - n]
    s = ShuffleSampler(n, seed=4)
    epochs = []
    for epoch in range(3):
        s.set_epoch(epoch)
        epochs.append(list(s))
    assert epochs[0] != epochs[1] or n == 1
    s.set_epoch(0)
    assert list(s) == epochs[0]
    assert ShuffleSampler(n, seed=5).indices().tolist() != epochs[0] or n == 1


@pytest.mark.parametrize("kind", [*KINDS, "shuffle"])
def test_device_indices_are_the_share_as_a_tensor(kind: str) -> None:
    labels = make_labels()
    s: EpochSampler = (
        ShuffleSampler(len(labels), seed=3, num_replicas=3, rank=2)
        if kind == "shuffle"
        else sampler(kind, labels, seed=3, num_replicas=3, rank=2)
    )
    s.set_epoch(1)
    indices = s.indices(torch.device("cpu"))
    assert indices.dtype == torch.int64 and indices.tolist() == list(s)
    assert indices.tolist() == s.global_draw().tolist()[2::3]
