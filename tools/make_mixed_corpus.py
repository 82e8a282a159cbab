#!/usr/bin/env python3
"""Regenerate the packaged non-Python calibration text (issue 18): English prose of two more domains,
taken from Debian packages, to sit beside the pydoc calibration topics (tools/make_corpus.py).

- ``calib_austen_en.txt``: every ``AUSTEN_STRIDE``-th chapter of Jane Austen's six novels (public
  domain), as the Debian package ``r-cran-janeaustenr`` 1.0.0-1 ships them (R lazy-load data,
  ``data/Rdata.rdb``; the R package is MIT, the novels' text is in the public domain).
- ``calib_jargon_en.txt``: every ``JARGON_STRIDE``-th entry of the Jargon File 4.4.7's lexicon
  (public domain), Debian package ``jargon-text`` 4.4.7-4.1 (``jargon.txt.gz``).

Fiction and informal glossary prose: neither shares a domain with the packaged evaluation text
(pydoc topics) nor with the out-of-domain text of docs/results.md (the coreutils manual).

Usage (the .deb files from ``apt-get download r-cran-janeaustenr jargon-text``)::

    python tools/make_mixed_corpus.py DEB_DIR           # rewrite the two files
    python tools/make_mixed_corpus.py DEB_DIR --check   # exit 1 if they are out of date

A maintenance tool; the resq_export package never imports it.
"""
from __future__ import annotations

import argparse
import gzip
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "resq_export" / "data"
AUSTEN_DEB, JARGON_DEB = "r-cran-janeaustenr_1.0.0-1_all.deb", "jargon-text_4.4.7-4.1_all.deb"
AUSTEN_STRIDE = 16  # about 250k characters of 3.95M
JARGON_STRIDE = 5  # about 250k characters of the lexicon


def _extract(deb: Path, into: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


def _r_lazyload_entries(rdb: bytes):
    """The serialised objects of an R lazy-load database: each a big-endian length, then zlib data."""
    off = 0
    while off < len(rdb):
        stream = zlib.decompressobj()
        blob = stream.decompress(rdb[off + 4:])
        if len(blob) != struct.unpack(">I", rdb[off:off + 4])[0]:
            raise ValueError("R lazy-load entry: length mismatch")
        yield blob
        off = len(rdb) - len(stream.unused_data)


def _r_character_vector(blob: bytes) -> list[str] | None:
    """An R character vector (XDR serialisation, format 2 or 3); None for any other object."""
    if blob[:2] != b"X\n":
        raise ValueError("not an XDR R serialisation")
    pos = 2

    def i32() -> int:
        nonlocal pos
        (v,) = struct.unpack(">i", blob[pos:pos + 4])
        pos += 4
        return v

    version = i32()
    i32(), i32()  # writer's and minimal reader's R versions
    if version == 3:
        name_length = i32()  # then the native encoding's name
        pos += name_length
    if i32() & 0xFF != 16:  # STRSXP
        return None
    out = []
    for _ in range(i32()):
        flags, n = i32(), i32()
        if flags & 0xFF != 9:  # CHARSXP
            raise ValueError("unexpected element in an R character vector")
        if n < 0:  # NA
            continue
        out.append(blob[pos:pos + n].decode("utf-8" if flags & (1 << 15) else "latin-1"))
        pos += n
    return out


def austen_text(deb: Path) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        rdb = _extract(deb, Path(tmp)) / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
        novels = [v for v in map(_r_character_vector, _r_lazyload_entries(rdb.read_bytes())) if v]
    chapters = []
    for lines in novels:
        starts = [i for i, ln in enumerate(lines) if re.match(r"(CHAPTER|Chapter) [0-9IVXL]+\.?$", ln.strip())]
        for a, b in zip(starts, starts[1:] + [len(lines)]):
            chapters.append("\n".join(ln.rstrip() for ln in lines[a:b]).strip("\n"))
    return _join(chapters[::AUSTEN_STRIDE])


def jargon_text(deb: Path) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = _extract(deb, Path(tmp)) / "usr/share/doc/jargon-text/jargon.txt.gz"
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    start = text.index("\n   :(TM):")  # the first entry; the lexicon ends where Part III's contents begin
    lexicon = text[start:re.compile(r"\n\s+Part\sIII\.\sAppendices").search(text, start).start()]
    lines = [ln[3:] if ln.startswith("   ") else ln for ln in lexicon.split("\n")]
    entries, current = [], []
    for ln in lines:
        if ln.startswith(":") and current:
            entries.append("\n".join(current).strip("\n"))
            current = []
        if ln.startswith(":") or current:
            current.append(ln.rstrip())
    entries.append("\n".join(current).strip("\n"))
    return _join(entries[::JARGON_STRIDE])


def _join(docs: list[str]) -> str:
    return re.sub(r"\n{3,}", "\n\n", "\n\n".join(docs)) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("deb_dir", type=Path)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    wanted = {"calib_austen_en.txt": austen_text(args.deb_dir / AUSTEN_DEB),
              "calib_jargon_en.txt": jargon_text(args.deb_dir / JARGON_DEB)}
    stale = [name for name, text in wanted.items()
             if not (DATA / name).exists() or (DATA / name).read_text(encoding="utf-8") != text]
    if args.check:
        print("out of date: " + ", ".join(stale) if stale else "up to date")
        return 1 if stale else 0
    for name in stale:
        tmp = DATA / (name + ".tmp")
        tmp.write_text(wanted[name], encoding="utf-8")
        tmp.replace(DATA / name)
        print(f"{name}: {len(wanted[name])} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
