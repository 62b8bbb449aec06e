"""``python -m imblab.scrape``: the same as ``imblab-scrape``."""

from imblab.scrape.cli import main

if __name__ == "__main__":
    main()
