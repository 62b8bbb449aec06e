"""The realised data of a run as one typed record: what every datamodule reports after setup.

:class:`DataSummary` is what training, ``metrics.json``, TensorBoard's HParams view and
``imblab-compare`` read. ``metrics.json`` stores :meth:`DataSummary.record` (the flat keys of
earlier versions, plus the structured ``classes`` and ``class_counts``);
:meth:`DataSummary.from_record` reads it back, from old files too. Pure Python: reading a run's
record needs neither torch nor Lightning.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class DataSummary(Mapping[str, Any]):
    """The classes and per-class counts of each split that a datamodule realised.

    Attributes:
        source: where the images came from (``full``, ``sample``, ``image_folder``, ...).
        class_names: the name of class ``c`` at position ``c``.
        counts: split name (``train``, ``val``, ``test``) -> per-class image counts.
        profile: the imbalance profile applied to the training pool.
        imbalance_ratio: the profile's configured ratio (see :attr:`realised_ratio`).
        details: dataset-specific facts (test source, pixel statistics, folder, cache, ...),
            JSON-ready scalars.
        subset_counts: per class, the images of the long-tailed subset the profile kept
            (before validation was taken from it): the class sizes of the shot groups; empty
            when unknown (runs written before it was recorded).

    As a read-only mapping it is :meth:`hparams`, the flat scalars (``summary["train_size"]``).
    """

    source: str
    class_names: tuple[str, ...]
    counts: Mapping[str, tuple[int, ...]]
    profile: str = "none"
    imbalance_ratio: float = 1.0
    details: Mapping[str, Any] = field(default_factory=dict)
    subset_counts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class names are not unique: {list(self.class_names)}")
        if self.subset_counts and len(self.subset_counts) != len(self.class_names):
            raise ValueError(
                f"subset: {len(self.subset_counts)} counts for {len(self.class_names)} classes"
            )
        for split, counts in self.counts.items():
            if len(counts) != len(self.class_names):
                raise ValueError(
                    f"{split}: {len(counts)} counts for {len(self.class_names)} classes"
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_counts(self) -> tuple[int, ...]:
        return self.counts.get("train", ())

    @property
    def group_counts(self) -> tuple[int, ...]:
        """The class sizes of the shot groups: :attr:`subset_counts`, else (older runs) the
        training counts."""
        return self.subset_counts or self.train_counts

    @property
    def realised_ratio(self) -> float:
        """Largest / smallest training class count (inf when a class has none)."""
        counts = self.train_counts
        if not counts:
            return float("nan")
        return max(counts) / min(counts) if min(counts) > 0 else float("inf")

    def record(self) -> dict[str, Any]:
        """The JSON record of ``metrics.json``'s ``data`` key: the flat keys (``source_used``,
        ``class_names`` and ``<split>_counts`` as comma-joined text, ``<split>_size``,
        ``subset_size`` and ``subset_counts`` when known, ``realised_ratio``, the details), then
        ``classes`` and ``class_counts`` as lists."""
        out: dict[str, Any] = {
            "source_used": self.source,
            "profile": self.profile,
            "imbalance_ratio": self.imbalance_ratio,
            "num_classes": self.num_classes,
            "class_names": ",".join(self.class_names),
        }
        out.update(self.details)
        for split, counts in self.counts.items():
            out[f"{split}_size"] = sum(counts)
        if self.subset_counts:
            out["subset_size"] = sum(self.subset_counts)
        for split, counts in self.counts.items():
            out[f"{split}_counts"] = ",".join(map(str, counts))
        if self.subset_counts:
            out["subset_counts"] = ",".join(map(str, self.subset_counts))
        out["realised_ratio"] = self.realised_ratio
        out["classes"] = list(self.class_names)
        out["class_counts"] = {split: list(counts) for split, counts in self.counts.items()}
        return out

    def hparams(self) -> dict[str, Any]:
        """Flat scalars for TensorBoard's HParams view (the record without its lists; a null
        such as ``n_max: null`` as the text ``null``)."""
        return {
            k: "null" if v is None else v
            for k, v in self.record().items()
            if k not in ("classes", "class_counts")
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DataSummary:
        """The summary stored by :meth:`record` (also the flat-only records of older runs)."""
        names = record.get("classes")
        if names is None:
            text = str(record.get("class_names") or "")
            names = text.split(",") if text else []
        counts = record.get("class_counts")
        if counts is None:
            counts = {
                split: [int(n) for n in str(record[f"{split}_counts"]).split(",") if n.strip()]
                for split in SPLITS
                if record.get(f"{split}_counts")
            }
        known = {"source_used", "profile", "imbalance_ratio", "num_classes", "class_names"}
        known |= {"realised_ratio", "classes", "class_counts"}
        known |= {f"{s}_{k}" for s in (*SPLITS, "subset") for k in ("size", "counts")}
        subset = str(record.get("subset_counts") or "")
        return cls(
            source=str(record.get("source_used", "unknown")),
            class_names=tuple(str(n) for n in names),
            counts={split: tuple(int(n) for n in c) for split, c in counts.items()},
            profile=str(record.get("profile", "none")),
            imbalance_ratio=float(record.get("imbalance_ratio", 1.0)),
            details={k: v for k, v in record.items() if k not in known},
            subset_counts=tuple(int(n) for n in subset.split(",") if n.strip()),
        )

    def minority_classes(self, k: int) -> list[str]:
        """Names of the ``k`` classes with the fewest training images (at most C - 1; ties by
        class index)."""
        counts = self.train_counts
        if not counts:
            return []
        k = max(1, min(k, len(counts) - 1))
        order = sorted(range(len(counts)), key=lambda c: (counts[c], c))
        return [self.class_names[c] for c in order[:k]]

    # -- read-only mapping over hparams() --------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.hparams()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.hparams())

    def __len__(self) -> int:
        return len(self.hparams())
