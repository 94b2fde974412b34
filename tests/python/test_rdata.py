"""scripts/rdata.py on hand-built R serialization streams and on the real
r-cran-janeaustenr package."""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import struct
import zlib

import pytest

from conftest import NA_REAL_BITS, Xdr, write_lazyload_db

import rdata


def test_character_vector_with_na_and_utf8():
    w = Xdr().strsxp(["a", None, "caf\u00e9", ""])
    v = rdata.unserialize(w.bytes())
    assert v.rtype == rdata.STRSXP
    assert list(v) == ["a", None, "caf\u00e9", ""]
    assert v.attributes == {}


def test_version3_header_integers_logicals_doubles():
    u = rdata.Unserializer(Xdr(version=3).intsxp([1, None, -7, 2 ** 31 - 1]).bytes())
    assert u.version == 3 and u.native_encoding == "UTF-8"
    assert list(u.read()) == [1, None, -7, 2 ** 31 - 1]

    lg = rdata.unserialize(Xdr().intsxp([1, 0, None], t=10).bytes())
    assert lg.rtype == rdata.LGLSXP and list(lg) == [True, False, None]

    nan_bits = struct.pack(">d", math.nan)
    d = rdata.unserialize(Xdr().realsxp([1.5, NA_REAL_BITS, nan_bits, -math.inf]).bytes())
    assert d[0] == 1.5 and d[1] is None and math.isnan(d[2]) and d[3] == -math.inf


def test_null_and_named_list():
    w = Xdr().vecsxp(3, attr=True)
    w.intsxp([42]).strsxp(["x"]).nil()
    # attributes: pairlist(names = c("num", "chr", "nothing"))
    w.tagged_cell().sym("names").strsxp(["num", "chr", "nothing"]).nil()
    v = rdata.unserialize(w.bytes())
    assert v.rtype == rdata.VECSXP
    assert list(v[0]) == [42] and list(v[1]) == ["x"] and v[2] is None
    assert rdata.names(v) == ["num", "chr", "nothing"]
    assert rdata.unserialize(Xdr().nil().bytes()) is None


def _data_frame_bytes() -> bytes:
    # data.frame(f = factor(c("a", "b", NA)), x = c(1.5, NA, 3)), where the
    # second use of the symbol `class` is a back-reference (ref index 2).
    w = Xdr().vecsxp(2, attr=True, obj=True)
    w.intsxp([1, 2, None], attr=True, obj=True)
    w.tagged_cell().sym("levels").strsxp(["a", "b"])          # ref 1
    w.tagged_cell().sym("class").strsxp(["factor"]).nil()     # ref 2
    w.realsxp([1.5, NA_REAL_BITS, 3.0])
    w.tagged_cell().sym("names").strsxp(["f", "x"])            # ref 3
    w.tagged_cell().ref(2).strsxp(["data.frame"])
    w.tagged_cell().sym("row.names").intsxp([None, -3]).nil()  # ref 4
    return w.bytes()


def test_data_frame_factor_and_references():
    df = rdata.unserialize(_data_frame_bytes())
    assert rdata.r_class(df) == ["data.frame"]
    assert set(df.attributes) == {"names", "class", "row.names"}
    assert rdata.dataframe_nrow(df) == 3
    cols = rdata.dataframe_columns(df)
    assert cols == {"f": ["a", "b", None], "x": [1.5, None, 3.0]}
    assert df[0].attributes["levels"] == ["a", "b"]


def test_bad_reference_is_an_error():
    w = Xdr().vecsxp(1, attr=True).nil()
    w.tagged_cell().ref(3).strsxp(["x"]).nil()  # no symbol read yet
    with pytest.raises(rdata.RDataError, match="reference"):
        rdata.unserialize(w.bytes())


def test_long_pairlist_is_read_without_recursion():
    n = 20000
    w = Xdr()
    for i in range(n):
        w.tagged_cell().sym(f"v{i}").intsxp([i])
    w.nil()
    pl = rdata.unserialize(w.bytes())
    d = pl.as_dict()
    assert len(d) == n and list(d["v19999"]) == [19999]


def test_altrep_compact_intseq():
    w = Xdr(version=3).int(238)
    # info: pairlist(compact_intseq, base, 13L)
    w.flags(2).sym("compact_intseq").flags(2).sym("base").flags(2).intsxp([13]).nil()
    w.realsxp([5.0, 10.0, 1.0])  # state: n, first, step
    w.nil()                      # no attributes
    v = rdata.unserialize(w.bytes())
    assert v.rtype == rdata.INTSXP and list(v) == [10, 11, 12, 13, 14]


def test_byte_code_constant_pool():
    # BCODESXP: reps count, code vector, constants. Constant 1 is a plain
    # item (after a padding word); constant 2 the call f(7L), defined as
    # shared entry 0; constant 3 a reference back to that entry.
    w = Xdr().flags(21).int(1)
    w.intsxp([12, 1, 0])
    w.int(3)
    w.int(0).strsxp(["k"])
    w.int(244).int(0).int(6)        # BCREPDEF pos 0, LANGSXP
    w.nil()                         # tag
    w.int(0).sym("f")               # car: plain item
    w.int(2).nil()                  # cdr: LISTSXP cell, no tag
    w.int(0).intsxp([7])            #   its car
    w.int(0).nil()                  #   its cdr
    w.int(243).int(0)               # BCREPREF 0
    bc = rdata.unserialize(w.bytes())
    assert list(bc.code) == [12, 1, 0]
    assert list(bc[0]) == ["k"]
    call = bc[1]
    assert call.rtype == rdata.LANGSXP and call.items[0] == (None, "f")
    assert list(call.items[1][1]) == [7] and len(call.items) == 2
    assert bc[2] is call


def test_ascii_format():
    # A character vector c("a b", NA) and the integer 7, in the ASCII variant.
    ascii_flags = 9 | (64 << 12)
    text = f"A\n2\n262657\n197888\n19\n2\n16\n2\n{ascii_flags}\n3\na\\040b\n9\n-1\n13\n1\nNA\n"
    v = rdata.unserialize(text.encode())
    assert list(v[0]) == ["a b", None] and list(v[1]) == [None]


def test_truncated_stream_is_an_error():
    b = Xdr().strsxp(["abcdef"]).bytes()
    with pytest.raises(rdata.RDataError):
        rdata.unserialize(b[:-3])
    with pytest.raises(rdata.RDataError):
        rdata.unserialize(b"Q\n" + b[2:])


def test_rds_whole_file_compression(tmp_path):
    payload = Xdr().strsxp(["x", None]).bytes()
    for name, data in [("plain.rds", payload), ("gz.rds", gzip.compress(payload)),
                       ("bz.rds", bz2.compress(payload)), ("xz.rds", lzma.compress(payload))]:
        (tmp_path / name).write_bytes(data)
        assert list(rdata.read_rds(str(tmp_path / name))) == ["x", None]


@pytest.mark.parametrize("compressed,codec", [
    (True, zlib.compress),
    (2, lambda b: b"2" + bz2.compress(b)),
    (3, lambda b: b"X" + lzma.compress(b, format=lzma.FORMAT_XZ)),
    (3, lambda b: b"Z" + zlib.compress(b)),
    (2, lambda b: b"0" + b),
])
def test_lazyload_db_compressed_entries(tmp_path, compressed, codec):
    values = {"novel": Xdr().strsxp(["Chapter 1", "", "It was.", None]).bytes(),
              "df": _data_frame_bytes()}
    db = rdata.LazyLoadDB(write_lazyload_db(tmp_path / "db", values, compressed, codec))
    assert db.keys() == ["novel", "df"]
    assert list(db["novel"]) == ["Chapter 1", "", "It was.", None]
    assert rdata.dataframe_columns(db["df"])["f"] == ["a", "b", None]
    with pytest.raises(KeyError):
        db.get("missing")


def test_rda_file_with_save_header(tmp_path):
    # save(a, b, file=): 'RDX2\n' + a stream whose top level is a pairlist.
    w = Xdr()
    w.tagged_cell().sym("a").intsxp([1, 2])
    w.tagged_cell().sym("b").strsxp([None])
    w.nil()
    (tmp_path / "x.rda").write_bytes(gzip.compress(b"RDX2\n" + w.bytes()))
    got = rdata.read_rda(str(tmp_path / "x.rda"))
    assert list(got) == ["a", "b"] and list(got["a"]) == [1, 2] and list(got["b"]) == [None]


def test_persistent_references_resolve_through_the_db(tmp_path):
    # A variable whose value refers (PERSISTSXP) to a stored reference entry.
    ref_payload = Xdr().strsxp(["shared"]).bytes()
    var = Xdr().vecsxp(2).int(247).int(0).int(1).charsxp("env::1")
    var.ref(1)  # the second element is a back-reference to the same value
    base = write_lazyload_db(tmp_path / "db", {"v": var.bytes()},
                             references={"env::1": ref_payload})
    v = rdata.LazyLoadDB(base).get("v")
    assert list(v[0]) == ["shared"] and v[1] is v[0]


def test_lazyload_chunk_errors():
    payload = b"X\n" + b"\0" * 20
    good = struct.pack(">I", len(payload)) + zlib.compress(payload)
    assert rdata.decompress_lazyload_chunk(good, True) == payload
    with pytest.raises(rdata.RDataError, match="length"):
        rdata.decompress_lazyload_chunk(struct.pack(">I", 5) + zlib.compress(payload), True)
    with pytest.raises(rdata.RDataError, match="compression type"):
        rdata.decompress_lazyload_chunk(struct.pack(">I", 1) + b"Q" + b"x", 3)


# ---------------------------------------------------------------- real package

NOVELS = {"emma", "mansfieldpark", "northangerabbey", "persuasion",
          "prideprejudice", "sensesensibility"}


def test_real_janeaustenr_package(real_data):
    pkg = real_data / "cache/usr/lib/R/site-library/janeaustenr"
    db = rdata.LazyLoadDB(str(pkg / "data/Rdata"))
    assert set(db.keys()) == NOVELS
    lines = {k: db.get(k) for k in NOVELS}
    for k, v in lines.items():
        assert v.rtype == rdata.STRSXP and len(v) > 5000, k
        assert all(isinstance(s, str) for s in v), k
    p = lines["persuasion"]
    assert p[0] == "Persuasion"
    assert "Chapter 1" in p
    assert any("Sir Walter Elliot, of Kellynch Hall, in Somersetshire" in s for s in p)
    assert lines["prideprejudice"][0] == "PRIDE AND PREJUDICE"
    assert any(s.startswith("It is a truth universally acknowledged") for s in lines["prideprejudice"])
    # the package's own test: Persuasion has fewer lines than Emma
    assert len(p) < len(lines["emma"])

    # The data index and the code DB's index (an .rds and a second DB).
    index = rdata.read_rds(str(pkg / "data/Rdata.rds"))
    assert {str(v[0]) for v in index} == NOVELS
    code = rdata.LazyLoadDB(str(pkg / "R/janeaustenr"))
    assert "austen_books" in code.keys()
    assert list(code.get(".packageName")) == ["janeaustenr"]
    # austen_books() is a byte-compiled closure; its constant pool starts
    # with the source, which names the six books in factor order.
    fn = code.get("austen_books")
    assert fn.rtype == rdata.CLOSXP
    body = fn.items[-1][1]
    assert isinstance(body, rdata.ByteCode)
    text = repr(body[0])
    pos = [text.index(t) for t in ("Sense & Sensibility", "Pride & Prejudice", "Mansfield Park",
                                   "'Emma'", "Northanger Abbey", "'Persuasion'")]
    assert pos == sorted(pos)
    # Every entry of the package's three lazy-load DBs decodes, including the
    # help DB, whose pages point at environments stored as references.
    helpdb = rdata.LazyLoadDB(str(pkg / "help/janeaustenr"))
    assert helpdb.references and "persuasion" in helpdb.keys()
    for db_ in (db, code, helpdb):
        for k in db_.keys():
            db_.get(k)
    assert "Persuasion" in repr(helpdb.get("persuasion"))
