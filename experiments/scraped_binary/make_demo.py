"""Write the study's synthetic demo folder: ``common`` (300) and ``rare`` (30) images plus every
kind of bad file the web returns (from the test suite's generators). Run from the repository
root: ``python experiments/scraped_binary/make_demo.py DIR``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.image_folder.conftest import write_folder
from tests.scrape.badfiles import write_image_tree

if __name__ == "__main__":
    root = Path(sys.argv[1])
    write_image_tree(root, classes=("common", "rare"), good_per_class=(1, 1), size=64)
    write_folder(root, {"common": 300, "rare": 30}, size=64)
    print(f"wrote {root}")
