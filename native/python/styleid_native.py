"""ctypes binding of libstyleid_edge's C API, for the parity tests and the benchmark.

    lib = NativeLib(find_library())
    with lib.create(pack_dir, seed=0) as rt:
        rt.anonymize(frame)              # in place, BGR uint8
        faces = rt.faces()               # list of dicts

Only numpy and the standard library; the C header (native/include/styleid_edge.h) is the reference.
"""

from __future__ import annotations

import ctypes as C
import os
from pathlib import Path
from typing import Self

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

METHODS = {"latent": 0, "pixelate": 1}
FALLBACKS = {0: None, 1: "too_small", 2: "no_landmarks", 3: "profile", 4: "align_error", 5: "model_error",
             6: "paste_error"}


class NativeError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"[status {status}] {message}")
        self.status = status
        self.message = message


class Options(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("method", C.c_int), ("detector_path", C.c_char_p),
                ("device", C.c_char_p), ("num_threads", C.c_int), ("strength", C.c_float),
                ("truncation", C.c_float), ("seed", C.c_uint64), ("use_groups", C.c_int),
                ("detector_threshold", C.c_float), ("detector_rotations", C.c_int), ("min_face", C.c_int),
                ("max_yaw", C.c_float), ("hold_frames", C.c_int), ("fps", C.c_float), ("batch_size", C.c_int),
                ("weak_threshold", C.c_float), ("engine_dir", C.c_char_p)]


class Face(C.Structure):
    _fields_ = [("track_id", C.c_int64), ("box", C.c_float * 4), ("landmarks", C.c_float * 10),
                ("score", C.c_float), ("held", C.c_int32), ("method", C.c_int32), ("fallback", C.c_int32),
                ("seed", C.c_uint64), ("weak", C.c_int32)]

    def as_dict(self) -> dict:
        return {"track_id": int(self.track_id), "box": np.array(self.box[:], np.float32),
                "landmarks": np.array(self.landmarks[:], np.float32).reshape(5, 2), "score": float(self.score),
                "held": bool(self.held), "method": "latent" if self.method == 0 else "pixelate",
                "fallback": FALLBACKS.get(int(self.fallback), str(self.fallback)), "seed": int(self.seed),
                "weak": bool(self.weak)}


class Info(C.Structure):
    _fields_ = [(n, C.c_int32) for n in ("resolution", "n_latent", "style_dim", "n_styles", "crop_size",
                                         "encoder_size", "n_swapped", "synthetic", "ranks_calibrated")]


def find_library(build_dir: str | os.PathLike | None = None, name: str = "libstyleid_edge.so") -> Path | None:
    """The built library: $STYLEID_EDGE_NATIVE_LIB, else <build_dir or $STYLEID_EDGE_BUILD or ROOT/build>/name."""
    env = os.environ.get("STYLEID_EDGE_NATIVE_LIB")
    if env and Path(env).is_file():
        return Path(env)
    build = Path(build_dir or os.environ.get("STYLEID_EDGE_BUILD") or ROOT / "build")
    p = build / name
    return p if p.is_file() else None


def _u8(a: np.ndarray):
    return a.ctypes.data_as(C.POINTER(C.c_uint8))


def _f32(a: np.ndarray):
    return a.ctypes.data_as(C.POINTER(C.c_float))


class NativeLib:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lib = lib = C.CDLL(str(path))
        lib.styleid_edge_version.restype = C.c_char_p
        lib.styleid_edge_last_error.restype = C.c_char_p
        lib.styleid_edge_options_init.argtypes = [C.POINTER(Options)]
        lib.styleid_edge_create.argtypes = [C.c_char_p, C.POINTER(Options), C.POINTER(C.c_void_p)]
        lib.styleid_edge_destroy.argtypes = [C.c_void_p]
        lib.styleid_edge_anonymize.argtypes = [C.c_void_p, C.POINTER(C.c_uint8), C.c_int, C.c_int, C.c_size_t]
        lib.styleid_edge_anonymize_into.argtypes = [C.c_void_p, C.POINTER(C.c_uint8), C.c_int, C.c_int, C.c_size_t,
                                                    C.POINTER(C.c_uint8), C.c_size_t]
        lib.styleid_edge_get_faces.argtypes = [C.c_void_p, C.POINTER(Face), C.c_size_t, C.POINTER(C.c_size_t)]
        lib.styleid_edge_detect.argtypes = [C.c_void_p, C.POINTER(C.c_uint8), C.c_int, C.c_int, C.c_size_t,
                                            C.POINTER(Face), C.c_size_t, C.POINTER(C.c_size_t)]
        lib.styleid_edge_align.argtypes = [C.c_void_p, C.POINTER(C.c_uint8), C.c_int, C.c_int, C.c_size_t,
                                           C.POINTER(C.c_float), C.POINTER(C.c_uint8), C.POINTER(C.c_double)]
        lib.styleid_edge_generate.argtypes = [C.c_void_p, C.POINTER(C.c_uint8), C.c_uint64, C.POINTER(C.c_float),
                                              C.POINTER(C.c_float), C.POINTER(C.c_uint8)]
        lib.styleid_edge_get_info.argtypes = [C.c_void_p, C.POINTER(Info)]
        lib.styleid_edge_reset.argtypes = [C.c_void_p, C.c_float]
        lib.styleid_edge_seed_z.argtypes = [C.c_uint64, C.POINTER(C.c_float), C.c_size_t]
        lib.styleid_edge_track_seed.argtypes = [C.c_uint64, C.c_int64, C.POINTER(C.c_uint64)]

    def check(self, status: int) -> None:
        if status != 0:
            raise NativeError(status, self.lib.styleid_edge_last_error().decode(errors="replace"))

    def options(self, **kw) -> Options:
        o = Options()
        self.lib.styleid_edge_options_init(C.byref(o))
        for k, v in kw.items():
            if k == "method":
                v = METHODS[v]
            elif isinstance(v, str):
                v = v.encode()
            setattr(o, k, v)
        return o

    def create(self, pack: str | os.PathLike, **kw) -> Runtime:
        handle = C.c_void_p()
        opts = self.options(**kw)
        self.check(self.lib.styleid_edge_create(str(pack).encode(), C.byref(opts), C.byref(handle)))
        return Runtime(self, handle)

    def seed_z(self, seed: int, dim: int = 512) -> np.ndarray:
        z = np.empty(dim, np.float32)
        self.check(self.lib.styleid_edge_seed_z(C.c_uint64(seed), _f32(z), dim))
        return z

    def track_seed(self, run_seed: int, track_id: int) -> int:
        out = C.c_uint64()
        self.check(self.lib.styleid_edge_track_seed(C.c_uint64(run_seed), track_id, C.byref(out)))
        return int(out.value)


class Runtime:
    """One styleid_edge handle."""

    def __init__(self, lib: NativeLib, handle: C.c_void_p):
        self.native = lib
        self.lib = lib.lib
        self.handle = handle

    def close(self) -> None:
        if self.handle:
            self.lib.styleid_edge_destroy(self.handle)
            self.handle = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    @staticmethod
    def _frame(frame: np.ndarray) -> np.ndarray:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or not frame.flags.c_contiguous:
            raise ValueError("frames must be C-contiguous BGR uint8 (H, W, 3)")
        return frame

    def info(self) -> Info:
        info = Info()
        self.native.check(self.lib.styleid_edge_get_info(self.handle, C.byref(info)))
        return info

    def anonymize(self, frame: np.ndarray) -> np.ndarray:
        f = self._frame(frame)
        self.native.check(self.lib.styleid_edge_anonymize(self.handle, _u8(f), f.shape[1], f.shape[0], f.strides[0]))
        return f

    def reset(self, fps: float = 0.0) -> None:
        self.native.check(self.lib.styleid_edge_reset(self.handle, fps))

    def faces(self) -> list[dict]:
        count = C.c_size_t()
        self.lib.styleid_edge_get_faces(self.handle, None, 0, C.byref(count))
        arr = (Face * max(1, count.value))()
        self.native.check(self.lib.styleid_edge_get_faces(self.handle, arr, count.value, C.byref(count)))
        return [arr[i].as_dict() for i in range(count.value)]

    def detect(self, frame: np.ndarray) -> list[dict]:
        f = self._frame(frame)
        arr = (Face * 64)()
        count = C.c_size_t()
        self.native.check(self.lib.styleid_edge_detect(self.handle, _u8(f), f.shape[1], f.shape[0], f.strides[0],
                                                       arr, 64, C.byref(count)))
        return [arr[i].as_dict() for i in range(count.value)]

    def align(self, frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = self._frame(frame)
        size = self.info().crop_size
        crop = np.empty((size, size, 3), np.uint8)
        m = np.empty(6, np.float64)
        lm = np.ascontiguousarray(landmarks, np.float32).reshape(10)
        self.native.check(self.lib.styleid_edge_align(self.handle, _u8(f), f.shape[1], f.shape[0], f.strides[0],
                                                      _f32(lm), _u8(crop), m.ctypes.data_as(C.POINTER(C.c_double))))
        return crop, m.reshape(2, 3)

    def generate(self, crop: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        info = self.info()
        c = np.ascontiguousarray(crop, np.uint8)
        w = np.empty((info.n_latent, info.style_dim), np.float32)
        s = np.empty(info.n_styles, np.float32)
        face = np.empty((info.crop_size, info.crop_size, 3), np.uint8)
        self.native.check(self.lib.styleid_edge_generate(self.handle, _u8(c), C.c_uint64(seed), _f32(w), _f32(s),
                                                         _u8(face)))
        return w, s, face
