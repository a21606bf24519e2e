"""Video and image I/O: styleid_edge.runtime.video and styleid_edge.runtime.images.

Inputs are made from the real photos in tests/data/photos by tests/media.py (PyAV directly, not the
code under test)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from media import bgr_to_ycbcr, corrupt_middle, load_photo, make_video, moving_faces_clip, truncate
from styleid_edge.cli import main as cli_main
from styleid_edge.runtime import images, video
from styleid_edge.runtime.frame_pipeline import Progress, run_threaded
from styleid_edge.runtime.video import (
    Frame,
    OutputExistsError,
    VideoError,
    VideoReader,
    VideoWriter,
    probe,
)

N_FRAMES = 50
REPO = Path(__file__).resolve().parent.parent


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def colour_bias(want: list[np.ndarray], got: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Signed mean of want - got per channel (B, G, R) over all frames, and the mean absolute error."""
    diff = np.stack(want).astype(np.float64) - np.stack(got).astype(np.float64)
    return diff.reshape(-1, 3).mean(axis=0), float(np.abs(diff).mean())


def decode_all(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def audio_packets(path: Path) -> list[tuple[int, int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, p.dts, bytes(p)) for p in c.demux(audio=0) if p.size]


def transcode(src: Path, dst: Path, **kwargs: object) -> VideoWriter:
    with VideoReader(src) as reader, VideoWriter(dst, reader.info, audio_from=src, **kwargs) as writer:
        for frame in reader:
            writer.write(frame.image, pts=frame.pts)
    return writer


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def clip(media_dir: Path):
    """640x360, 50 frames at 25 fps, two real faces moving and zooming, AAC tone, faststart MP4,
    a keyframe every 10 frames."""
    return moving_faces_clip(N_FRAMES, path=media_dir / "faces.mp4", gop=10)


@pytest.fixture(scope="module")
def clip_mkv(media_dir: Path, clip):
    """Same frames in Matroska with Opus: no frame count in the container."""
    return make_video(media_dir / "faces.mkv", clip.frames)


@pytest.fixture(scope="module")
def small_frames(clip) -> list[np.ndarray]:
    """The clip's first 25 frames (1 s at 25 fps) at 320x180: quick to encode in every container."""
    return [cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA) for f in clip.frames[:25]]


def audio_seconds(path: Path) -> float:
    """Decoded audio length: samples / sample rate."""
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        return sum(f.samples for f in c.decode(audio=0)) / rate


def remux_with_shorter_video(src: Path, dst: Path, video_until: float) -> Path:
    """Copy ``src``'s packets to ``dst`` (same container type), the video only up to the first
    keyframe at or after ``video_until`` seconds, the audio all of it: a complete file whose audio
    runs on past the video, as in a recording whose camera stopped first."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vout, aout = out.add_stream_from_template(vin), out.add_stream_from_template(ain)
        video_done = False
        for packet in inp.demux(vin, ain):
            if not packet.size:
                continue
            if packet.stream is vin:
                at_cut = packet.is_keyframe and float(packet.pts * vin.time_base) >= video_until - 1e-6
                video_done = video_done or at_cut
                if video_done:
                    continue
                packet.stream = vout
            else:
                packet.stream = aout
            out.mux(packet)
    return dst


# ---------------------------------------------------------------------------------------------
# test media themselves


def test_moving_faces_clip_ground_truth(clip) -> None:
    assert clip.size == (640, 360) and len(clip.frames) == N_FRAMES == len(clip.boxes)
    first, last = clip.boxes[0], clip.boxes[-1]
    assert [b.photo for b in first] == ["obama.jpg", "biden.jpg"]
    for boxes in clip.boxes:
        for b in boxes:
            assert 0 <= b.x1 < b.x2 <= 640 and 0 <= b.y1 < b.y2 <= 360
    # faces move and zoom (0.8 -> 1.25 of the base size)
    assert abs(first[0].x1 - last[0].x1) + abs(first[0].y1 - last[0].y1) > 20
    ratio = (last[0].y2 - last[0].y1) / (first[0].y2 - first[0].y1)
    assert 1.45 < ratio < 1.7
    # the box holds the photo's face: mean colour inside the box matches the photo's face crop
    photo = load_photo("obama.jpg")
    face = photo[107:417, 374:602].reshape(-1, 3).mean(0)
    b = first[0]
    inside = clip.frames[0][int(b.y1) + 2 : int(b.y2) - 2, int(b.x1) + 2 : int(b.x2) - 2].reshape(-1, 3).mean(0)
    assert np.abs(inside - face).max() < 12

    hd = moving_faces_clip(3, size=(1280, 720), photos=("astronaut.png", "obama2.jpg", "biden.jpg"),
                           background="plain")
    assert hd.size == (1280, 720) and [len(b) for b in hd.boxes] == [3, 3, 3]
    assert all(0 <= b.x1 < b.x2 <= 1280 and 0 <= b.y1 < b.y2 <= 720 for b in hd.boxes[-1])


# ---------------------------------------------------------------------------------------------
# probe / round trip


def test_probe_reports_the_container(clip, clip_mkv) -> None:
    info = probe(clip.path)
    assert (info.width, info.height, info.fps) == (640, 360, Fraction(25))
    assert info.frame_count == N_FRAMES and info.frame_count_exact
    assert info.duration == pytest.approx(2.0, abs=1e-6)
    assert info.rotation == 0 and info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.has_audio and info.audio_codec == "aac" and info.audio_sample_rate == 48000

    mkv = probe(clip_mkv)
    assert not mkv.frame_count_exact and mkv.frame_count == N_FRAMES  # estimated from duration
    counted = probe(clip_mkv, count=True)
    assert counted.frame_count_exact and counted.frame_count == N_FRAMES
    assert video.count_frames(clip_mkv) == N_FRAMES
    assert mkv.audio_codec == "opus"


def test_round_trip_keeps_size_rate_count_duration_and_copies_audio(clip, tmp_path: Path) -> None:
    out = tmp_path / "anon.mp4"
    writer = transcode(clip.path, out, crf=18)
    src, dst = probe(clip.path), probe(out)
    assert (dst.width, dst.height, dst.fps, dst.time_base) == (src.width, src.height, src.fps, src.time_base)
    assert dst.frame_count == src.frame_count == N_FRAMES
    assert dst.duration == pytest.approx(src.duration, abs=1e-6)
    assert dst.pix_fmt == "yuv420p" and dst.codec == "h264"

    # audio copied: same codec, the very same packets (timestamps and bytes)
    assert writer.audio_mode == "copy"
    assert dst.audio_codec == src.audio_codec == "aac"
    src_audio, dst_audio = audio_packets(clip.path), audio_packets(out)
    assert len(dst_audio) == len(src_audio) > 90
    assert dst_audio == src_audio

    # pixels within H.264 tolerance, frames in order with the same timestamps
    before, after = decode_all(clip.path), decode_all(out)
    assert len(after) == N_FRAMES
    scores = [psnr(a, b) for a, b in zip(before, after)]
    assert min(scores) > 35.0, scores
    with av.open(str(clip.path)) as c1, av.open(str(out)) as c2:
        assert [f.pts for f in c1.decode(video=0)] == [f.pts for f in c2.decode(video=0)]


def test_matroska_input_to_mkv_copies_opus(clip_mkv, tmp_path: Path) -> None:
    out = tmp_path / "anon.mkv"
    writer = transcode(clip_mkv, out)
    dst = probe(out, count=True)
    assert writer.audio_mode == "copy" and dst.audio_codec == "opus"
    assert dst.frame_count == N_FRAMES and dst.duration == pytest.approx(2.0, abs=0.01)
    assert [p[2] for p in audio_packets(out)] == [p[2] for p in audio_packets(clip_mkv)]


@pytest.mark.parametrize(("src_name", "audio_codec"), [("phone.mov", "pcm_s16le"), ("web.webm", "libopus")])
def test_pcm_and_opus_are_reencoded_to_aac_for_mp4(small_frames, tmp_path: Path, caplog, src_name: str,
                                                    audio_codec: str) -> None:
    """FFmpeg muxes PCM and Opus into MP4, but QuickTime and many players do not play them there."""
    src = make_video(tmp_path / src_name, small_frames, audio_codec=audio_codec)
    assert probe(src).audio_codec == audio_codec.removeprefix("lib")
    out = tmp_path / "anon.mp4"
    with caplog.at_level(logging.INFO, logger="styleid_edge.runtime.video"):
        writer = transcode(src, out)
    assert writer.audio_mode == "re-encode:aac"
    assert "cannot be copied" in caplog.text and "re-encoding it to aac" in caplog.text
    dst = probe(out)
    assert dst.audio_codec == "aac" and dst.frame_count == 25
    assert audio_seconds(out) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(("src_name", "audio_codec", "out_name"),
                         [("phone.mov", "pcm_s16le", "anon.mov"), ("cam.avi", "libmp3lame", "anon.mp4")])
def test_audio_that_plays_in_the_output_is_copied(small_frames, tmp_path: Path, src_name: str, audio_codec: str,
                                                  out_name: str) -> None:
    """PCM stays PCM in a .mov (QuickTime's own format); MP3 is copied into .mp4 like AAC."""
    src = make_video(tmp_path / src_name, small_frames, audio_codec=audio_codec)
    out = tmp_path / out_name
    writer = transcode(src, out)
    assert writer.audio_mode == "copy" and probe(out).audio_codec == probe(src).audio_codec
    assert [p[2] for p in audio_packets(out)] == [p[2] for p in audio_packets(src)]


def test_audio_reencoded_to_aac_when_the_container_refuses_a_copy(clip_mkv, tmp_path: Path, caplog) -> None:
    out = tmp_path / "anon.mov"  # QuickTime cannot hold Opus
    with caplog.at_level(logging.INFO, logger="styleid_edge.runtime.video"):
        writer = transcode(clip_mkv, out)
    assert writer.audio_mode == "re-encode:aac"
    assert "cannot be copied" in caplog.text and "re-encoding it to aac" in caplog.text
    dst = probe(out)
    assert dst.audio_codec == "aac" and dst.frame_count == N_FRAMES
    with av.open(str(out)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert samples / 48000 == pytest.approx(2.0, abs=0.05)


def test_rotation_metadata_is_carried_over(clip, tmp_path: Path) -> None:
    src = make_video(tmp_path / "portrait.mp4", clip.frames[:10], rotation=90)
    info = probe(src)
    assert info.rotation == 90 and info.display_size == (360, 640)
    out = tmp_path / "anon.mp4"
    transcode(src, out)
    assert probe(out).rotation == 90
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0))
        assert frame.rotation == 90 and (frame.width, frame.height) == (640, 360)  # pixels not turned
    upright = video.to_display(clip.frames[0], 90)
    assert upright.shape == (640, 360, 3)
    np.testing.assert_array_equal(video.from_display(upright, 90), clip.frames[0])


def test_avi_video_starts_with_the_audio(small_frames, tmp_path: Path) -> None:
    """AVI stores no presentation times: frame k is the k-th chunk, shown at k / fps, and the audio
    starts at 0 too. FFmpeg's genpts (which PyAV turns on) guesses pts = dts + 1 for H.264 in AVI, so
    read back through PyAV frame 0 sat at 0.04 s: the file was right, but the reader passed that time
    on, and anything written from an AVI input had its video one frame late against the audio."""
    src = make_video(tmp_path / "clip.mov", small_frames)  # H.264 (with B-frames) + AAC
    avi = tmp_path / "anon.avi"
    transcode(src, avi)

    # What the file holds: the first video and audio chunks both at 0; no pts (read without genpts).
    first: dict[str, av.Packet] = {}
    with av.open(str(avi)) as c:
        c.flags &= ~av.container.Flags.gen_pts.value
        for packet in c.demux():
            if packet.size:
                first.setdefault(packet.stream.type, packet)
    assert first["video"].pts is None and first["video"].dts == 0
    assert first["audio"].pts * first["audio"].time_base == 0

    # The reader times each frame by its slot, as players do.
    frames = list(VideoReader(avi))
    assert [f.time for f in frames] == pytest.approx([k / 25 for k in range(25)])

    # An AVI input written to MP4 (real timestamps) keeps video and audio starting together.
    out = tmp_path / "again.mp4"
    transcode(avi, out)
    with av.open(str(out)) as c:
        video_start = next(c.decode(video=0)).time
    with av.open(str(out)) as c:
        audio_start = next(c.decode(audio=0)).time
    assert video_start == audio_start == 0.0
    assert probe(out).frame_count == 25 and probe(out).duration == pytest.approx(1.0, abs=0.03)


def test_colour_tags_are_kept(clip, tmp_path: Path) -> None:
    """An HD camera file tagged BT.709: the output is tagged and converted the same way."""
    info = dataclasses.replace(probe(clip.path), color_space=1, color_primaries=1, color_trc=1, color_range=1)
    tagged = tmp_path / "bt709.mp4"
    with VideoWriter(tagged, info) as writer:
        for image in clip.frames[:5]:
            writer.write(image)
    got = probe(tagged)
    assert (got.color_space, got.color_primaries, got.color_trc, got.color_range) == (1, 1, 1, 1)
    frames = list(VideoReader(tagged))
    assert min(psnr(f.image, want) for f, want in zip(frames, clip.frames)) > 35.0
    with av.open(str(tagged)) as c:  # read with the wrong (BT.601) matrix, colours drift
        wrong = next(c.decode(video=0)).to_ndarray(format="bgr24", src_colorspace=5)
    assert psnr(wrong, clip.frames[0]) < psnr(frames[0].image, clip.frames[0]) - 2

    out = tmp_path / "anon.mp4"
    writer = transcode(tagged, out)  # audio_from a file without audio: video only, no error
    assert writer.audio_mode is None and not probe(out).has_audio
    assert (probe(out).color_space, probe(out).color_primaries, probe(out).color_range) == (1, 1, 1)


# Inputs as cameras tag them: (make_video kwargs, expected (color_space, full range) of the file).
COLOUR_INPUTS = {
    "untagged": ({}, (2, False)),
    "bt601-tagged": ({"color_space": 6, "color_range": 1}, (6, False)),
    "bt709": ({"color_space": 1, "color_range": 1}, (1, False)),
    "bt709-full": ({"color_space": 1, "color_range": 2}, (1, True)),  # phone
    "yuvj420p": ({"pix_fmt": "yuvj420p"}, (2, True)),  # webcam / MJPEG origin, untagged
}


@pytest.mark.parametrize(("matrix", "full"), [(2, False), (1, False), (6, False), (2, True), (1, True)])
def test_colour_conversion_rounds_to_the_definitions(clip, matrix: int, full: bool) -> None:
    """BGR -> YCbCr is the exact matrix rounded (not truncated); YCbCr -> BGR has no bias."""
    image = clip.frames[0]
    frame = video.bgr_to_yuv_frame(image, "yuv420p", matrix, full)
    planes = [frame.to_ndarray()[: 360], frame.to_ndarray()[360:].reshape(2, 180, 320)]
    want = bgr_to_ycbcr(image, matrix if matrix != 6 else 2, full)
    block_means = [want[..., c].reshape(180, 2, 320, 2).mean(axis=(1, 3)) for c in (1, 2)]
    for got, exact in zip([planes[0], *planes[1]], [want[..., 0], *block_means]):
        off = got.astype(np.float64) - np.clip(np.rint(exact), 0, 255)
        # the nearest code value, bar float32 ties; truncation was off by one on about half
        assert np.abs(off).max() <= 1 and np.count_nonzero(off) < 1e-3 * off.size
    for yuv444 in ("yuv444p", "yuvj444p") if full else ("yuv444p",):  # yuvj* is always full range
        exact = video.bgr_to_yuv_frame(image, yuv444, matrix, full)
        np.testing.assert_array_equal(exact.to_ndarray(channel_last=True)[..., 0], planes[0])
    bias, mae = colour_bias([image], [video.yuv_frame_to_bgr(frame)])
    assert np.abs(bias).max() < 0.1 and mae < 0.6, (bias, mae)


@pytest.mark.parametrize("kind", list(COLOUR_INPUTS))
def test_write_read_keeps_colours_over_generations(clip, tmp_path: Path, kind: str) -> None:
    """Regression: each write -> read generation made frames ~2 levels darker (B +2.7, G +1.7,
    R +2.0 signed error per generation, also losslessly) because swscale truncated both ways."""
    kwargs, (matrix, full) = COLOUR_INPUTS[kind]
    truth = clip.frames[:8]
    src = make_video(tmp_path / "src.mp4", truth, audio=False, **kwargs)
    info = probe(src)
    assert info.color_space == matrix and video.is_full_range(info.pix_fmt, info.color_range) == full

    def generation(path: Path, out: Path, crf: int) -> list[np.ndarray]:
        with VideoReader(path) as reader, VideoWriter(out, reader.info, crf=crf) as writer:
            for frame in reader:
                writer.write(frame.image, frame.pts)
        got = probe(out)
        assert (got.color_space, got.color_primaries, got.color_trc) == (
            info.color_space, info.color_primaries, info.color_trc)
        assert video.is_full_range(got.pix_fmt, got.color_range) == full
        return [frame.image for frame in VideoReader(out)]

    first = [frame.image for frame in VideoReader(src)]
    bias, _ = colour_bias(truth, first)  # test media converted independently of the runtime
    assert np.abs(bias).max() < 0.3, bias

    # (max |signed mean| per channel, max mean abs error); before the fix every case was about
    # (2.8, 2.3) for one generation and (5.4, 4.4) for two, at crf 18 and losslessly alike.
    limits = {18: ((0.3, 1.2), (0.3, 1.6)), 0: ((0.1, 0.35), (0.1, 0.6))}
    for crf, (one, two) in limits.items():
        gen1 = generation(src, tmp_path / f"gen1-crf{crf}.mp4", crf)
        gen2 = generation(tmp_path / f"gen1-crf{crf}.mp4", tmp_path / f"gen2-crf{crf}.mp4", crf)
        for got, (max_bias, max_mae) in ((gen1, one), (gen2, two)):
            bias, mae = colour_bias(first, got)
            assert np.abs(bias).max() < max_bias and mae < max_mae, (crf, bias, mae)


def test_odd_dimensions(clip, tmp_path: Path) -> None:
    frames = [f[:241, :321] for f in clip.frames[:10]]
    src = make_video(tmp_path / "odd.mp4", frames)  # yuv444p keeps the odd size
    assert (probe(src).width, probe(src).height) == (321, 241)

    padded = tmp_path / "padded.mp4"
    transcode(src, padded)
    info = probe(padded)
    assert (info.width, info.height, info.pix_fmt) == (322, 242, "yuv420p")
    assert info.frame_count == 10
    inputs, outputs = decode_all(src), decode_all(padded)
    assert min(psnr(a, b[:241, :321]) for a, b in zip(inputs, outputs)) > 35.0

    exact = tmp_path / "exact.mp4"
    transcode(src, exact, pix_fmt="yuv444p")
    assert (probe(exact).width, probe(exact).height) == (321, 241)


# ---------------------------------------------------------------------------------------------
# damaged and bad inputs


def test_corrupt_middle_decodes_past_the_damage(clip, tmp_path: Path) -> None:
    bad = corrupt_middle(clip.path, tmp_path / "corrupt.mp4")
    reader = VideoReader(bad)
    frames = list(reader)
    assert reader.errors, "damage must be recorded"
    assert {e.kind for e in reader.errors} <= {"decode", "demux", "corrupt-frame", "missing-frames"}
    damage_times = [e.time for e in reader.errors if e.time is not None]
    assert damage_times and 0.2 < min(damage_times) < 1.8
    assert 30 <= len(frames) <= N_FRAMES
    times = [f.time for f in frames]
    assert times == sorted(times)
    assert times[0] == 0.0 and times[-1] == pytest.approx(1.96)  # the last frame, past the damage
    assert any(t > max(damage_times) for t in times)
    # frames after the damage up to the next keyframe are flagged; from the keyframe on they are
    # clean and show the right pictures again
    flagged = [f for f in frames if f.corrupt]
    assert flagged and min(f.time for f in flagged) >= min(damage_times) - 1e-9
    next_key = (int(max(damage_times) * 25) // 10 + 1) * 10  # keyframes every 10 frames
    after = [f for f in frames if round(f.time * 25) >= next_key]
    assert len(after) >= 10 and not any(f.corrupt for f in after)
    for f in after:
        assert psnr(f.image, clip.frames[round(f.time * 25)]) > 30.0
    before = [f for f in frames if f.time < min(damage_times) - 0.2]
    assert before and not any(f.corrupt for f in before)

    out = tmp_path / "anon.mp4"
    with VideoWriter(out, reader.info, audio_from=bad) as writer:
        for frame in VideoReader(bad):
            writer.write(frame.image, frame.pts)
    assert probe(out).frame_count == len(frames)


def test_truncated_input_processes_what_is_there(clip, tmp_path: Path) -> None:
    cut = truncate(clip.path, tmp_path / "cut.mp4", 0.6)
    reader = VideoReader(cut)
    frames = list(reader)
    assert 5 < len(frames) < N_FRAMES
    assert [e.kind for e in reader.errors][-1] == "missing-frames"
    assert f"decoded {len(frames)} of the {N_FRAMES}" in reader.errors[-1].message
    for got, want in zip(frames, clip.frames):
        assert psnr(got.image, want) > 30.0

    out = tmp_path / "anon.mp4"
    with VideoWriter(out, reader.info, audio_from=cut) as writer:
        for frame in VideoReader(cut):
            writer.write(frame.image, frame.pts)
    info = probe(out)
    assert info.frame_count == len(frames)
    assert info.duration == pytest.approx(len(frames) / 25, abs=0.05)
    assert info.has_audio


def test_unfinished_mp4_without_index_says_so(clip, tmp_path: Path) -> None:
    src = make_video(tmp_path / "rec.mp4", clip.frames[:10], faststart=False)  # index at the end
    cut = truncate(src, tmp_path / "cut.mp4", 0.5)
    with pytest.raises(VideoError, match=r"cut\.mp4 is an MP4/MOV cut off before its index"):
        VideoReader(cut)


# make_video kwargs per container (FLV takes AAC at 44.1 kHz; the others use make_video's defaults).
NO_COUNT_CONTAINERS = {".mkv": {}, ".webm": {}, ".avi": {}, ".ts": {}, ".flv": {"sample_rate": 44100}}


@pytest.mark.parametrize("audio", [True, False], ids=["audio", "no-audio"])
@pytest.mark.parametrize("suffix", list(NO_COUNT_CONTAINERS))
def test_complete_files_without_a_frame_count_read_clean(small_frames, tmp_path: Path, suffix: str,
                                                         audio: bool) -> None:
    """No false alarm: Matroska/WebM/FLV (the file's duration covers the audio, which ends a little
    after the video), AVI (an extra empty chunk with MP3 audio), TS (starts at 0.08 s, no length)."""
    src = make_video(tmp_path / f"clip{suffix}", small_frames, audio=audio, **NO_COUNT_CONTAINERS[suffix])
    assert not probe(src).frame_count_exact
    reader = VideoReader(src)
    assert len(list(reader)) == 25 and reader.errors == []


@pytest.mark.parametrize("suffix", [".mkv", ".avi", ".flv"])
def test_cut_off_file_without_a_frame_count_is_reported(small_frames, tmp_path: Path, suffix: str) -> None:
    """Regression: a Matroska/AVI/FLV file cut in half read as complete (no error, CLI exit 0). Its
    header still says how long the video runs, so decoding that stops short is `missing-frames`."""
    src = make_video(tmp_path / f"clip{suffix}", small_frames, **NO_COUNT_CONTAINERS[suffix])
    cut = truncate(src, tmp_path / f"cut{suffix}", 0.5)
    reader = VideoReader(cut)
    frames = list(reader)
    assert 0 < len(frames) < 20
    last = reader.errors[-1]
    assert last.kind == "missing-frames" and "damaged or cut off" in last.message, reader.errors
    assert last.time == pytest.approx(frames[-1].time + 0.04) and f"ended at {last.time:.2f} s" in last.message
    assert re.search(r"runs to 1\.0\d s", last.message), last.message  # 25 frames (+1 empty chunk in AVI)


@pytest.mark.parametrize("suffix", [".mkv", ".flv"])
def test_audio_longer_than_the_video_is_no_cut(small_frames, tmp_path: Path, suffix: str) -> None:
    """The whole-file duration covers the audio: a video that stops first is not cut off, unless no
    stream reaches the end either. (Matroska: the video track's DURATION tag; FLV: only the file's
    duration, so the other streams' data is checked.)"""
    src = make_video(tmp_path / f"src{suffix}", small_frames, gop=10, **NO_COUNT_CONTAINERS[suffix])
    short = remux_with_shorter_video(src, tmp_path / f"short{suffix}", 0.4)  # video 0.4 s, audio 1 s
    reader = VideoReader(short)
    assert len(list(reader)) == 10 and reader.errors == []

    cut = truncate(short, tmp_path / f"cut{suffix}", 0.4)
    reader = VideoReader(cut)
    assert len(list(reader)) < 10 and [e.kind for e in reader.errors][-1:] == ["missing-frames"]


def test_cli_exits_3_and_reports_a_cut_off_mkv(small_frames, tmp_path: Path, capsys) -> None:
    """The reviewer's case end to end: `styleid-edge anonymize trunc.mkv -o out.mp4` exits 3 with the
    error in the report, as a cut-off MP4 does; the complete file exits 0 with no error."""
    src = make_video(tmp_path / "clip.mkv", small_frames)
    cut = truncate(src, tmp_path / "trunc.mkv", 0.5)
    for name, want_code in ((src, 0), (cut, 3)):
        report = tmp_path / f"{name.stem}.json"
        code = cli_main(["anonymize", str(name), "-o", str(tmp_path / f"{name.stem}_out.mp4"), "--method",
                         "pixelate", "--report", str(report), "-q"])
        err = capsys.readouterr().err
        assert code == want_code, err
        errors = json.loads(report.read_text())["errors"]
        if want_code:
            assert len(errors) == 1 and "trunc.mkv: missing-frames at" in errors[0] and "missing-frames" in err
        else:
            assert errors == []


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.mp4", b"", r"empty\.mp4 is empty \(0 bytes\)"),
        ("notes.mp4", b"just some text, not a video\n" * 20, r"notes\.mp4 is not a video FFmpeg can read"),
        ("photo.mp4", None, r"photo\.mp4 is a still image"),
        ("missing.mp4", "absent", r"missing\.mp4: no such file"),
    ],
)
def test_bad_inputs_give_clear_errors(tmp_path: Path, name: str, content, message: str) -> None:
    path = tmp_path / name
    if content is None:
        path.write_bytes((Path(__file__).parent / "data/photos/obama.jpg").read_bytes())
    elif content != "absent":
        path.write_bytes(content)
    with pytest.raises(VideoError, match=message):
        VideoReader(path)
    with pytest.raises(VideoError, match=message):
        probe(path)


# ---------------------------------------------------------------------------------------------
# writer: atomic output and partial results


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_failed_write_never_leaves_the_final_file(clip, tmp_path: Path) -> None:
    info = probe(clip.path)
    out = tmp_path / "anon.mp4"
    with pytest.raises(RuntimeError, match="model crashed"):
        with VideoWriter(out, info, audio_from=clip.path) as writer:
            for image in clip.frames[:5]:
                writer.write(image)
                assert not out.exists()  # only the hidden temporary file exists while writing
                assert len([p for p in tmp_path.iterdir() if p.name.startswith(".anon.")]) == 1
            raise RuntimeError("model crashed")
    assert _leftovers(tmp_path) == []

    with pytest.raises(ValueError, match=r"expects \(360, 640, 3\) uint8"):
        with VideoWriter(out, info) as writer:
            writer.write(np.zeros((10, 10, 3), np.uint8))
    assert _leftovers(tmp_path) == []


def test_interrupted_write_keeps_a_playable_partial(clip, tmp_path: Path, caplog) -> None:
    info = probe(clip.path)
    out = tmp_path / "anon.mp4"
    with caplog.at_level(logging.WARNING, logger="styleid_edge.runtime.video"):
        with pytest.raises(KeyboardInterrupt):
            with VideoWriter(out, info, audio_from=clip.path) as writer:
                for frame in VideoReader(clip.path):
                    if frame.index == 20:
                        raise KeyboardInterrupt
                    writer.write(frame.image, frame.pts)
    partial = tmp_path / "anon.partial.mp4"
    assert _leftovers(tmp_path) == ["anon.partial.mp4"] and writer.result == partial
    assert str(partial) in caplog.text
    info_partial = probe(partial)
    assert info_partial.frame_count == 20 and info_partial.has_audio
    with av.open(str(partial)) as c:
        audio_end = max(float(p.pts * p.time_base) for p in c.demux(audio=0) if p.size)
    assert 0.7 < audio_end < 0.9  # audio only as far as the video goes

    # close(ok=False) decides the same way without an exception
    writer = VideoWriter(out, info)
    for image in clip.frames[:3]:
        writer.write(image)
    assert writer.close(ok=False) == partial and not out.exists()
    assert probe(partial).frame_count == 3
    partial.unlink()
    empty = VideoWriter(out, info)
    assert empty.close(ok=False) is None and _leftovers(tmp_path) == []


def decodable_frames(path: Path) -> int:
    """Frames PyAV decodes from ``path`` before its first error (0 when it cannot be opened)."""
    count = 0
    try:
        with av.open(str(path)) as c:
            for _ in c.decode(video=0):
                count += 1
    except av.error.FFmpegError:
        pass
    return count


def noise_info(width: int = 160, height: int = 120) -> video.VideoInfo:
    return video.VideoInfo(path=Path("noise"), width=width, height=height, fps=Fraction(25),
                           time_base=Fraction(1, 25), frame_count=0, frame_count_exact=False, duration=0.0,
                           start_time=0.0, rotation=0, codec="rawvideo", pix_fmt="yuv420p",
                           container_format="noise", has_audio=False)


# In a child process: write noise until the hidden temporary file holds 64 kB, then limit files to
# that size (RLIMIT_FSIZE; SIGXFSZ ignored, so writes fail with EFBIG as on a full disk) and close:
# the rest of the data and the trailer/index cannot be written.
FAILED_FINISH_SCRIPT = r"""
import json, resource, signal, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "tests")
from test_video import noise_info
from styleid_edge.runtime.video import VideoWriter

out, fragmented, ok = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1"
writer = VideoWriter(out, noise_info(), preset="ultrafast", options={"g": "10"}, fragmented=fragmented)
rng = np.random.default_rng(0)
tmp = lambda: [p for p in out.parent.iterdir() if p.name.startswith(".")]
while writer.frames_written < 30 or not tmp() or tmp()[0].stat().st_size < 65536:
    writer.write(rng.integers(0, 256, (120, 160, 3), np.uint8))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (tmp()[0].stat().st_size, resource.RLIM_INFINITY))
try:
    writer.close(ok=ok)
    error = None
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"error": error, "result": str(writer.result), "frames": writer.frames_written}))
"""


@pytest.mark.parametrize("name, fragmented, ok, plays", [
    ("out.mp4", True, True, True),  # fragmented MP4: plays up to its last complete fragment
    ("out.mp4", False, True, False),  # faststart MP4: its index comes last, so the cut-off file does not open
    ("out.ts", False, False, True),  # ok=False (Ctrl-C) and then finishing fails too
])
def test_failed_finish_keeps_what_was_written(tmp_path: Path, name: str, fragmented: bool, ok: bool,
                                              plays: bool) -> None:
    """Finishing fails (the trailer cannot be written): what was written is kept as NAME.partial.EXT,
    never replacing a file (an existing NAME.partial.mp4 stays, the new one is NAME-2.partial.mp4), the
    error says where, and a fragmented MP4 still plays."""
    out = tmp_path / name
    old_partial = out.with_name(f"out.partial{out.suffix}")
    if fragmented:
        old_partial.write_bytes(b"an earlier run's partial file")
    done = subprocess.run([sys.executable, "-c", FAILED_FINISH_SCRIPT, str(out), str(int(fragmented)), str(int(ok))],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    kept = out.with_name(f"out-2.partial{out.suffix}") if fragmented else old_partial
    assert result["error"] and result["error"].startswith("VideoError: could not finish"), result
    assert f"what was written is kept in {kept}" in result["error"] and result["result"] == str(kept)
    assert f"kept in {kept}" in done.stderr  # logged
    assert not out.exists() and kept.stat().st_size >= 65536
    if fragmented:
        assert old_partial.read_bytes() == b"an earlier run's partial file"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no hidden leftovers
    frames = decodable_frames(kept)
    if plays:
        assert 0 < frames < result["frames"], (frames, result)
    else:
        assert frames == 0 and "cut off before its index does not play" in result["error"]


def test_overwrite_false_never_replaces_a_file(clip, tmp_path: Path) -> None:
    info = probe(clip.path)
    out = tmp_path / "anon.mp4"
    out.write_bytes(b"someone else's recording")
    writer = VideoWriter(out, info, overwrite=False)
    for image in clip.frames[:3]:
        writer.write(image)
    with pytest.raises(OutputExistsError, match=r"anon\.mp4 already exists and overwrite=False") as raised:
        writer.close()
    assert isinstance(raised.value, FileExistsError)
    assert out.read_bytes() == b"someone else's recording"  # byte-identical
    assert writer.result is None and len([p for p in tmp_path.iterdir() if p.name.startswith(".")]) == 1
    with pytest.raises(ValueError, match="must be in"):
        writer.retarget(tmp_path / "sub" / "anon-2.mp4")
    writer.retarget(tmp_path / "anon-2.mp4")  # the finished file waits: give it another name
    assert writer.close() == tmp_path / "anon-2.mp4" and probe(tmp_path / "anon-2.mp4", count=True).frame_count == 3
    assert _leftovers(tmp_path) == ["anon-2.mp4", "anon.mp4"]

    # a partial file is not replaced either
    partial = tmp_path / "anon.partial.mp4"
    partial.write_bytes(b"an earlier partial file")
    writer = VideoWriter(out, info, overwrite=False)
    writer.write(clip.frames[0])
    with pytest.raises(OutputExistsError, match=r"anon\.partial\.mp4 already exists"):
        writer.close(ok=False)
    assert partial.read_bytes() == b"an earlier partial file"
    writer.abort()
    assert _leftovers(tmp_path) == ["anon-2.mp4", "anon.mp4", "anon.partial.mp4"]


def _cut_off_copies(tmp_path: Path, name: str, **kwargs: object) -> tuple[Path, Path]:
    """Write 60 frames of noise to NAME (keyframe every 10); returns a copy of the hidden temporary
    file's bytes taken after 40 frames (what a power loss or a killed process leaves) and the
    finished file cut in half."""
    out = tmp_path / name
    rng = np.random.default_rng(1)
    with VideoWriter(out, noise_info(), preset="ultrafast", options={"g": "10"}, **kwargs) as writer:
        for i in range(60):
            writer.write(rng.integers(0, 256, (120, 160, 3), np.uint8))
            if i == 39:
                (tmp,) = [p for p in tmp_path.iterdir() if p.name.startswith(f".{out.stem}.")]
                snapshot = shutil.copyfile(tmp, tmp_path / f"snapshot_{name}")
    return Path(snapshot), truncate(out, tmp_path / f"half_{name}", 0.5)


def test_fragmented_mp4_cut_off_still_plays(tmp_path: Path) -> None:
    snapshot, half = _cut_off_copies(tmp_path, "frag.mp4", fragmented=True)
    assert b"moof" in (tmp_path / "frag.mp4").read_bytes()  # fragments, not one index at the end
    assert 20 <= decodable_frames(snapshot) <= 40  # every complete fragment was on disk
    assert 20 <= decodable_frames(half) < 60
    snapshot, half = _cut_off_copies(tmp_path, "faststart.mp4")
    # What a crash leaves while writing does not open: the index is written only when finishing.
    assert decodable_frames(snapshot) == 0
    with pytest.raises(VideoError, match="cut off before its index"):
        probe(snapshot)
    # (A *finished* faststart file cut in half does decode: faststart moved its index to the front.)
    assert decodable_frames(half) > 0
    # fragmented only changes MP4-family files; .mkv (and .ts) play when cut off anyway
    writer = VideoWriter(tmp_path / "x.mkv", noise_info(), fragmented=True)
    assert not writer.fragmented
    writer.abort()


def test_writer_refuses_to_overwrite_its_input_and_missing_folders(clip, tmp_path: Path) -> None:
    info = probe(clip.path)
    with pytest.raises(VideoError, match="would replace its input"):
        VideoWriter(clip.path, info, audio_from=clip.path)
    with pytest.raises(VideoError, match=r"folder .*nowhere does not exist"):
        VideoWriter(tmp_path / "nowhere" / "out.mp4", info)
    with pytest.raises(VideoError, match=r"no muxer for '\.xyz'"):
        VideoWriter(tmp_path / "out.xyz", info)
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# threaded pipeline and progress


class ListSink:
    def __init__(self) -> None:
        self.pts: list[int | None] = []
        self.values: list[int] = []

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        self.pts.append(pts)
        self.values.append(int(image[0, 0, 0]))


def synthetic_frames(n: int, produced: list[int] | None = None):
    for i in range(n):
        if produced is not None:
            produced.append(i)
        yield Frame(np.full((8, 8, 3), i % 256, np.uint8), i, i * 10, i / 25, Fraction(1, 250))


def test_run_threaded_preserves_order(clip, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 0.002, 200)

    def process(frame: Frame) -> np.ndarray:
        time.sleep(delays[frame.index])
        return 255 - frame.image

    sink = ListSink()
    stats = run_threaded(synthetic_frames(200), process, sink, queue_size=4)
    assert sink.pts == [i * 10 for i in range(200)]
    assert sink.values == [255 - (i % 256) for i in range(200)]
    assert stats.frames_in == stats.frames_out == 200

    # and on a real file, with the real writer
    out = tmp_path / "threaded.mp4"
    reader = VideoReader(clip.path)
    with VideoWriter(out, reader.info, audio_from=clip.path) as writer:
        stats = run_threaded(reader, lambda f: cv2.GaussianBlur(f.image, (9, 9), 3), writer)
    assert stats.frames_out == N_FRAMES and stats.read_errors == []
    expected = [cv2.GaussianBlur(f, (9, 9), 3) for f in decode_all(clip.path)]
    got = decode_all(out)
    assert len(got) == N_FRAMES
    # each output frame matches its own input far better than its neighbours
    for i in (1, 25, 48):
        assert psnr(got[i], expected[i]) > 35.0
        assert psnr(got[i], expected[i]) > psnr(got[i], expected[i + 1]) + 3


def _pipeline_threads_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in {"video-decode", "video-encode"}]


def test_run_threaded_propagates_exceptions_and_stops() -> None:
    produced: list[int] = []

    def process(frame: Frame) -> np.ndarray:
        if frame.index == 10:
            raise ZeroDivisionError("bad frame 10")
        return frame.image

    sink = ListSink()
    with pytest.raises(ZeroDivisionError, match="bad frame 10"):
        run_threaded(synthetic_frames(10_000, produced), process, sink, queue_size=4)
    assert sink.pts == [i * 10 for i in range(10)]
    assert len(produced) < 30  # decoding stopped, it did not run to the end
    assert _pipeline_threads_alive() == []

    class FailingSink(ListSink):
        def write(self, image: np.ndarray, pts: int | None = None) -> None:
            if len(self.pts) == 5:
                raise OSError("disk full")
            super().write(image, pts)

    with pytest.raises(OSError, match="disk full"):
        run_threaded(synthetic_frames(10_000), lambda f: f.image, FailingSink(), queue_size=4)

    def broken_source():
        yield from synthetic_frames(3)
        raise av.error.InvalidDataError(1094995529, "Invalid data")

    with pytest.raises(av.error.InvalidDataError):
        run_threaded(broken_source(), lambda f: f.image, ListSink())
    assert _pipeline_threads_alive() == []


def test_ctrl_c_in_the_pipeline_keeps_every_processed_frame(clip, tmp_path: Path) -> None:
    out = tmp_path / "anon.mp4"

    def process(frame: Frame) -> np.ndarray:
        if frame.index == 30:
            raise KeyboardInterrupt  # what Ctrl-C looks like in the processing thread
        return frame.image

    reader = VideoReader(clip.path)
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, reader.info, audio_from=clip.path) as writer:
            run_threaded(reader, process, writer, queue_size=4)
    assert not out.exists() and writer.result == tmp_path / "anon.partial.mp4"
    assert probe(writer.result).frame_count == 30  # frames 0..29, all that were processed
    assert _pipeline_threads_alive() == []


def test_run_threaded_memory_is_bounded() -> None:
    produced: list[int] = []

    def slow(frame: Frame) -> np.ndarray:
        if frame.index < 20:
            time.sleep(0.002)  # decoder would run far ahead if the queues were not bounded
        return frame.image

    stats = run_threaded(synthetic_frames(2_000, produced), slow, ListSink(), queue_size=4)
    assert stats.frames_out == 2_000
    assert 4 <= stats.max_in_flight <= 2 * 4 + 3


def test_progress_counts_frames_and_faces(capsys, caplog, monkeypatch) -> None:
    with Progress(total=20, quiet=True) as bar:
        stats = run_threaded(synthetic_frames(20), lambda f: f.image, ListSink(), progress=bar)
        bar.update(frames=0, faces=7)
    assert bar.frames == stats.frames_out == 20 and bar.faces == 7
    assert capsys.readouterr().err == ""  # quiet: nothing drawn

    import sys

    # on a terminal: the tqdm bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with Progress(total=3, quiet=False, desc="test") as bar:
        for _ in range(3):
            bar.update(frames=1, faces=2)
    err = capsys.readouterr().err
    assert "test" in err and "3/3" in err and "faces/s" in err

    # not a terminal (a log file, a service): no bar, a logged progress line every log_interval and at the end
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level(logging.INFO, logger="styleid_edge.runtime.frame_pipeline"):
        with Progress(total=4, quiet=False, desc="cam", log_interval=0.0) as bar:
            for _ in range(4):
                bar.update(frames=1, faces=1)
    assert "\r" not in capsys.readouterr().err
    lines = [r.getMessage() for r in caplog.records if r.name == "styleid_edge.runtime.frame_pipeline"]
    assert len(lines) == 5 and lines[-1].startswith("cam: 4/4 frames in") and "faces/s" in lines[-1], lines


# ---------------------------------------------------------------------------------------------
# images


def _jpeg_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A JPEG with a minimal EXIF block holding only the orientation tag (0x0112)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd
    data = buf.tobytes()
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_read_image_applies_exif_orientation(tmp_path: Path) -> None:
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :40] = (0, 0, 255)  # left half red
    path = tmp_path / "phone.jpg"
    path.write_bytes(_jpeg_with_orientation(image, 6))  # 6: turn 90 degrees clockwise to view
    upright = images.read_image(path)
    assert upright.shape == (80, 40, 3)
    assert upright[:35, :, 2].mean() > 240 and upright[45:, :, 2].mean() < 15  # red now on top
    raw = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert raw.shape == (40, 80, 3)


def test_write_image_round_trip_and_errors(tmp_path: Path) -> None:
    photo = load_photo("astronaut.png")
    for suffix, min_psnr in ((".png", float("inf")), (".bmp", float("inf")), (".jpg", 35.0), (".webp", 30.0)):
        path = images.write_image(tmp_path / f"out{suffix}", photo)
        assert psnr(images.read_image(path), photo) >= min_psnr
    assert _leftovers(tmp_path) == ["out.bmp", "out.jpg", "out.png", "out.webp"]  # no temporaries

    with pytest.raises(images.ImageError, match=r"nothing\.png: no such file"):
        images.read_image(tmp_path / "nothing.png")
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(images.ImageError, match=r"zero\.jpg is empty"):
        images.read_image(tmp_path / "zero.jpg")
    (tmp_path / "fake.png").write_bytes(b"not a png at all")
    with pytest.raises(images.ImageError, match=r"fake\.png could not be decoded"):
        images.read_image(tmp_path / "fake.png")
    with pytest.raises(images.ImageError, match=r"unknown image type '\.gifx'"):
        images.write_image(tmp_path / "x.gifx", photo)


def test_iter_inputs_sorts_a_folder(clip, tmp_path: Path) -> None:
    images.write_image(tmp_path / "b.jpg", load_photo("biden.jpg"))
    images.write_image(tmp_path / "a.PNG", load_photo("astronaut.png"))
    (tmp_path / "clip.mp4").write_bytes(clip.path.read_bytes())
    (tmp_path / "camera.dat").write_bytes(clip.path.read_bytes())  # a video by probing only
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".clip.1234abcd.tmp.mp4").write_bytes(b"x")  # our own temporary output
    (tmp_path / "clip.partial.mp4").write_bytes(b"x")
    found = [(path.name, images.input_kind(path)) for path in images.iter_inputs(tmp_path)]
    assert found == [("a.PNG", "image"), ("b.jpg", "image"), ("camera.dat", "video"), ("clip.mp4", "video")]
    assert images.is_video(tmp_path / "camera.dat") and not images.is_video(tmp_path / "camera.dat", probe=False)
    assert not images.is_video(tmp_path / "notes.txt") and images.is_image("X.JPEG")
    assert list(images.iter_inputs(tmp_path / "clip.mp4")) == [tmp_path / "clip.mp4"]
    (tmp_path / "sub").mkdir()
    images.write_image(tmp_path / "sub" / "c.webp", load_photo("obama.jpg"))
    assert [p.name for p in images.iter_inputs(tmp_path, recursive=True)][-1] == "c.webp"
    assert "c.webp" not in [p.name for p in images.iter_inputs(tmp_path)]
    with pytest.raises(images.ImageError, match="no such file or folder"):
        list(images.iter_inputs(tmp_path / "absent"))
