#!/usr/bin/env python3
"""Build the plain-text corpus from extracted Debian packages.

Input: a directory holding the extracted packages (`dpkg-deb -x` output,
normally data/cache). Output (normally data/corpus):

    <out>/{train,calib,heldout}/<source>/<doc>.txt
    <out>/manifest.json

Sources:
  linux-doc  usr/share/doc/linux-doc-6.1/Documentation/**/*.{rst,txt}[.gz]
             (translations/ skipped: English only)
  python-doc usr/share/doc/python3.11/html/_sources/**/*.rst.txt
  austen     usr/lib/R/site-library/janeaustenr/data/Rdata.{rdx,rdb}
             (one document per novel, read with scripts/rdata.py)

Documents smaller than --min-bytes (4096) after decoding are skipped for
linux-doc and python-doc. The split is a pure function of (source, name):
see split_of(). Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rdata  # noqa: E402

SPLITS = ("train", "calib", "heldout")
SOURCES = ("linux-doc", "python-doc", "austen")
TRAIN_FRAC, CALIB_FRAC = 0.80, 0.05  # the rest (0.15) is held out

LINUX_DOC_ROOT = "usr/share/doc/linux-doc-6.1/Documentation"
PYTHON_DOC_ROOT = "usr/share/doc/python3.11/html/_sources"
AUSTEN_DB = "usr/lib/R/site-library/janeaustenr/data/Rdata"

# Austen: one novel is held out entirely, one is the calibration set.
AUSTEN_TITLES = {
    "emma": "Emma",
    "mansfieldpark": "Mansfield Park",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
    "prideprejudice": "Pride and Prejudice",
    "sensesensibility": "Sense and Sensibility",
}
AUSTEN_SPLIT = {"persuasion": "heldout", "northangerabbey": "calib"}


def hash_unit(source: str, name: str) -> float:
    """A number in [0, 1) fixed by the source and document name alone."""
    h = hashlib.sha256(f"{source}\0{name}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def split_of(source: str, name: str) -> str:
    if source == "austen":
        return AUSTEN_SPLIT.get(name, "train")
    u = hash_unit(source, name)
    if u < TRAIN_FRAC:
        return "train"
    if u < TRAIN_FRAC + CALIB_FRAC:
        return "calib"
    return "heldout"


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(rel: str) -> str:
    """A filesystem-safe file stem for a relative source path."""
    s = rel.replace("/", "__")
    s = _UNSAFE.sub("_", s).strip("._") or "doc"
    return s[:180]


def normalise_text(raw: bytes) -> str | None:
    """Decode UTF-8 (strict; a BOM is dropped) and normalise newlines.
    Returns None when the bytes are not valid UTF-8."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    return text


# ---------------------------------------------------------------- sources


def iter_linux_doc(root: Path, stats: dict):
    base = root / LINUX_DOC_ROOT
    if not base.is_dir():
        raise FileNotFoundError(f"linux-doc not extracted: {base}")
    for p in sorted(base.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(base).as_posix()
        if rel.startswith("translations/"):
            continue
        stem = rel[:-3] if rel.endswith(".gz") else rel
        if not stem.endswith((".rst", ".txt")):
            continue
        raw = p.read_bytes()
        if rel.endswith(".gz"):
            raw = gzip.decompress(raw)
        yield stem, raw


def iter_python_doc(root: Path, stats: dict):
    base = root / PYTHON_DOC_ROOT
    if not base.is_dir():
        raise FileNotFoundError(f"python3.11-doc not extracted: {base}")
    for p in sorted(base.rglob("*.rst.txt")):
        if p.is_file():  # name 'library/os.rst', like linux-doc's
            yield p.relative_to(base).as_posix()[:-4], p.read_bytes()


def austen_novels(root: Path) -> dict:
    """{short name: text} for the six novels, lines joined by newlines.
    Chapter headings and blank lines are kept as they are in the package."""
    db = rdata.LazyLoadDB(str(root / AUSTEN_DB))
    out = {}
    for key in db.keys():
        vec = db.get(key)
        if getattr(vec, "rtype", None) != rdata.STRSXP:
            raise rdata.RDataError(f"janeaustenr: {key} is not a character vector")
        lines = ["" if s is None else s for s in vec]  # NA lines -> empty
        out[key] = "\n".join(lines).rstrip("\n") + "\n"
    return out


def iter_austen(root: Path, stats: dict):
    for key, text in sorted(austen_novels(root).items()):
        yield key, text.encode("utf-8")


ITERATORS = {"linux-doc": iter_linux_doc, "python-doc": iter_python_doc, "austen": iter_austen}


# ---------------------------------------------------------------- build


def build(cache: Path, out: Path, min_bytes: int = 4096, log=print) -> dict:
    t0 = time.time()
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    docs = []
    skipped = {}
    seen = set()  # content hashes: a text never lands in two splits
    for source in SOURCES:
        used = set()
        n = 0
        sk = {"small": 0, "not_utf8": 0, "duplicate": 0}
        for rel, raw in ITERATORS[source](cache, sk):
            text = normalise_text(raw)
            if text is None:
                sk["not_utf8"] += 1
                continue
            data = text.encode("utf-8")
            if source != "austen" and len(data) < min_bytes:
                sk["small"] += 1
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:  # identical text under another path
                sk["duplicate"] += 1
                continue
            seen.add(digest)
            name = safe_name(rel)
            if name in used:  # two paths collapsed to one safe name
                name = f"{name}-{hashlib.sha256(rel.encode()).hexdigest()[:8]}"
            used.add(name)
            split = split_of(source, name)
            d = tmp / split / source
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{name}.txt").write_bytes(data)
            docs.append({
                "source": source, "name": name, "origin": rel, "split": split,
                "bytes": len(data), "sha256": digest,
            })
            n += 1
            if n % 500 == 0:
                log(f"  {source}: {n} documents")
        skipped[source] = sk
        log(f"{source}: {n} documents (skipped {sk['small']} < {min_bytes} B, "
            f"{sk['not_utf8']} not UTF-8, {sk['duplicate']} duplicates)")

    totals = {"by_split": {}, "by_source": {}, "by_source_split": {}}
    for d in docs:
        for key, k in (("by_split", d["split"]), ("by_source", d["source"]),
                       ("by_source_split", f"{d['source']}/{d['split']}")):
            t = totals[key].setdefault(k, {"documents": 0, "bytes": 0})
            t["documents"] += 1
            t["bytes"] += d["bytes"]
    totals["all"] = {"documents": len(docs), "bytes": sum(d["bytes"] for d in docs)}
    manifest = {
        "format": 1,
        "splits": {"train": TRAIN_FRAC, "calib": CALIB_FRAC,
                   "heldout": round(1 - TRAIN_FRAC - CALIB_FRAC, 6)},
        "split_rule": "sha256(source + '\\0' + name)[:8] as a fraction of 2^64: "
                      "< 0.80 train, < 0.85 calib, else heldout; austen: "
                      "persuasion heldout, northangerabbey calib, others train",
        "min_bytes": min_bytes,
        "packages": read_package_versions(cache),
        "skipped": skipped,
        "totals": totals,
        "documents": sorted(docs, key=lambda d: (d["source"], d["split"], d["name"])),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"corpus written to {out} in {time.time() - t0:.1f} s")
    return manifest


def read_package_versions(cache: Path) -> dict:
    p = cache / "versions.json"
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except ValueError:
            pass
    return {}


def summary_table(manifest: dict) -> str:
    t = manifest["totals"]["by_source_split"]
    rows = [f"{'source':<12}" + "".join(f"{s:>20}" for s in SPLITS + ("total",))]
    cols = {s: [0, 0] for s in SPLITS + ("total",)}
    for src in SOURCES:
        line = f"{src:<12}"
        tot = [0, 0]
        for sp in SPLITS:
            e = t.get(f"{src}/{sp}", {"documents": 0, "bytes": 0})
            line += f"{e['documents']:>8} {e['bytes'] / 1e6:>8.2f} MB "
            tot[0] += e["documents"]
            tot[1] += e["bytes"]
            cols[sp][0] += e["documents"]
            cols[sp][1] += e["bytes"]
        line += f"{tot[0]:>8} {tot[1] / 1e6:>8.2f} MB "
        cols["total"][0] += tot[0]
        cols["total"][1] += tot[1]
        rows.append(line)
    rows.append(f"{'total':<12}" + "".join(f"{c[0]:>8} {c[1] / 1e6:>8.2f} MB " for c in cols.values()))
    return "\n".join(r.rstrip() for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="data/cache", help="extracted packages (dpkg-deb -x root)")
    ap.add_argument("--out", default="data/corpus", help="corpus directory to (re)write")
    ap.add_argument("--min-bytes", type=int, default=4096)
    ap.add_argument("--json", action="store_true", help="print the totals as JSON (progress to stderr)")
    a = ap.parse_args(argv)
    log = (lambda *x: print(*x, file=sys.stderr)) if a.json else print
    m = build(Path(a.cache), Path(a.out), a.min_bytes, log)
    if a.json:
        print(json.dumps(m["totals"], indent=1))
    else:
        print(summary_table(m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
