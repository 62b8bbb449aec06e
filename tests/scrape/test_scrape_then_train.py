"""The whole issue-5 path: ``imblab-scrape`` builds a folder from the local server (bad files
among the good ones), then ``imblab-train data=image_folder data.root=...`` trains a torchvision
backbone on it with every metric callback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imblab.pipelines.training import train
from imblab.scrape.cli import scrape
from imblab.scrape.jobs import read_manifest
from tests.conftest import FAST, Compose
from tests.scrape.badfiles import image_cases
from tests.scrape.server import _jpeg, serve
from tests.scrape.test_scrape import FAST as SCRAPE_FAST


def test_scraped_folder_trains_a_torchvision_backbone_with_every_metric(
    tmp_path: Path, compose_cfg: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    with serve() as site:
        urls = {"cat": [], "dog": []}
        for cls, n, offset in (("cat", 24, 1000), ("dog", 8, 2000)):
            for i in range(n):
                site.files[f"/{cls}s/{i}.jpg"] = _jpeg(offset + i)
                urls[cls].append(site.url(f"/{cls}s/{i}.jpg"))
        bad = [
            site.url(f"/files/{kind}/{case.filename}")
            for kind, case in image_cases().items()
            if case.status != "ok"
        ]
        urls["cat"] += bad
        for cls, items in urls.items():
            (lists / f"{cls}.txt").write_text("\n".join(items) + "\n")
        root = tmp_path / "scraped"
        scrape_cfg = compose_cfg(
            f"root={root}", f"url_dir={lists}", *SCRAPE_FAST, config_name="scrape"
        )
        counts = scrape(scrape_cfg)
    rows = read_manifest(root / "manifest.csv")
    assert counts["ok"] == 32 and len(rows) == 32 + len(bad)
    assert {r["url"] for r in rows if r["status"] != "ok"} == set(bad)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # offline: no weights
    run = tmp_path / "run"
    cfg = compose_cfg(
        *(o for o in FAST if not o.startswith("data.")),
        "data=image_folder",
        f"data.root={root}",
        "data.image_size=32",
        "data.positive_class=dog",
        "model=resnet18",
        "sampler=inverse",
        "metrics=[default,mcc]",
        run_dir=run,
    )
    metrics = train(cfg)
    for key in ("val/f1_macro", "val/binary/f1", "val/auroc_macro", "test/f1_macro", "val/mcc"):
        assert key in metrics
    record = json.loads((run / "metrics.json").read_text())
    assert record["data"]["class_names"] == "cat,dog"
    # the scraper kept only valid files, so the datamodule rejects none of them
    assert record["data"]["rejected_files"] == record["data"]["duplicate_files"] == 0
