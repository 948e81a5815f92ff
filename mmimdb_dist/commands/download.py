"""`mmimdb-dist download --to DIR`: fetch MM-IMDb, verify it, and unpack it to DIR/mmimdb.

The archive (8.1 GB) is saved as DIR/mmimdb.tar.gz; an interrupted run leaves
DIR/mmimdb.tar.gz.part and running the same command again continues from there. The
extracted raw data lands in DIR/mmimdb (split.json, dataset/), the folder to pass to
`mmimdb-dist shard --raw`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.sources.mmimdb.download import DEFAULT_SHA256, DEFAULT_URL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.strip()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--to", required=True, type=Path, metavar="DIR", help="folder for the archive and the extracted mmimdb/ folder"
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="archive URL, e.g. a mirror (default: %(default)s)")
    parser.add_argument(
        "--sha256", default=DEFAULT_SHA256, help="expected SHA-256 of the archive (default: the official archive's)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="retries after a cut or failed connection; the count starts again whenever "
        "a retry brings new bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the server on connect and on each read (default: %(default)s)",
    )
    parser.add_argument("--no-extract", action="store_true", help="download and verify the archive only")


def run(args: argparse.Namespace) -> int:
    from ..data.sources.mmimdb.download import fetch_mmimdb

    result = fetch_mmimdb(
        args.to,
        url=args.url,
        sha256=args.sha256,
        retries=args.retries,
        timeout=args.timeout,
        extract_archive=not args.no_extract,
    )
    if args.no_extract:
        print(f"archive: {result} (SHA-256 verified; run again without --no-extract to unpack it)")
    else:
        print(f"raw MM-IMDb is in {result}\nnext: mmimdb-dist shard --raw {result}")
    return 0
