"""scripts/build_corpus.py: the split rule, a build from a synthetic package
tree, and the real corpus built by scripts/fetch-data."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conftest import SCRIPTS, Xdr, write_lazyload_db

import build_corpus as bc

SPLITS = ("train", "calib", "heldout")
AUSTEN_KEYS = ["emma", "mansfieldpark", "northangerabbey", "persuasion",
               "prideprejudice", "sensesensibility"]


def expected_split(source: str, name: str) -> str:
    """The documented rule, recomputed here independently."""
    if source == "austen":
        return {"persuasion": "heldout", "northangerabbey": "calib"}.get(name, "train")
    u = int(hashlib.sha256(f"{source}\0{name}".encode()).hexdigest()[:16], 16) / 2 ** 64
    return "train" if u < 0.80 else "calib" if u < 0.85 else "heldout"


def test_split_rule_is_the_documented_hash():
    names = [f"dir{i % 13}__doc{i}.rst" for i in range(3000)]
    for src in ("linux-doc", "python-doc"):
        for n in names:
            assert bc.split_of(src, n) == expected_split(src, n)
    for k in AUSTEN_KEYS:
        assert bc.split_of("austen", k) == expected_split("austen", k)


def test_split_proportions():
    n = 40000
    c = Counter(bc.split_of("linux-doc", f"d{i}") for i in range(n))
    assert abs(c["train"] / n - 0.80) < 0.01
    assert abs(c["calib"] / n - 0.05) < 0.005
    assert abs(c["heldout"] / n - 0.15) < 0.01


def test_split_is_stable_across_processes():
    # Not Python's randomised hash(): a fresh interpreter agrees.
    names = [f"x{i}" for i in range(200)]
    code = ("import sys; sys.path.insert(0, %r); import build_corpus as b; "
            "print(','.join(b.split_of('python-doc', 'x%%d' %% i) for i in range(200)))" % str(SCRIPTS))
    out = subprocess.run(["python3", "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"}).stdout.strip()
    assert out.split(",") == [bc.split_of("python-doc", n) for n in names]


def test_safe_name():
    assert bc.safe_name("admin-guide/mm/ksm.rst") == "admin-guide__mm__ksm.rst"
    assert bc.safe_name("odd name/ä\u00f6?.txt") == "odd_name___.txt"
    assert "/" not in bc.safe_name("../../etc/passwd") and not bc.safe_name("../x").startswith(".")


# ------------------------------------------------------------- synthetic tree

def _para(tag: str, n: int) -> str:
    return "".join(f"{tag} line {i}: some documentation text.\n" for i in range(n))


def _fake_cache(root: Path) -> dict:
    """A miniature of the three extracted packages; returns expectations."""
    ld = root / bc.LINUX_DOC_ROOT
    (ld / "mm").mkdir(parents=True)
    (ld / "translations/zh_CN").mkdir(parents=True)
    big = _para("ksm", 200)
    (ld / "mm/ksm.rst.gz").write_bytes(gzip.compress(big.encode()))
    (ld / "mm/zz-copy.rst").write_text(big)                          # duplicate text
    (ld / "small.rst.gz").write_bytes(gzip.compress(b"tiny\n"))       # < 4 KB
    (ld / "translations/zh_CN/ksm.rst.gz").write_bytes(gzip.compress(big.encode()))
    (ld / "bindings.yaml.gz").write_bytes(gzip.compress(_para("y", 200).encode()))
    (ld / "crlf notes.txt").write_bytes(_para("crlf", 200).replace("\n", "\r\n").encode())
    (ld / "latin1.txt").write_bytes(_para("caf\xe9", 200).encode("latin-1"))  # not UTF-8
    for i in range(40):
        (ld / f"doc{i:02d}.rst").write_text(_para(f"doc{i}", 150))
    pd = root / bc.PYTHON_DOC_ROOT / "library"
    pd.mkdir(parents=True)
    (pd / "os.rst.txt").write_text(_para("os", 150))
    (pd / "index.rst.txt").write_text("tiny\n")

    values = {}
    for k in AUSTEN_KEYS:
        lines = [k.upper(), "", "Chapter 1", "", f"The story of {k}.", None, "", "Chapter 2", "End."]
        values[k] = Xdr().strsxp(lines).bytes()
    write_lazyload_db(root / bc.AUSTEN_DB, values)
    return {"linux-doc": 1 + 1 + 40, "python-doc": 1, "austen": 6}


def _check_corpus(out: Path) -> dict:
    m = json.loads((out / "manifest.json").read_text())
    listed = set()
    for d in m["documents"]:
        p = out / d["split"] / d["source"] / f"{d['name']}.txt"
        data = p.read_bytes()
        assert len(data) == d["bytes"] and hashlib.sha256(data).hexdigest() == d["sha256"]
        assert d["split"] == expected_split(d["source"], d["name"])
        data.decode("utf-8")
        listed.add(p)
    on_disk = {p for p in out.rglob("*.txt")}
    assert on_disk == listed, "files on disk and manifest differ"
    # disjoint: a (source, name) or a text is in exactly one split
    keys = Counter((d["source"], d["name"]) for d in m["documents"])
    assert max(keys.values()) == 1
    held = {d["sha256"] for d in m["documents"] if d["split"] == "heldout"}
    assert not held & {d["sha256"] for d in m["documents"] if d["split"] != "heldout"}
    # totals agree with the documents
    for src in bc.SOURCES:
        docs = [d for d in m["documents"] if d["source"] == src]
        t = m["totals"]["by_source"].get(src, {"documents": 0, "bytes": 0})
        assert t == {"documents": len(docs), "bytes": sum(d["bytes"] for d in docs)}
    return m


def test_build_from_synthetic_packages(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "corpus"
    expect = _fake_cache(cache)
    m = bc.build(cache, out, log=lambda *a: None)
    _check_corpus(m and out)
    counts = Counter(d["source"] for d in m["documents"])
    assert dict(counts) == expect
    names = {d["name"] for d in m["documents"]}
    assert "mm__ksm.rst" in names and "crlf_notes.txt" in names and "library__os.rst" in names
    assert not any("translations" in n or "yaml" in n or "small" in n or "latin1" in n for n in names)
    assert m["skipped"]["linux-doc"] == {"small": 1, "not_utf8": 1, "duplicate": 1}
    assert m["skipped"]["python-doc"]["small"] == 1
    crlf = next(out.rglob("crlf_notes.txt.txt")).read_bytes()
    assert b"\r" not in crlf and crlf.startswith(b"crlf line 0")
    per = {d["name"]: d["split"] for d in m["documents"] if d["source"] == "austen"}
    assert per["persuasion"] == "heldout" and per["northangerabbey"] == "calib"
    assert sorted(k for k, s in per.items() if s == "train") == [
        "emma", "mansfieldpark", "prideprejudice", "sensesensibility"]
    pers = (out / "heldout/austen/persuasion.txt").read_text()
    assert pers == "PERSUASION\n\nChapter 1\n\nThe story of persuasion.\n\n\nChapter 2\nEnd.\n"
    # Rebuilding is idempotent and clears stale files.
    (out / "train" / "stale.txt").write_text("old")
    m2 = bc.build(cache, out, log=lambda *a: None)
    assert m2 == m and not (out / "train" / "stale.txt").exists()


def test_summary_table_and_cli_json(tmp_path, capsys):
    cache, out = tmp_path / "cache", tmp_path / "corpus"
    _fake_cache(cache)
    assert bc.main(["--cache", str(cache), "--out", str(out), "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)
    assert totals["by_source"]["austen"]["documents"] == 6
    assert sum(v["documents"] for v in totals["by_split"].values()) == totals["all"]["documents"]
    table = bc.summary_table(json.loads((out / "manifest.json").read_text()))
    assert table.splitlines()[0].split() == ["source", "train", "calib", "heldout", "total"]
    assert table.splitlines()[-1].startswith("total")


# ------------------------------------------------------------- real corpus

def test_real_corpus(real_data):
    out = real_data / "corpus"
    m = _check_corpus(out)
    docs = m["documents"]
    by = Counter((d["source"], d["split"]) for d in docs)
    austen = {d["name"]: d["split"] for d in docs if d["source"] == "austen"}
    assert austen == {k: expected_split("austen", k) for k in AUSTEN_KEYS}
    pers = (out / "heldout/austen/persuasion.txt").read_text()
    assert pers.startswith("Persuasion\n") and "Sir Walter Elliot, of Kellynch Hall" in pers
    assert "Chapter 24" in pers  # chapters kept
    for src, min_docs in (("linux-doc", 1000), ("python-doc", 300)):
        n = sum(by[(src, s)] for s in SPLITS)
        assert n >= min_docs
        assert 0.70 < by[(src, "train")] / n < 0.90
        assert 0.01 < by[(src, "calib")] / n < 0.10
        assert 0.08 < by[(src, "heldout")] / n < 0.22
        assert min(d["bytes"] for d in docs if d["source"] == src) >= m["min_bytes"]
    assert m["totals"]["all"]["bytes"] > 30e6
    assert set(m["packages"]) == {"linux-doc-6.1", "python3.11-doc", "r-cran-janeaustenr"}


def test_fetch_data_is_idempotent(real_data):
    # A second run downloads and extracts nothing and reproduces the corpus.
    before = (real_data / "corpus/manifest.json").read_bytes()
    r = subprocess.run([str(SCRIPTS / "fetch-data"), "--out", str(real_data), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "already downloaded" in r.stderr and "extracting" not in r.stderr
    totals = json.loads(r.stdout)
    assert totals["all"]["documents"] == json.loads(before)["totals"]["all"]["documents"]
    assert (real_data / "corpus/manifest.json").read_bytes() == before


def test_fetch_data_updates_apt_lists_and_replaces_broken_debs(real_data, tmp_path):
    """With a fake apt-get that cannot locate packages until `update` has run
    (a fresh container), fetch-data updates, retries and builds the same
    corpus; a truncated .deb in the cache is detected and fetched again."""
    debs = real_data / "cache/debs"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "apt-get"
    fake.write_text(f"""#!/bin/sh
log={tmp_path}/calls
echo "$*" >> "$log"
case "$1" in
  update) touch {tmp_path}/updated ;;
  download)
    [ -f {tmp_path}/updated ] || {{ echo "E: Unable to locate package $2"; exit 100; }}
    shift
    for p in "$@"; do cp {debs}/"$p"_*.deb . ; done ;;
esac
""")
    fake.chmod(0o755)
    out = tmp_path / "data"
    (out / "cache/debs").mkdir(parents=True)
    (out / "cache/debs/r-cran-janeaustenr_0.0-1_all.deb").write_bytes(b"!<arch>\ntruncated")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    r = subprocess.run([str(SCRIPTS / "fetch-data"), "--out", str(out)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    calls = (tmp_path / "calls").read_text().split("\n")
    assert calls[0].startswith("download ") and calls[1] == "update" and calls[2].startswith("download ")
    assert "removing unreadable r-cran-janeaustenr_0.0-1_all.deb" in r.stdout
    m_new = json.loads((out / "corpus/manifest.json").read_text())
    m_ref = json.loads((real_data / "corpus/manifest.json").read_text())
    assert m_new["documents"] == m_ref["documents"]
