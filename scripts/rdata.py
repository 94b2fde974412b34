#!/usr/bin/env python3
"""A small reader for R's serialization format and lazy-load databases.

Written from the description in "R Internals" (section "Serialization
Formats") and R's documented file layouts. Standard library only.

Supported:
  * streams: XDR binary ('X\\n'), native little-endian binary ('B\\n'),
    ASCII ('A\\n'); format versions 2 and 3; an optional 'RDX2'/'RDX3'/
    'RDA2'/'RDA3' save() header line in front;
  * whole-file compression of .rds/.rda/.rdx: gzip, bzip2, xz, or none;
  * values: NULL, logical, integer, double, complex, character (with NA),
    raw, generic lists, expression vectors, pairlists / language objects
    (as Pairlist), symbols, attributes, back-references, environments
    (as REnvironment), byte code, persistent-name hooks, S4 objects, and the
    common ALTREP classes (compact sequences, wrappers, deferred strings);
  * lazy-load DBs: .rdx index -> chunks in .rdb (4-byte big-endian
    uncompressed length, then zlib; or a type byte '0' none, 'Z' zlib,
    '2' bzip2, 'X' xz).

Byte code is decoded into its code vector and constant pool (not run).
Not supported (raises RDataError): class references.

Python mapping: vectors become RVector (a list subclass with .rtype and
.attributes); NA becomes None. Helpers: names(), factor_labels(),
dataframe_columns().
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import struct
import zlib
from typing import Any, Callable, Optional

# SEXP type codes.
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
SPECIALSXP, BUILTINSXP, CHARSXP, LGLSXP = 7, 8, 9, 10
INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP = 13, 14, 15, 16, 17
VECSXP, EXPRSXP, BCODESXP, EXTPTRSXP, WEAKREFSXP, RAWSXP, S4SXP = 19, 20, 21, 22, 23, 24, 25

# Pseudo-types used only in the stream.
ALTREP_SXP = 238
ATTRLISTSXP, ATTRLANGSXP = 239, 240
BASEENV_SXP, EMPTYENV_SXP = 241, 242
BCREPREF, BCREPDEF = 243, 244
GENERICREFSXP, CLASSREFSXP = 245, 246
PERSISTSXP, PACKAGESXP, NAMESPACESXP = 247, 248, 249
BASENAMESPACE_SXP, MISSINGARG_SXP, UNBOUNDVALUE_SXP = 250, 251, 252
GLOBALENV_SXP, NILVALUE_SXP, REFSXP = 253, 254, 255

NA_INTEGER = -(2 ** 31)
_NA_REAL_LOW_WORD = 1954  # R's NA_real_ is a NaN whose low word is 1954

# CHARSXP encoding bits (in the "levels" field of the flags).
_LATIN1_MASK = 1 << 2
_BYTES_MASK = 1 << 1


class RDataError(ValueError):
    pass


class RVector(list):
    """An R vector: the elements plus its R type code and attributes."""

    def __init__(self, rtype: int, items=(), attributes: Optional[dict] = None):
        super().__init__(items)
        self.rtype = rtype
        self.attributes = attributes if attributes is not None else {}

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        head = list.__repr__(self[:6]) if len(self) > 6 else list.__repr__(self)
        return f"RVector(type={self.rtype}, n={len(self)}, {head}, attrs={list(self.attributes)})"


class Symbol(str):
    """An R symbol (name)."""


class Pairlist:
    """A pairlist or language object: a list of (tag, value) pairs."""

    def __init__(self, rtype: int, items, attributes=None):
        self.rtype = rtype
        self.items = list(items)
        self.attributes = attributes or {}

    def as_dict(self) -> dict:
        return {tag: val for tag, val in self.items}

    def __repr__(self) -> str:  # pragma: no cover
        return f"Pairlist(type={self.rtype}, {self.items!r})"


class ByteCode(list):
    """Compiled R code: .code (an integer vector) and the constant pool
    (the list itself; its first element is the source expression)."""

    def __init__(self, code, consts):
        super().__init__(consts)
        self.rtype = BCODESXP
        self.code = code
        self.attributes: dict = {}


class REnvironment:
    def __init__(self):
        self.locked = False
        self.enclos: Any = None
        self.frame: Any = None
        self.hashtab: Any = None
        self.attributes: dict = {}

    def variables(self) -> dict:
        """The bindings of a (hashed or unhashed) environment."""
        out = {}
        if isinstance(self.frame, Pairlist):
            out.update(self.frame.as_dict())
        if isinstance(self.hashtab, RVector):
            for bucket in self.hashtab:
                if isinstance(bucket, Pairlist):
                    out.update(bucket.as_dict())
        return out


class Special:
    """Singletons such as the global environment or the missing argument."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:  # pragma: no cover
        return f"<{self.name}>"


GLOBAL_ENV = Special("R_GlobalEnv")
BASE_ENV = Special("R_BaseEnv")
EMPTY_ENV = Special("R_EmptyEnv")
BASE_NAMESPACE = Special("R_BaseNamespace")
MISSING_ARG = Special("R_MissingArg")
UNBOUND_VALUE = Special("R_UnboundValue")


class Persistent:
    """A value written through a persistence hook (a character key)."""

    def __init__(self, key):
        self.key = key


# --------------------------------------------------------------------------
# Input streams


class _XdrInput:
    def __init__(self, data: bytes, pos: int, big_endian: bool = True):
        self.data = data
        self.pos = pos
        e = ">" if big_endian else "<"
        self._i = struct.Struct(e + "i")
        self._e = e

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RDataError("truncated serialized data")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self) -> int:
        return self._i.unpack(self._take(4))[0]

    def ints(self, n: int):
        return struct.unpack(f"{self._e}{n}i", self._take(4 * n))

    def doubles(self, n: int):
        return struct.unpack(f"{self._e}{n}d", self._take(8 * n))

    def raw_doubles(self, n: int) -> bytes:
        return self._take(8 * n)

    def string(self, n: int) -> bytes:
        return self._take(n)

    def rawbytes(self, n: int) -> bytes:
        return self._take(n)


class _AsciiInput:
    """The ASCII variant: whitespace-separated words, strings escaped."""

    def __init__(self, data: bytes, pos: int):
        self.data = data
        self.pos = pos

    def _word(self) -> bytes:
        d, p = self.data, self.pos
        while p < len(d) and d[p] in b" \t\r\n":
            p += 1
        s = p
        while p < len(d) and d[p] not in b" \t\r\n":
            p += 1
        if s == p:
            raise RDataError("truncated ASCII serialized data")
        self.pos = p
        return d[s:p]

    def int(self) -> int:
        w = self._word()
        return NA_INTEGER if w == b"NA" else int(w)

    def ints(self, n: int):
        return tuple(self.int() for _ in range(n))

    def _double(self) -> float:
        w = self._word()
        if w == b"NA":
            return _NA_REAL
        if w == b"NaN":
            return math.nan
        if w == b"Inf":
            return math.inf
        if w == b"-Inf":
            return -math.inf
        return float(w)

    def doubles(self, n: int):
        return tuple(self._double() for _ in range(n))

    def raw_doubles(self, n: int) -> bytes:
        return struct.pack(f">{n}d", *self.doubles(n))

    def string(self, n: int) -> bytes:
        # Skip whitespace, then read n bytes of content, decoding C escapes.
        d, p = self.data, self.pos
        while p < len(d) and d[p] in b" \t\r\n":
            p += 1
        out = bytearray()
        simple = {ord("n"): 10, ord("t"): 9, ord("v"): 11, ord("b"): 8, ord("r"): 13,
                  ord("f"): 12, ord("a"): 7, ord("\\"): 92, ord("?"): 63,
                  ord("'"): 39, ord('"'): 34}
        while len(out) < n:
            c = d[p]
            if c == 92:  # backslash
                e = d[p + 1]
                if e in simple:
                    out.append(simple[e])
                    p += 2
                elif 48 <= e <= 55:  # octal, up to three digits
                    q = p + 1
                    v = 0
                    while q < p + 4 and q < len(d) and 48 <= d[q] <= 55:
                        v = v * 8 + d[q] - 48
                        q += 1
                    out.append(v & 0xFF)
                    p = q
                else:
                    out.append(e)
                    p += 2
            else:
                out.append(c)
                p += 1
        self.pos = p
        return bytes(out)

    def rawbytes(self, n: int) -> bytes:
        return bytes(int(self._word(), 16) for _ in range(n))


_NA_REAL = struct.unpack(">d", struct.pack(">II", 0x7FF00000, _NA_REAL_LOW_WORD))[0]


def is_na_real_bits(raw8: bytes) -> bool:
    hi, lo = struct.unpack(">II", raw8)
    return (hi & 0x7FF00000) == 0x7FF00000 and lo == _NA_REAL_LOW_WORD


# --------------------------------------------------------------------------
# The unserializer


class Unserializer:
    def __init__(self, data: bytes, persistent_hook: Optional[Callable[[Any], Any]] = None):
        self.refs: list = []
        self.hook = persistent_hook
        self.native_encoding = None
        data = _strip_save_header(data)
        fmt = data[:2]
        if fmt == b"X\n":
            self.s = _XdrInput(data, 2, big_endian=True)
        elif fmt == b"B\n":
            self.s = _XdrInput(data, 2, big_endian=False)
        elif fmt == b"A\n":
            self.s = _AsciiInput(data, 2)
        else:
            raise RDataError(f"unknown serialization format {fmt!r}")
        self.version = self.s.int()
        self.writer_version = self.s.int()
        self.min_reader_version = self.s.int()
        if self.version == 3:
            n = self.s.int()
            self.native_encoding = self.s.string(n).decode("ascii", "replace")
        elif self.version != 2:
            raise RDataError(f"unsupported serialization version {self.version}")

    @property
    def pos(self) -> int:
        return self.s.pos

    def read(self):
        return self._item()

    # -- helpers
    def _length(self) -> int:
        n = self.s.int()
        if n == -1:  # long vector: two more ints, upper and lower halves
            hi, lo = self.s.int(), self.s.int()
            n = (hi << 32) + (lo & 0xFFFFFFFF)
        elif n < 0:
            raise RDataError(f"negative vector length {n}")
        return n

    def _string_vec(self):
        if self.s.int() != 0:
            raise RDataError("names in persistent strings are not supported")
        n = self.s.int()
        return [self._item() for _ in range(n)]

    def _attributes(self, has_attr: bool) -> dict:
        if not has_attr:
            return {}
        pl = self._item()
        return _pairlist_to_dict(pl)

    # -- the main dispatcher
    def _item(self, flags: Optional[int] = None):
        if flags is None:
            flags = self.s.int()
        t = flags & 0xFF
        levels = flags >> 12
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if t == NILVALUE_SXP:
            return None
        if t == EMPTYENV_SXP:
            return EMPTY_ENV
        if t == BASEENV_SXP:
            return BASE_ENV
        if t == GLOBALENV_SXP:
            return GLOBAL_ENV
        if t == UNBOUNDVALUE_SXP:
            return UNBOUND_VALUE
        if t == MISSINGARG_SXP:
            return MISSING_ARG
        if t == BASENAMESPACE_SXP:
            return BASE_NAMESPACE
        if t == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.s.int()
            if not 1 <= idx <= len(self.refs):
                raise RDataError(f"bad reference index {idx}")
            return self.refs[idx - 1]
        if t == PERSISTSXP:
            key = self._string_vec()
            val = self.hook(key) if self.hook else Persistent(key)
            self.refs.append(val)
            return val
        if t == SYMSXP:
            name = self._item()  # a CHARSXP
            sym = Symbol(name if name is not None else "NA")
            self.refs.append(sym)
            return sym
        if t in (PACKAGESXP, NAMESPACESXP):
            val = Special(("package:" if t == PACKAGESXP else "namespace:")
                          + ":".join(str(x) for x in self._string_vec()))
            self.refs.append(val)
            return val
        if t == ENVSXP:
            env = REnvironment()
            env.locked = bool(self.s.int())
            self.refs.append(env)
            env.enclos = self._item()
            env.frame = self._item()
            env.hashtab = self._item()
            env.attributes = _pairlist_to_dict(self._item())
            return env
        if t in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP):
            return self._pairlist(t, flags)
        if t == ALTREP_SXP:
            info = self._item()
            state = self._item()
            attr = self._item()
            return self._altrep(info, state, _pairlist_to_dict(attr))

        # Vector-like types.
        if t == CHARSXP:
            n = self.s.int()
            if n == -1:
                return None  # NA_character_
            raw = self.s.string(n)
            if levels & _BYTES_MASK:
                return raw
            enc = "latin-1" if levels & _LATIN1_MASK else "utf-8"
            return raw.decode(enc, "surrogateescape")
        if t in (LGLSXP, INTSXP):
            n = self._length()
            vals = [None if v == NA_INTEGER else v for v in self.s.ints(n)]
            if t == LGLSXP:
                vals = [None if v is None else bool(v) for v in vals]
            obj = RVector(t, vals)
        elif t == REALSXP:
            n = self._length()
            obj = RVector(t, _decode_doubles(self.s.raw_doubles(n), self.s))
        elif t == CPLXSXP:
            n = self._length()
            d = _decode_doubles(self.s.raw_doubles(2 * n), self.s)
            obj = RVector(t, [None if (d[2 * i] is None or d[2 * i + 1] is None)
                              else complex(d[2 * i], d[2 * i + 1]) for i in range(n)])
        elif t == STRSXP:
            n = self._length()
            obj = RVector(t, [self._item() for _ in range(n)])
        elif t in (VECSXP, EXPRSXP):
            n = self._length()
            obj = RVector(t, [self._item() for _ in range(n)])
        elif t == RAWSXP:
            n = self._length()
            obj = RVector(t, self.s.rawbytes(n))
        elif t == S4SXP:
            obj = RVector(t, [])
        elif t in (SPECIALSXP, BUILTINSXP):
            n = self.s.int()
            obj = Special(("special:" if t == SPECIALSXP else "builtin:")
                          + self.s.string(n).decode("ascii", "replace"))
            return obj
        elif t == EXTPTRSXP:
            obj = RVector(t, [])
            self.refs.append(obj)
            obj.append(self._item())  # protected value
            obj.append(self._item())  # tag
        elif t == WEAKREFSXP:
            obj = RVector(t, [])
            self.refs.append(obj)
        elif t == BCODESXP:
            reps = [None] * self.s.int()
            obj = self._bytecode(reps)
        elif t in (CLASSREFSXP, GENERICREFSXP, ATTRLISTSXP, ATTRLANGSXP, BCREPDEF, BCREPREF):
            raise RDataError(f"stream type {t} (class refs / byte code) is not supported")
        else:
            raise RDataError(f"unknown SEXP type {t} (flags 0x{flags:x})")
        obj.attributes = self._attributes(has_attr)
        return obj

    def _pairlist(self, t: int, flags: int):
        """LISTSXP-like cells: [attr] [tag] car cdr. Walk the cdr chain
        iteratively so long pairlists do not exhaust the Python stack."""
        rtype = t
        attributes = {}
        items = []
        first = True
        while True:
            has_attr = bool(flags & (1 << 9))
            has_tag = bool(flags & (1 << 10))
            attr = self._item() if has_attr else None
            if first:
                attributes = _pairlist_to_dict(attr)
            tag = self._item() if has_tag else None
            items.append((tag, self._item()))
            first = False
            flags = self.s.int()
            nt = flags & 0xFF
            if t in (LISTSXP, LANGSXP, DOTSXP) and nt in (LISTSXP, DOTSXP):
                t = nt
                continue
            cdr = self._item(flags)
            if cdr is not None:  # not a proper list (closures, promises)
                items.append(("<cdr>", cdr))
            return Pairlist(rtype, items, attributes)

    # Byte code (compiled closures): code vector + constant pool, where
    # calls inside the pool use their own sharing scheme (BCREPDEF/BCREPREF).
    def _bytecode(self, reps: list) -> "ByteCode":
        code = self._item()
        n = self.s.int()
        consts = []
        for _ in range(n):
            t = self.s.int()
            if t == BCODESXP:
                consts.append(self._bytecode(reps))
            elif t in (LANGSXP, LISTSXP, BCREPDEF, BCREPREF, ATTRLANGSXP, ATTRLISTSXP):
                consts.append(self._bc_lang(t, reps))
            else:
                consts.append(self._item())
        return ByteCode(code, consts)

    def _bc_lang(self, t: int, reps: list):
        if t == BCREPREF:
            i = self.s.int()
            if not 0 <= i < len(reps):
                raise RDataError(f"bad byte-code reference {i}")
            return reps[i]
        if t not in (BCREPDEF, LANGSXP, LISTSXP, ATTRLANGSXP, ATTRLISTSXP):
            return self._item()  # t was a padding word before a plain item
        pos = -1
        if t == BCREPDEF:
            pos = self.s.int()
            t = self.s.int()
        has_attr = t in (ATTRLANGSXP, ATTRLISTSXP)
        t = {ATTRLANGSXP: LANGSXP, ATTRLISTSXP: LISTSXP}.get(t, t)
        cell = Pairlist(t, [])
        if pos >= 0:
            if pos >= len(reps):
                raise RDataError(f"bad byte-code definition {pos}")
            reps[pos] = cell
        if has_attr:
            cell.attributes = _pairlist_to_dict(self._item())
        tag = self._item()
        car = self._bc_lang(self.s.int(), reps)
        cdr = self._bc_lang(self.s.int(), reps)
        cell.items.append((tag, car))
        if isinstance(cdr, Pairlist) and cdr.rtype == LISTSXP and cdr is not cell:
            cell.items.extend(cdr.items)
        elif cdr is not None:
            cell.items.append(("<cdr>", cdr))
        return cell

    def _altrep(self, info, state, attributes):
        cls = info.items[0][1] if isinstance(info, Pairlist) and info.items else None
        cls = str(cls)
        if cls == "compact_intseq":
            n, n1, inc = state
            obj = RVector(INTSXP, [int(n1 + inc * i) for i in range(int(n))])
        elif cls == "compact_realseq":
            n, n1, inc = state
            obj = RVector(REALSXP, [n1 + inc * i for i in range(int(n))])
        elif cls in ("wrap_integer", "wrap_real", "wrap_logical", "wrap_string",
                     "wrap_complex", "wrap_raw", "wrap_list"):
            inner = state[0]
            obj = RVector(inner.rtype, list(inner))
        elif cls == "deferred_string":
            arg = state.items[0][1] if isinstance(state, Pairlist) else state
            if getattr(arg, "rtype", None) == STRSXP:
                obj = RVector(STRSXP, list(arg))
            else:
                obj = RVector(STRSXP, [_deparse_number(v, arg.rtype) for v in arg])
        else:
            raise RDataError(f"unsupported ALTREP class {cls!r}")
        obj.attributes = attributes
        return obj


def _deparse_number(v, rtype):
    if v is None:
        return None
    if rtype == INTSXP:
        return str(v)
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _decode_doubles(raw: bytes, stream) -> list:
    n = len(raw) // 8
    vals = list(struct.unpack(f">{n}d", raw)) if isinstance(stream, _AsciiInput) or \
        getattr(stream, "_e", ">") == ">" else list(struct.unpack(f"<{n}d", raw))
    out = []
    for v in vals:
        if v != v:  # NaN: NA_real_ or plain NaN
            bits = struct.pack(">d", v)
            out.append(None if is_na_real_bits(bits) else math.nan)
        else:
            out.append(v)
    return out


def _pairlist_to_dict(pl) -> dict:
    if pl is None:
        return {}
    if isinstance(pl, Pairlist):
        return {str(tag): val for tag, val in pl.items if tag != "<cdr>"}
    raise RDataError(f"attributes are not a pairlist: {type(pl).__name__}")


def _strip_save_header(data: bytes) -> bytes:
    # save() files start with 'RDX2\n' / 'RDA3\n' etc. before the stream.
    if len(data) >= 5 and data[:3] in (b"RDX", b"RDA", b"RDB") and data[4:5] == b"\n":
        return data[5:]
    return data


# --------------------------------------------------------------------------
# Public helpers


def unserialize(data: bytes, persistent_hook=None):
    """Decode one serialized R object from bytes (uncompressed)."""
    return Unserializer(data, persistent_hook).read()


def decompress_file_bytes(data: bytes) -> bytes:
    """Undo the whole-file compression R's connections may apply."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def read_rds(path: str, persistent_hook=None):
    """Read an .rds file (saveRDS output), compressed or not."""
    with open(path, "rb") as f:
        return unserialize(decompress_file_bytes(f.read()), persistent_hook)


def read_rda(path: str) -> dict:
    """Read an .rda/.RData file (save() output) into a {name: value} dict."""
    with open(path, "rb") as f:
        pl = unserialize(decompress_file_bytes(f.read()))
    return _pairlist_to_dict(pl)


def decompress_lazyload_chunk(chunk: bytes, compressed=1) -> bytes:
    """Decode one lazy-load DB chunk: 4-byte BE length + compressed bytes.

    `compressed` is the index's 'compressed' entry: TRUE/1 means plain zlib
    after the length; 2 and 3 mean a type byte follows the length
    ('Z' zlib, '2' bzip2, 'X' xz, '0' stored).
    """
    if len(chunk) < 4:
        raise RDataError("lazy-load chunk shorter than its header")
    (n,) = struct.unpack(">I", chunk[:4])
    if compressed in (None, False, 0):
        out = chunk[4:]
    elif compressed in (True, 1):
        out = zlib.decompress(chunk[4:])
    else:
        kind, body = chunk[4:5], chunk[5:]
        if kind == b"Z":
            out = zlib.decompress(body)
        elif kind == b"2":
            out = bz2.decompress(body)
        elif kind == b"X":
            out = lzma.decompress(body, format=lzma.FORMAT_XZ)
        elif kind == b"0":
            out = body
        else:
            raise RDataError(f"unknown lazy-load compression type {kind!r}")
    if len(out) != n:
        raise RDataError(f"lazy-load chunk length mismatch: header {n}, got {len(out)}")
    return out


def names(obj) -> list:
    attrs = getattr(obj, "attributes", {}) or {}
    nm = attrs.get("names")
    return list(nm) if nm is not None else []


def r_class(obj) -> list:
    attrs = getattr(obj, "attributes", {}) or {}
    cl = attrs.get("class")
    return list(cl) if cl is not None else []


def factor_labels(vec) -> list:
    """The labels of a factor's codes (NA stays None)."""
    levels = list(vec.attributes.get("levels") or [])
    return [None if c is None else levels[c - 1] for c in vec]


def dataframe_columns(obj) -> dict:
    """{column name: list of values} for a data.frame; factors decoded."""
    if "data.frame" not in r_class(obj):
        raise RDataError("not a data.frame")
    out = {}
    for name, col in zip(names(obj), obj):
        out[name] = factor_labels(col) if "factor" in r_class(col) else list(col)
    return out


def dataframe_nrow(obj) -> int:
    rn = obj.attributes.get("row.names")
    if rn is not None and len(rn) == 2 and rn[0] is None:  # compact c(NA, -n)
        return abs(rn[1])
    return len(rn) if rn is not None else (len(obj[0]) if len(obj) else 0)


class LazyLoadDB:
    """A lazy-load database: `<base>.rdx` (index) + `<base>.rdb` (chunks)."""

    def __init__(self, base: str):
        if base.endswith((".rdx", ".rdb")):
            base = base[:-4]
        self.base = base
        index = read_rds(base + ".rdx")
        if not isinstance(index, RVector) or index.rtype != VECSXP:
            raise RDataError("lazy-load index is not a list")
        entries = dict(zip(names(index), index))
        self.variables = _offsets(entries.get("variables"))
        self.references = _offsets(entries.get("references"))
        comp = entries.get("compressed")
        if isinstance(comp, RVector) and comp:
            comp = comp[0]
        if isinstance(comp, bool):
            comp = int(comp)
        self.compressed = 1 if comp is None else comp
        with open(base + ".rdb", "rb") as f:
            self._rdb = f.read()
        self._ref_cache: dict = {}

    def keys(self) -> list:
        return list(self.variables)

    def _chunk(self, off_len) -> bytes:
        off, length = off_len
        if off < 0 or off + length > len(self._rdb):
            raise RDataError("lazy-load chunk outside the .rdb file")
        return decompress_lazyload_chunk(self._rdb[off:off + length], self.compressed)

    def _hook(self, key):
        k = key[0] if key else None
        if k not in self.references:
            return Persistent(key)
        if k not in self._ref_cache:
            self._ref_cache[k] = None  # guard against cycles
            data = self._chunk(self.references[k])
            self._ref_cache[k] = unserialize(data, self._hook)
        return self._ref_cache[k]

    def get(self, name: str):
        if name not in self.variables:
            raise KeyError(name)
        return unserialize(self._chunk(self.variables[name]), self._hook)

    def __getitem__(self, name: str):
        return self.get(name)


def _offsets(lst) -> dict:
    if lst is None:
        return {}
    out = {}
    for k, v in zip(names(lst), lst):
        if len(v) != 2:
            raise RDataError(f"bad lazy-load index entry for {k!r}")
        out[k] = (int(v[0]), int(v[1]))
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Inspect R serialized files.")
    ap.add_argument("path", help=".rds/.rda file, or a lazy-load DB base (.rdx/.rdb)")
    ap.add_argument("--get", help="name of a lazy-load variable to print")
    a = ap.parse_args(argv)
    if a.path.endswith((".rdx", ".rdb")):
        db = LazyLoadDB(a.path)
        if a.get:
            print(repr(db.get(a.get)))
        else:
            for k, (off, ln) in db.variables.items():
                print(f"{k}\toffset={off}\tlength={ln}")
    elif a.path.lower().endswith((".rda", ".rdata")):
        for k, v in read_rda(a.path).items():
            print(k, repr(v)[:200])
    else:
        print(repr(read_rds(a.path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
