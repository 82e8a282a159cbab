"""Writes the out-of-domain evaluation text of issue 18 (docs/results.md): a GNU manual as Debian
ships it, by default coreutils (package coreutils, /usr/share/info/coreutils.info.gz; GNU Free
Documentation License 1.3) from its "1 Introduction" node on, info control characters and node
header lines removed, the first N characters. Read on the machine that evaluates, never shipped.

    python tools/ood_text.py OUT.txt [--chars 80000] [--info /usr/share/info/coreutils.info.gz]
                             [--node Introduction]
    python tools/ood_text.py wget.txt --info /usr/share/info/wget.info.gz --node Overview
"""

import argparse
import gzip
import re
from pathlib import Path


def info_text(info: Path, node: str, chars: int) -> str:
    raw = gzip.decompress(info.read_bytes()).decode("utf-8")
    start = raw.index(f"Node: {node},")
    body = raw[raw.rindex("\x1f", 0, start):]
    header = f"File: {info.name.split('.info')[0]}.info,"
    lines = [ln for ln in body.split("\n") if not ln.startswith(("\x1f", header))]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines).replace("\x7f", "").replace("\x08", ""))
    return text.strip("\n")[:chars]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--chars", type=int, default=80_000)
    ap.add_argument("--info", type=Path, default=Path("/usr/share/info/coreutils.info.gz"))
    ap.add_argument("--node", default="Introduction", help="the info node the text starts at")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose another path (this tool writes only new files)")
    text = info_text(args.info, args.node, args.chars) + "\n"
    tmp = args.out.with_name(args.out.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
