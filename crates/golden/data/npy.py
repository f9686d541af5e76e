"""Writes the numpy fixtures in npy/: .npy and .npz files as numpy itself writes them.

Run from this folder with numpy 2.4: `python npy.py`. The tests in
`crates/nn/tests/suite/npy.rs` read these files and compare them with values they compute
themselves: every array holds `pattern(n)`, the numbers 0..n mapped by
`(i * 37 % 101 - 50) / 8` (exact in f32 and f64, negative, zero and fractional values), or for
integer and bool dtypes the values listed below; so a test needs no second copy of the data.
"""
import numpy as np


def pattern(shape, dtype):
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.int64)
    return ((i * 37 % 101 - 50) / 8).astype(dtype).reshape(shape)


def save(name, a):
    np.save(f"npy/{name}.npy", a)


# Floats, C and Fortran order.
save("f32_c_2x3", pattern((2, 3), np.float32))
save("f64_c_4x5x6", pattern((4, 5, 6), np.float64))
save("f32_f_3x4", np.asfortranarray(pattern((3, 4), np.float32)))
save("f64_f_2x3x4", np.asfortranarray(pattern((2, 3, 4), np.float64)))
# Big-endian floats.
save("f32_be_2x3", pattern((2, 3), np.dtype(">f4")))
save("f64_be_f_3x2", np.asfortranarray(pattern((3, 2), np.dtype(">f8"))))
# 0-d and empty arrays.
save("f64_0d", np.array(3.5, dtype=np.float64))
save("f32_empty_0x3", np.zeros((0, 3), dtype=np.float32))
save("f32_empty_1d", np.zeros((0,), dtype=np.float32))
# Integers and bool: labels, pixels, masks.
save("i64_labels", np.array([3, 0, 9, 1, 1, 7], dtype=np.int64))
save("i32_2x3", np.array([[-5, 0, 2147483647], [-2147483648, 1, 16777216]], dtype=np.int32))
save("u8_f_2x3", np.asfortranarray(np.array([[0, 1, 255], [128, 7, 64]], dtype=np.uint8)))
save("bool_2x2", np.array([[True, False], [False, True]]))
save("i16_be", np.array([-300, 300, 0], dtype=np.dtype(">i2")))
save("u64_big", np.array([1, 2**53 + 1], dtype=np.uint64))
# Not supported: complex and object arrays.
save("c64", np.array([1 + 2j], dtype=np.complex64))
save("object", np.array([1, "a", None], dtype=object))

# Archives: several members in order, stored and deflated.
x = pattern((4, 3), np.float32)
y = np.array([2, 0, 1, 2], dtype=np.uint8)
w = np.asfortranarray(pattern((3, 2), np.float64))
np.savez("npy/several.npz", x=x, y=y, w=w)
np.savez_compressed("npy/compressed.npz", x=x, y=y, w=w, empty=np.zeros((0,), np.float64))
