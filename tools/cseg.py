"""Reader and writer for `.cseg` model files, version 1 (docs/FORMAT.md).

This is an independent implementation of the format document, written from the document alone
(not from the Swift reader), so that the two can check each other.

    write_cseg(path, metadata, graphs, tensors, dtype="float32", level=9)
    metadata, graphs, tensors = read_cseg(path)

Tensors are numpy arrays; `read_cseg` returns them in their stored dtype (float32 or float16).
Every check of the "reader checks" paragraphs raises `CsegError` with its own message.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import numpy as np
import zstandard

MAGIC = b"\x89CSEG\r\n\x1a"
VERSION = 1
HEADER_LENGTH = 64
MAX_MANIFEST = 64 * 1024 * 1024
MAX_TENSOR_RAW = 4 * 1024 ** 3
MAX_TOTAL_RAW = 16 * 1024 ** 3
ALIGN = 64
DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
ENCODINGS = ("raw", "zstd-shuffle")

# Header: magic, version, header length, manifest offset/length, data offset/length,
# manifest CRC, header CRC, reserved.
_HEADER = struct.Struct("<8sIIQQQQIIQ")
assert _HEADER.size == HEADER_LENGTH


class CsegError(ValueError):
    """A `.cseg` file (or the arguments for writing one) violates docs/FORMAT.md."""


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


# ---------------------------------------------------------------------------------------------
# zstd-shuffle

def shuffle(raw: bytes, itemsize: int) -> bytes:
    """Byte planes: planes[j*n + i] = raw[i*s + j]."""
    a = np.frombuffer(raw, dtype=np.uint8)
    if a.size % itemsize:
        raise CsegError(f"raw size {a.size} is not a multiple of the element size {itemsize}")
    return a.reshape(-1, itemsize).T.tobytes()


def unshuffle(planes: bytes, itemsize: int) -> bytes:
    a = np.frombuffer(planes, dtype=np.uint8)
    if a.size % itemsize:
        raise CsegError(f"size {a.size} is not a multiple of the element size {itemsize}")
    return a.reshape(itemsize, -1).T.tobytes()


def encode_zstd_shuffle(raw: bytes, itemsize: int, level: int = 9) -> bytes:
    cctx = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cctx.compress(shuffle(raw, itemsize))


def decode_zstd_shuffle(stored: bytes, raw_size: int, itemsize: int, name: str = "?") -> bytes:
    try:
        params = zstandard.get_frame_parameters(stored)
    except zstandard.ZstdError as e:
        raise CsegError(f"tensor {name!r}: not a zstd frame ({e})") from None
    if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
        raise CsegError(f"tensor {name!r}: zstd frame header does not record the content size")
    if params.content_size != raw_size:
        raise CsegError(f"tensor {name!r}: zstd frame declares {params.content_size} bytes, "
                        f"raw size is {raw_size}")
    dobj = zstandard.ZstdDecompressor().decompressobj()
    try:
        planes = dobj.decompress(stored)
    except zstandard.ZstdError as e:
        raise CsegError(f"tensor {name!r}: zstd decompression failed ({e})") from None
    if not dobj.eof:
        raise CsegError(f"tensor {name!r}: zstd frame is truncated")
    if dobj.unused_data:
        raise CsegError(f"tensor {name!r}: {len(dobj.unused_data)} bytes after the zstd frame "
                        "(must be exactly one frame)")
    if len(planes) != raw_size:
        raise CsegError(f"tensor {name!r}: decompressed {len(planes)} bytes, expected {raw_size}")
    return unshuffle(planes, itemsize)


# ---------------------------------------------------------------------------------------------
# writer

def write_cseg(path, metadata: dict, graphs: list[dict], tensors: dict[str, np.ndarray],
               dtype: str = "float32", level: int = 9, encoding: str = "zstd-shuffle") -> dict:
    """Writes a `.cseg` file. All tensors are stored as `dtype` (float32 or float16) with
    `encoding` (zstd-shuffle or raw), packed back to back in the order of `tensors`.
    Returns the manifest that was written."""
    if dtype not in DTYPES:
        raise CsegError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    if encoding not in ENCODINGS:
        raise CsegError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
    np_dtype = DTYPES[dtype]
    table = []
    chunks = []
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise CsegError(f"tensor name must be a non-empty string, got {name!r}")
        arr = np.asarray(value)
        if arr.ndim > 8:
            raise CsegError(f"tensor {name!r} has {arr.ndim} dimensions (at most 8)")
        if not np.all(np.isfinite(arr.astype(np.float64))):
            raise CsegError(f"tensor {name!r} holds non-finite values")
        arr = np.array(arr, dtype=np_dtype, order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
        if dtype == "float16" and not np.all(np.isfinite(arr)):
            raise CsegError(f"tensor {name!r} overflows float16")
        raw = arr.tobytes()
        if encoding == "raw":
            stored = raw
        else:
            stored = encode_zstd_shuffle(raw, np_dtype.itemsize, level)
        table.append({
            "name": name,
            "dtype": dtype,
            "shape": [int(d) for d in arr.shape],
            "offset": offset,
            "length": len(stored),
            "encoding": encoding,
            "crc32": crc32(stored),
        })
        chunks.append(stored)
        offset += len(stored)
    data = b"".join(chunks)

    manifest = {"metadata": metadata, "graphs": graphs, "tensors": table}
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":"),
                                ensure_ascii=False, allow_nan=False).encode("utf-8")
    if not 1 <= len(manifest_bytes) <= MAX_MANIFEST:
        raise CsegError(f"manifest is {len(manifest_bytes)} bytes (1 ..= {MAX_MANIFEST})")
    manifest_offset = HEADER_LENGTH
    data_offset = _align(manifest_offset + len(manifest_bytes))

    head = struct.pack("<8sIIQQQQI", MAGIC, VERSION, HEADER_LENGTH, manifest_offset,
                       len(manifest_bytes), data_offset, len(data), crc32(manifest_bytes))
    header = head + struct.pack("<IQ", crc32(head), 0)
    assert len(header) == HEADER_LENGTH

    padding = b"\0" * (data_offset - manifest_offset - len(manifest_bytes))
    with open(path, "wb") as f:
        f.write(header + manifest_bytes + padding + data)
    return manifest


# ---------------------------------------------------------------------------------------------
# reader

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_header(blob: bytes) -> dict:
    if len(blob) < HEADER_LENGTH:
        raise CsegError(f"file is {len(blob)} bytes, shorter than the {HEADER_LENGTH}-byte header")
    (magic, version, header_length, manifest_offset, manifest_length, data_offset, data_length,
     manifest_crc, header_crc, _reserved) = _HEADER.unpack_from(blob, 0)
    if magic != MAGIC:
        raise CsegError(f"bad magic {magic!r}: not a .cseg file (or damaged by a text-mode transfer)")
    if version != VERSION:
        raise CsegError(f"format version {version} is not supported (this reader knows version "
                        f"{VERSION})")
    if header_length != HEADER_LENGTH:
        raise CsegError(f"header length {header_length}, expected {HEADER_LENGTH}")
    if crc32(blob[:52]) != header_crc:
        raise CsegError(f"header CRC mismatch: stored {header_crc:#010x}, "
                        f"computed {crc32(blob[:52]):#010x}")
    size = len(blob)
    if manifest_offset < HEADER_LENGTH:
        raise CsegError(f"manifest offset {manifest_offset} lies inside the header")
    if not 1 <= manifest_length <= MAX_MANIFEST:
        raise CsegError(f"manifest length {manifest_length} outside 1 ..= {MAX_MANIFEST}")
    if manifest_offset + manifest_length > size:
        raise CsegError(f"manifest range {manifest_offset} ..< {manifest_offset + manifest_length} "
                        f"runs past the end of the {size}-byte file")
    if data_offset < manifest_offset + manifest_length:
        raise CsegError(f"data offset {data_offset} overlaps the manifest "
                        f"({manifest_offset} ..< {manifest_offset + manifest_length})")
    if data_offset + data_length > size:
        raise CsegError(f"data range {data_offset} ..< {data_offset + data_length} runs past the "
                        f"end of the {size}-byte file (truncated?)")
    if size != data_offset + data_length:
        raise CsegError(f"file is {size} bytes but should end at data_offset + data_length = "
                        f"{data_offset + data_length}")
    return {"version": version, "manifest_offset": manifest_offset,
            "manifest_length": manifest_length, "data_offset": data_offset,
            "data_length": data_length, "manifest_crc": manifest_crc}


def read_manifest(blob: bytes) -> tuple[dict, dict]:
    h = parse_header(blob)
    mbytes = blob[h["manifest_offset"]:h["manifest_offset"] + h["manifest_length"]]
    if crc32(mbytes) != h["manifest_crc"]:
        raise CsegError(f"manifest CRC mismatch: stored {h['manifest_crc']:#010x}, "
                        f"computed {crc32(mbytes):#010x}")
    try:
        manifest = json.loads(mbytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CsegError(f"manifest is not valid UTF-8 JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise CsegError("manifest is not a JSON object")
    for key, kind in (("metadata", dict), ("graphs", list), ("tensors", list)):
        if not isinstance(manifest.get(key), kind):
            raise CsegError(f"manifest key {key!r} missing or not a JSON {kind.__name__}")
    return h, manifest


def read_cseg(path) -> tuple[dict, list, dict[str, np.ndarray]]:
    """Reads and fully validates a `.cseg` file. Returns (metadata, graphs, tensors)."""
    with open(path, "rb") as f:
        blob = f.read()
    h, manifest = read_manifest(blob)
    data_offset, data_length = h["data_offset"], h["data_length"]

    # Validate the whole tensor table before decoding anything.
    seen = set()
    entries = []
    total_raw = 0
    for i, t in enumerate(manifest["tensors"]):
        if not isinstance(t, dict):
            raise CsegError(f"tensor entry {i} is not an object")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise CsegError(f"tensor entry {i} has no name")
        if name in seen:
            raise CsegError(f"duplicate tensor name {name!r}")
        seen.add(name)
        dtype, encoding = t.get("dtype"), t.get("encoding")
        if dtype not in DTYPES:
            raise CsegError(f"tensor {name!r}: unknown dtype {dtype!r}")
        if encoding not in ENCODINGS:
            raise CsegError(f"tensor {name!r}: unknown encoding {encoding!r}")
        shape = t.get("shape")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(_is_int(d) and d >= 0 for d in shape)):
            raise CsegError(f"tensor {name!r}: bad shape {shape!r}")
        count = 1
        for d in shape:
            count *= d  # Python ints do not overflow; the size limit below is the check
        raw_size = count * DTYPES[dtype].itemsize
        if raw_size > MAX_TENSOR_RAW:
            raise CsegError(f"tensor {name!r}: raw size {raw_size} exceeds 4 GiB")
        total_raw += raw_size
        if total_raw > MAX_TOTAL_RAW:
            raise CsegError("tensors add up to more than 16 GiB")
        offset, length, crc = t.get("offset"), t.get("length"), t.get("crc32")
        if not (_is_int(offset) and _is_int(length) and _is_int(crc)) or offset < 0 or length < 0:
            raise CsegError(f"tensor {name!r}: offset, length and crc32 must be non-negative "
                            "integers")
        if offset + length > data_length:
            raise CsegError(f"tensor {name!r}: stored range {offset} ..< {offset + length} lies "
                            f"outside the {data_length}-byte data section")
        if encoding == "raw" and length != raw_size:
            raise CsegError(f"tensor {name!r}: raw encoding with length {length}, raw size "
                            f"{raw_size}")
        entries.append((name, dtype, shape, offset, length, encoding, crc, raw_size))

    spans = sorted((o, o + n, name) for name, _, _, o, n, _, _, _ in entries if n > 0)
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise CsegError(f"tensors {an!r} and {bn!r} overlap")

    tensors: dict[str, np.ndarray] = {}
    for name, dtype, shape, offset, length, encoding, crc, raw_size in entries:
        stored = blob[data_offset + offset:data_offset + offset + length]
        if crc32(stored) != crc:
            raise CsegError(f"tensor {name!r}: CRC mismatch (stored {crc:#010x}, computed "
                            f"{crc32(stored):#010x})")
        np_dtype = DTYPES[dtype]
        if encoding == "raw":
            raw = stored
        else:
            raw = decode_zstd_shuffle(stored, raw_size, np_dtype.itemsize, name)
        tensors[name] = np.frombuffer(raw, dtype=np_dtype).reshape(tuple(shape)).copy()
    return manifest["metadata"], manifest["graphs"], tensors


if __name__ == "__main__":  # `python tools/cseg.py model.cseg` prints a summary
    import sys
    for p in sys.argv[1:]:
        meta, graphs, tensors = read_cseg(p)
        nparams = sum(int(a.size) for a in tensors.values())
        print(f"{p}: {meta.get('name')!r}, {len(graphs)} graph(s), {len(tensors)} tensors, "
              f"{nparams} parameters")
        for g in graphs:
            ops: dict[str, int] = {}
            for n in g.get("nodes", []):
                ops[n["op"]] = ops.get(n["op"], 0) + 1
            print(f"  graph {g.get('name')!r}: in {g.get('inputs')}, out {g.get('outputs')}, "
                  f"size_multiple {g.get('size_multiple')}, ops {ops}")
