"""Shared helpers for the Python tests of the data scripts.

`Xdr` builds R serialization streams byte by byte (written from the format
description, independently of scripts/rdata.py), so the reader can be
checked on hand-built inputs. `real_data` provides data/ built by
scripts/fetch-data, fetching it when absent (about 50 MB of .debs; ~6 s on
a nearby Debian mirror). Set INDEXCACHE_DATA to use another data directory,
or INDEXCACHE_NO_FETCH=1 to skip the real-data tests instead of fetching.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))

# Flag bits and type codes, spelled out here on purpose (not imported).
IS_OBJECT, HAS_ATTR, HAS_TAG = 1 << 8, 1 << 9, 1 << 10
UTF8_LEVEL, ASCII_LEVEL = 1 << 3, 1 << 6


class Xdr:
    """Append-only writer of an XDR ('X\\n') R serialization stream."""

    def __init__(self, version: int = 2, header: bool = True):
        self.b = bytearray()
        if header:
            self.b += b"X\n"
            self.int(version)
            self.int(0x040201)  # written by R 4.2.1
            self.int(0x020300 if version == 2 else 0x030500)
            if version == 3:
                self.int(5)
                self.b += b"UTF-8"

    def int(self, v: int) -> "Xdr":
        self.b += struct.pack(">i", v)
        return self

    def flags(self, t: int, levels: int = 0, obj=False, attr=False, tag=False) -> "Xdr":
        return self.int(t | (levels << 12) | (IS_OBJECT if obj else 0)
                        | (HAS_ATTR if attr else 0) | (HAS_TAG if tag else 0))

    def nil(self) -> "Xdr":
        return self.int(254)

    def charsxp(self, s) -> "Xdr":
        if s is None:
            return self.flags(9).int(-1)
        raw = s.encode("utf-8")
        self.flags(9, ASCII_LEVEL if s.isascii() else UTF8_LEVEL).int(len(raw))
        self.b += raw
        return self

    def sym(self, name: str) -> "Xdr":
        return self.flags(1).charsxp(name)

    def ref(self, index: int) -> "Xdr":
        return self.int((index << 8) | 255)

    def strsxp(self, items, attr=False) -> "Xdr":
        self.flags(16, attr=attr).int(len(items))
        for s in items:
            self.charsxp(s)
        return self

    def intsxp(self, items, attr=False, obj=False, t=13) -> "Xdr":
        self.flags(t, attr=attr, obj=obj).int(len(items))
        for v in items:
            self.int(-(2 ** 31) if v is None else int(v))
        return self

    def realsxp(self, raw_items, attr=False) -> "Xdr":
        """raw_items: floats, or 8-byte big-endian bit patterns."""
        self.flags(14, attr=attr).int(len(raw_items))
        for v in raw_items:
            self.b += v if isinstance(v, bytes) else struct.pack(">d", v)
        return self

    def vecsxp(self, n: int, attr=False, obj=False) -> "Xdr":
        """Header of a generic list; the caller writes the n elements."""
        return self.flags(19, attr=attr, obj=obj).int(n)

    def tagged_cell(self) -> "Xdr":
        """Header of one LISTSXP cell with a tag; the caller writes tag, car,
        then the next cell or nil()."""
        return self.flags(2, tag=True)

    def bytes(self) -> bytes:
        return bytes(self.b)


NA_REAL_BITS = struct.pack(">II", 0x7FF00000, 1954)


def write_lazyload_db(base: Path, values: dict, compressed=True, codec=zlib.compress,
                      references: dict | None = None) -> str:
    """Write <base>.rdx + <base>.rdb holding `values` (name -> serialized
    payload), each chunk a 4-byte big-endian length + codec(payload)."""
    rdb = bytearray()

    def put(entries: dict) -> dict:
        offsets = {}
        for name, payload in entries.items():
            chunk = struct.pack(">I", len(payload)) + codec(payload)
            offsets[name] = (len(rdb), len(chunk))
            rdb.extend(chunk)
        return offsets

    def index(w: Xdr, offsets: dict) -> None:
        w.vecsxp(len(offsets), attr=bool(offsets))
        for off, ln in offsets.values():
            w.intsxp([off, ln])
        if offsets:
            w.tagged_cell().sym("names").strsxp(list(offsets)).nil()

    var_offsets = put(values)
    ref_offsets = put(references or {})
    w = Xdr().vecsxp(3, attr=True)
    index(w, var_offsets)
    index(w, ref_offsets)
    if isinstance(compressed, bool):
        w.intsxp([int(compressed)], t=10)
    else:
        w.intsxp([compressed])
    w.tagged_cell().sym("names").strsxp(["variables", "references", "compressed"]).nil()
    base.parent.mkdir(parents=True, exist_ok=True)
    Path(str(base) + ".rdx").write_bytes(gzip.compress(w.bytes()))
    Path(str(base) + ".rdb").write_bytes(bytes(rdb))
    return str(base)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """data/ with cache/ and corpus/ built by scripts/fetch-data."""
    data = Path(os.environ.get("INDEXCACHE_DATA", REPO / "data"))
    if not (data / "corpus" / "manifest.json").is_file():
        if os.environ.get("INDEXCACHE_NO_FETCH"):
            pytest.skip("no data/corpus and INDEXCACHE_NO_FETCH is set")
        if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
            pytest.skip("apt-get/dpkg-deb not available to fetch the corpus")
        r = subprocess.run([str(SCRIPTS / "fetch-data"), "--out", str(data)],
                           capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, f"fetch-data failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return data
