"""`python -m jitad cache info` shows the disk cache; `python -m jitad cache clear` empties it;
`python -m jitad supported` prints the table of functions jitad traces."""
from __future__ import annotations

import argparse
import sys

from . import disk


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jitad", description=__doc__)
    commands = parser.add_subparsers(dest="group", required=True)
    cache = commands.add_parser("cache", help="the disk cache of traces and compiled code")
    cache.add_argument("action", choices=("info", "clear"))
    commands.add_parser("supported", help="print the table of functions jitad traces (Markdown)")
    args = parser.parse_args(argv)
    if args.group == "supported":
        from .supported import table
        print(table())
        return 0
    if args.action == "info":
        about = disk.info()
        print(f"location: {about['location']}\nstatus:   {about['status']}\n"
              f"files:    {about['files']}\nsize:     {_size(about['size'])}\n"
              f"limit:    {_size(about['limit'])} (JITAD_CACHE_SIZE)")
        return 0
    where = disk.root()
    if not where.usable:
        print(f"jitad: not clearing {where.path}: {where.problem}", file=sys.stderr)
        return 1
    print(f"removed {disk.clear()} files from {where.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
