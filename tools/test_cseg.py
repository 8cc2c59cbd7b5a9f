"""Self-test of tools/cseg.py: round trips and every reader check of docs/FORMAT.md.

    tools/.venv/bin/python -m unittest tools/test_cseg.py      (or: python tools/test_cseg.py)
"""

import json
import os
import struct
import sys
import tempfile
import unittest
import zlib
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cseg  # noqa: E402
from cseg import CsegError, read_cseg, write_cseg  # noqa: E402

META = {"name": "t", "description": "", "license": "CC0-1.0",
        "labels": [{"id": 0, "name": "background"}, {"id": 1, "name": "a"}],
        "input": {"channels": 1, "normalization": {"kind": "none"}},
        "stages": [{"graph": "stage1", "spacing_mm": [1, 1, 1]}]}
GRAPH = {"name": "stage1", "inputs": [{"name": "image", "shape": [1, 1, "D", "H", "W"]}],
         "outputs": [{"name": "y", "shape": [1, 2, "D", "H", "W"]}], "size_multiple": [1, 1, 1],
         "nodes": [{"name": "c", "op": "Conv", "inputs": ["image", "w", "b"], "outputs": ["y"],
                    "attributes": {"pads": [1, 1, 1, 1, 1, 1]}}]}


def tensors():
    rs = np.random.RandomState(0)
    return {"w": rs.standard_normal((2, 1, 3, 3, 3)).astype(np.float32),
            "b": rs.standard_normal(2).astype(np.float32),
            "scalar": np.array(3.5, dtype=np.float32),
            "empty": np.zeros((0, 4), dtype=np.float32)}


class CsegTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "m.cseg")

    def tearDown(self):
        self.dir.cleanup()

    def write(self, **kw):
        write_cseg(self.path, META, [GRAPH], tensors(), **kw)
        with open(self.path, "rb") as f:
            return bytearray(f.read())

    def put(self, blob):
        with open(self.path, "wb") as f:
            f.write(bytes(blob))

    def expect(self, blob, fragment):
        self.put(blob)
        with self.assertRaises(CsegError) as cm:
            read_cseg(self.path)
        self.assertIn(fragment, str(cm.exception))

    @staticmethod
    def refresh_header_crc(blob):
        struct.pack_into("<I", blob, 52, zlib.crc32(bytes(blob[:52])) & 0xFFFFFFFF)

    def rewrite_manifest(self, blob, edit):
        """Applies `edit` to the manifest JSON and rebuilds a consistent file."""
        mo, ml, do, dl = struct.unpack_from("<QQQQ", blob, 16)
        manifest = json.loads(bytes(blob[mo:mo + ml]))
        edit(manifest)
        mbytes = json.dumps(manifest).encode()
        data = bytes(blob[do:do + dl])
        new_do = (64 + len(mbytes) + 63) // 64 * 64
        out = bytearray(blob[:64]) + mbytes + b"\0" * (new_do - 64 - len(mbytes)) + data
        struct.pack_into("<QQQQI", out, 16, 64, len(mbytes), new_do, len(data),
                         zlib.crc32(mbytes) & 0xFFFFFFFF)
        self.refresh_header_crc(out)
        return out

    # -- round trips ---------------------------------------------------------------------------

    def test_round_trip_float32_and_layout(self):
        blob = self.write()
        self.assertEqual(bytes(blob[:8]), b"\x89CSEG\r\n\x1a")
        version, hlen, mo, ml, do, dl, mcrc, hcrc, res = struct.unpack_from("<IIQQQQIIQ", blob, 8)
        self.assertEqual((version, hlen, mo, res), (1, 64, 64, 0))
        self.assertEqual(do % 64, 0)
        self.assertEqual(len(blob), do + dl)
        self.assertEqual(hcrc, zlib.crc32(bytes(blob[:52])))
        self.assertEqual(mcrc, zlib.crc32(bytes(blob[mo:mo + ml])))
        meta, graphs, ts = read_cseg(self.path)
        self.assertEqual(meta, META)
        self.assertEqual(graphs, [GRAPH])
        for k, v in tensors().items():
            self.assertEqual(ts[k].dtype, np.float32)
            self.assertEqual(ts[k].shape, v.shape)
            np.testing.assert_array_equal(ts[k], v)

    def test_zstd_shuffle_encoding(self):
        blob = self.write()
        mo, ml, do, _ = struct.unpack_from("<QQQQ", blob, 16)
        entry = next(t for t in json.loads(bytes(blob[mo:mo + ml]))["tensors"] if t["name"] == "w")
        stored = bytes(blob[do + entry["offset"]:do + entry["offset"] + entry["length"]])
        self.assertEqual(entry["crc32"], zlib.crc32(stored))
        self.assertEqual(zstandard.get_frame_parameters(stored).content_size, 54 * 4)
        planes = zstandard.ZstdDecompressor().decompress(stored)
        raw = tensors()["w"].tobytes()
        n = 54
        for i in range(n):
            for j in range(4):
                self.assertEqual(planes[j * n + i], raw[i * 4 + j])

    def test_round_trip_float16_and_raw(self):
        write_cseg(self.path, META, [GRAPH], tensors(), dtype="float16", encoding="raw")
        _, _, ts = read_cseg(self.path)
        for k, v in tensors().items():
            self.assertEqual(ts[k].dtype, np.float16)
            np.testing.assert_array_equal(ts[k], v.astype(np.float16))

    # -- reader checks, in the order of FORMAT.md ----------------------------------------------

    def test_short_file(self):
        self.expect(self.write()[:63], "shorter than")

    def test_magic(self):
        blob = self.write()
        blob[4] ^= 0xFF
        self.expect(blob, "magic")
        blob = self.write().replace(b"\r\n", b"\n", 1)  # text-mode transfer
        self.expect(blob, "magic")

    def test_version(self):
        blob = self.write()
        struct.pack_into("<I", blob, 8, 2)
        self.refresh_header_crc(blob)
        self.expect(blob, "version 2")

    def test_header_length(self):
        blob = self.write()
        struct.pack_into("<I", blob, 12, 128)
        self.refresh_header_crc(blob)
        self.expect(blob, "header length")

    def test_header_crc(self):
        blob = self.write()
        blob[40] ^= 1
        self.expect(blob, "header CRC")

    def test_truncated_and_extended(self):
        blob = self.write()
        self.expect(blob[:-1], "past the end")
        self.expect(blob + b"\0", "should end at")

    def test_manifest_overlaps_data(self):
        blob = self.write()
        mo, ml = struct.unpack_from("<QQ", blob, 16)
        struct.pack_into("<Q", blob, 32, mo + ml - 1)
        self.refresh_header_crc(blob)
        self.expect(blob, "overlaps the manifest")

    def test_manifest_crc(self):
        blob = self.write()
        blob[70] ^= 1
        self.expect(blob, "manifest CRC")

    def test_manifest_json(self):
        blob = self.rewrite_manifest(self.write(), lambda m: None)
        mo, ml = struct.unpack_from("<QQ", blob, 16)
        blob[mo] = ord("[")
        struct.pack_into("<I", blob, 48, zlib.crc32(bytes(blob[mo:mo + ml])))
        self.refresh_header_crc(blob)
        self.expect(blob, "JSON")

    def test_tensor_crc(self):
        blob = self.write()
        blob[-1] ^= 1
        self.expect(blob, "CRC mismatch")

    def test_duplicate_name(self):
        def edit(m):
            m["tensors"][1]["name"] = m["tensors"][0]["name"]
        self.expect(self.rewrite_manifest(self.write(), edit), "duplicate")

    def test_unknown_dtype_and_encoding(self):
        self.expect(self.rewrite_manifest(self.write(),
                                          lambda m: m["tensors"][0].update(dtype="int8")),
                    "unknown dtype")
        self.expect(self.rewrite_manifest(self.write(),
                                          lambda m: m["tensors"][0].update(encoding="lz4")),
                    "unknown encoding")

    def test_huge_shape(self):
        self.expect(self.rewrite_manifest(
            self.write(), lambda m: m["tensors"][0].update(shape=[2 ** 40, 2 ** 40])), "4 GiB")

    def test_range_outside_data(self):
        self.expect(self.rewrite_manifest(
            self.write(), lambda m: m["tensors"][0].update(offset=10 ** 6)), "outside")

    def test_overlap(self):
        def edit(m):
            m["tensors"][1]["offset"] = m["tensors"][0]["offset"] + 1
        self.expect(self.rewrite_manifest(self.write(), edit), "overlap")

    def test_raw_length(self):
        write_cseg(self.path, META, [GRAPH], tensors(), encoding="raw")
        with open(self.path, "rb") as f:
            blob = bytearray(f.read())
        self.expect(self.rewrite_manifest(blob, lambda m: m["tensors"][0].update(length=4)),
                    "raw encoding with length")

    def test_content_size_mismatch(self):
        def edit(m):
            t = next(t for t in m["tensors"] if t["name"] == "w")
            t["shape"] = [2, 1, 3, 3, 2]
        self.expect(self.rewrite_manifest(self.write(), edit), "declares")


if __name__ == "__main__":
    unittest.main()
