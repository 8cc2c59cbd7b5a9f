#!/usr/bin/env python3
"""Segments a NIfTI image with CascadeSeg's C API from Python (ctypes, standard library only).

    python3 Examples/python/segment.py MODEL.cseg INPUT.nii.gz OUTPUT.nii.gz [--lib .build/debug/libcseg.so]

Two ways through the API: the image read here (a small NIfTI-1 reader) and segmented in memory
with cseg_segment_volume, and the file segmented by cseg_segment_file, which writes OUTPUT with
the input's geometry. The script checks that both give the same labels and prints their volumes.
"""
import argparse
import ctypes
import gzip
import os
import struct
import sys
from array import array


def load_library(path):
    lib = ctypes.CDLL(path)
    c_int, c_char_p, c_void_p, c_size_t = ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t
    sigs = {
        "cseg_version": ([], c_char_p),
        "cseg_last_error": ([], c_char_p),
        "cseg_device_count": ([ctypes.POINTER(c_int)], c_int),
        "cseg_device_name": ([c_int, c_char_p, c_size_t, ctypes.POINTER(c_size_t)], c_int),
        "cseg_model_load": ([c_char_p, ctypes.POINTER(c_void_p)], c_int),
        "cseg_model_free": ([c_void_p], None),
        "cseg_options_create": ([ctypes.POINTER(c_void_p)], c_int),
        "cseg_options_free": ([c_void_p], None),
        "cseg_options_set_memory_budget": ([c_void_p, ctypes.c_int64], c_int),
        "cseg_segment_volume": ([c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int64),
                                 ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double), c_void_p,
                                 ctypes.POINTER(ctypes.c_int32), c_size_t], c_int),
        "cseg_segment_file": ([c_void_p, c_char_p, c_char_p, c_void_p], c_int),
        "cseg_last_report": ([c_char_p, c_size_t, ctypes.POINTER(c_size_t)], c_int),
    }
    for name, (args, result) in sigs.items():
        f = getattr(lib, name)
        f.argtypes, f.restype = args, result
    return lib


class CsegError(RuntimeError):
    pass


def check(lib, status, what):
    if status != 0:
        raise CsegError(f"{what} failed (status {status}): {lib.cseg_last_error().decode()}")


def read_nifti1(path):
    """Voxels (floats, x fastest), dims, spacing and the sform (or None) of a NIfTI-1 file."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if struct.unpack_from("<i", data, 0)[0] != 348:
        raise CsegError(f"{path}: only little-endian NIfTI-1 is read by this example")
    dim = struct.unpack_from("<8h", data, 40)
    datatype = struct.unpack_from("<h", data, 70)[0]
    pixdim = struct.unpack_from("<8f", data, 76)
    offset, slope, inter = struct.unpack_from("<3f", data, 108)
    sform_code = struct.unpack_from("<h", data, 254)[0]
    codes = {2: "B", 4: "h", 8: "i", 16: "f", 64: "d", 256: "b", 512: "H", 768: "I"}
    if datatype not in codes:
        raise CsegError(f"{path}: datatype {datatype} is not read by this example")
    dims = [max(1, d) for d in dim[1:4]]
    count = dims[0] * dims[1] * dims[2]
    values = array(codes[datatype])
    start = int(offset)
    values.frombytes(data[start:start + count * values.itemsize])
    if sys.byteorder != "little":
        values.byteswap()
    if slope not in (0.0, 1.0) or inter != 0.0:
        values = array("f", (v * (slope or 1.0) + inter for v in values))
    affine = None
    if sform_code > 0:
        rows = [struct.unpack_from("<4f", data, 280 + 16 * r) for r in range(3)]
        affine = [x for row in rows for x in row] + [0.0, 0.0, 0.0, 1.0]
    return array("f", values), dims, pixdim[1:4], affine


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--lib", default=os.path.join(here, "..", "..", ".build", "debug", "libcseg.so"))
    parser.add_argument("--memory-budget", type=int, default=0)
    a = parser.parse_args()

    lib = load_library(a.lib)
    print(f"CascadeSeg {lib.cseg_version().decode()}")
    model, options = ctypes.c_void_p(), ctypes.c_void_p()
    check(lib, lib.cseg_model_load(a.model.encode(), ctypes.byref(model)), "loading the model")
    try:
        check(lib, lib.cseg_options_create(ctypes.byref(options)), "creating options")
        check(lib, lib.cseg_options_set_memory_budget(options, a.memory_budget), "setting the budget")

        # In memory: voxels in, int32 labels out into our own buffer.
        voxels, dims, spacing, affine = read_nifti1(a.input)
        count = dims[0] * dims[1] * dims[2]
        labels = (ctypes.c_int32 * count)()
        c_voxels = (ctypes.c_float * count).from_buffer(voxels)
        c_affine = (ctypes.c_double * 16)(*affine) if affine else None
        check(lib, lib.cseg_segment_volume(model, c_voxels, (ctypes.c_int64 * 3)(*dims), (ctypes.c_double * 3)(*spacing),
                                           c_affine, options, labels, count), "segmenting in memory")
        length = ctypes.c_size_t()
        check(lib, lib.cseg_last_report(None, 0, ctypes.byref(length)), "asking the report's length")
        report = ctypes.create_string_buffer(length.value + 1)
        check(lib, lib.cseg_last_report(report, len(report), ctypes.byref(length)), "reading the report")

        # File to file: the label map written with the input's geometry.
        check(lib, lib.cseg_segment_file(model, a.input.encode(), a.output.encode(), options), "segmenting the file")
        written, _, _, _ = read_nifti1(a.output)
        if list(labels) != [int(v) for v in written]:
            raise CsegError("the in-memory labels differ from the written label map")

        volume = spacing[0] * spacing[1] * spacing[2]
        counts = {}
        for v in labels:
            if v:
                counts[v] = counts.get(v, 0) + 1
        for label in sorted(counts):
            print(f"  label {label:3d}: {counts[label] * volume:10.1f} mm3")
        print(f"wrote {a.output}; in-memory and file labels agree; report {length.value} bytes of JSON")
    finally:
        lib.cseg_options_free(options)
        lib.cseg_model_free(model)


if __name__ == "__main__":
    try:
        main()
    except CsegError as e:
        print(f"segment.py: {e}", file=sys.stderr)
        sys.exit(1)
