"""Paste-back, colour transfer, landmark masks, the pixel-method blend, and fail-closed obscuring."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from styleid_edge.runtime import blend, fallback
from styleid_edge.runtime.blend import PasteConfig

# FFHQ-style 5-point layout as fractions of the crop (left eye, right eye, nose, mouth corners)
FFHQ5 = np.array([[0.3769, 0.4686], [0.6229, 0.4691], [0.5012, 0.6133], [0.3931, 0.7254], [0.6115, 0.7249]])


def smooth_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image (low-frequency content, values well inside 0..255)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(40, 215, size=(max(2, h // 64), max(2, w // 64), 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img, 0, 255).astype(np.uint8)


def crop_matrix(cx: float, cy: float, face_px: float, size: int, angle_deg: float = 0.0) -> np.ndarray:
    """Frame -> crop similarity putting a face_px-wide region centred at (cx, cy) into a size x size crop."""
    s = size / face_px
    a = np.deg2rad(angle_deg)
    r = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t = np.array([size / 2.0, size / 2.0]) - r @ np.array([cx, cy])
    return np.hstack([r, t[:, None]])


def frame_alpha(frame_shape, M, size, erode=0.10, feather=0.05) -> np.ndarray:
    """The default paste mask warped to the whole frame (reference computation, full-frame on purpose)."""
    mask = blend.default_paste_mask(size, erode, feather)
    return cv2.warpAffine(np.ascontiguousarray(mask), M, (frame_shape[1], frame_shape[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0.0)


def outside_roi(shape, roi) -> np.ndarray:
    keep = np.ones(shape[:2], bool)
    x0, y0, x1, y1 = roi
    keep[y0:y1, x0:x1] = False
    return keep


# ------------------------------------------------------------------------------------------------
# paste_back
@pytest.mark.parametrize("colour,size", [("none", 256), ("reinhard", 256), ("reinhard", 1024)])
def test_paste_back_roundtrip_reproduces_frame(colour, size):
    frame = smooth_frame(720, 1280)
    M = crop_matrix(640.4, 300.7, 180.0, size, angle_deg=12.0)  # 1024: a crop 5.7x its footprint
    crop = cv2.warpAffine(frame, M, (size, size), flags=cv2.INTER_LINEAR)
    out = frame.copy()
    ret = blend.paste_back(out, crop, M, config=PasteConfig(colour=colour))
    assert ret is out
    alpha = frame_alpha(frame.shape, M, size)
    inside = alpha > 0.99
    assert inside.sum() > 0.4 * 180 * 180  # the opaque part of the mask is most of the face
    err = np.abs(out.astype(np.int16) - frame.astype(np.int16))
    assert err[inside].mean() < 1.0
    assert err[inside].max() <= 6
    roi = blend.paste_roi(frame.shape, M, crop.shape)
    keep = outside_roi(frame.shape, roi)
    assert np.array_equal(out[keep], frame[keep])  # nothing outside the ROI is touched
    zero = frame_alpha(frame.shape, M, size, feather=0.08) == 0  # well outside the (resampled) mask
    assert zero.sum() > 0.9 * 720 * 1280
    assert np.array_equal(out[zero], frame[zero])  # zero alpha: exact pixels, even inside the ROI


def test_paste_back_replaces_face_and_feathers():
    frame = smooth_frame(480, 640, seed=1)
    M = crop_matrix(320, 240, 160.0, 256, angle_deg=-20.0)
    colour = np.array([30, 200, 90], np.uint8)
    crop = np.empty((256, 256, 3), np.uint8)
    crop[:] = colour
    out = frame.copy()
    blend.paste_back(out, crop, M, config=PasteConfig(colour="none"))
    alpha = frame_alpha(frame.shape, M, 256)
    full = alpha > 0.999
    assert full.sum() > 5000
    assert np.abs(out[full].astype(int) - colour).max() <= 1
    # the feather: alpha ~ 0.5 gives the mid-point of frame and crop
    half = (alpha > 0.45) & (alpha < 0.55)
    assert half.sum() > 100
    expected = frame[half].astype(np.float32) * (1 - alpha[half, None]) + colour * alpha[half, None]
    assert np.abs(out[half].astype(np.float32) - expected).max() <= 2.0  # 1.6x crop: area-downsampled first
    # the mask is eroded: the crop's outermost 5 % never shows
    ys, xs = np.nonzero(alpha > 0.01)
    inv = cv2.invertAffineTransform(M)
    corner = inv @ np.array([0.0, 0.0, 1.0])
    assert alpha[int(round(corner[1])), int(round(corner[0]))] < 1e-3


def test_paste_back_given_mask_and_reinhard_matches_frame_colour():
    size = 128
    frame = smooth_frame(480, 640, seed=2)
    M = crop_matrix(300, 200, 150.0, size)
    original = cv2.warpAffine(frame, M, (size, size))
    # a "generated" face with the right structure but a strong colour cast
    cast = np.clip(original.astype(np.int16) + np.array([50, -30, 20]), 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2, size // 2), size * 40 // 128, 255, -1)
    out = frame.copy()
    blend.paste_back(out, cast, M, mask=mask, config=PasteConfig(colour="reinhard"))
    a = cv2.warpAffine(mask, M, (640, 480), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) == 255
    assert a.sum() > 2000
    diff = out[a].astype(np.float32).mean(axis=0) - frame[a].astype(np.float32).mean(axis=0)
    assert np.abs(diff).max() < 3.0  # the cast is removed by the colour transfer
    out2 = frame.copy()
    blend.paste_back(out2, cast, M, mask=mask, config=PasteConfig(colour="none"))
    diff2 = out2[a].astype(np.float32).mean(axis=0) - frame[a].astype(np.float32).mean(axis=0)
    assert np.abs(diff2 - np.array([50, -30, 20])).max() < 3.0  # without it the cast stays
    # given mask used as is: outside the circle nothing changes
    ring = cv2.warpAffine(mask, M, (640, 480), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) == 0
    assert np.array_equal(out[ring], frame[ring])


def test_paste_back_of_a_512_crop_reads_colour_statistics_from_every_4th_pixel(monkeypatch):
    """A 512 px crop of a 400 px face (not shrunk first): the frame under the crop is sampled at every 4th row
    and column only; the pasted pixels stay within 2 grey levels of statistics over every pixel."""
    frame = smooth_frame(480, 640, seed=2)
    M = crop_matrix(300, 240, 400.0, 512)
    original = cv2.warpAffine(frame, M, (512, 512))
    cast = np.clip(original.astype(np.int16) + np.array([50, -30, 20]), 0, 255).astype(np.uint8)
    steps = []
    stats_step = blend.stats_step
    monkeypatch.setattr(blend, "stats_step", lambda hw: steps.append(hw) or stats_step(hw))
    sampled = blend.paste_back(frame.copy(), cast, M)
    assert steps[0] == (512, 512) and stats_step(steps[0]) == 4
    monkeypatch.setattr(blend, "stats_step", lambda hw: 1)
    full = blend.paste_back(frame.copy(), cast, M)
    pasted = np.any(full != frame, axis=2)
    assert pasted.sum() > 50_000  # the face went in, and the colour match took the cast (50 levels) out:
    assert np.abs(full[pasted].astype(np.float32).mean(axis=0) - frame[pasted].mean(axis=0)).max() < 8
    diff = np.abs(sampled.astype(np.int16) - full)
    assert diff.max() <= 2 and diff.mean() < 0.1


def _best_time(fn, repeats: int = 7) -> float:
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def test_paste_back_4k_small_face_is_cheap_and_local():
    rng = np.random.default_rng(3)
    frame4k = rng.integers(0, 256, size=(2160, 3840, 3), dtype=np.uint8)
    small = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    crop = smooth_frame(256, 256, seed=4)
    M4k = crop_matrix(3100.3, 1500.6, 120.0, 256, angle_deg=7.0)
    M480 = crop_matrix(320.3, 240.6, 120.0, 256, angle_deg=7.0)
    out = frame4k.copy()
    blend.paste_back(out, crop, M4k)
    roi = blend.paste_roi(frame4k.shape, M4k, crop.shape)
    x0, y0, x1, y1 = roi
    assert (x1 - x0) * (y1 - y0) < 0.003 * 2160 * 3840  # the ROI is the face, not the frame
    changed = np.any(out != frame4k, axis=2)
    ys, xs = np.nonzero(changed)
    assert len(ys) > 3000
    assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
    assert np.array_equal(out[outside_roi(out.shape, roi)], frame4k[outside_roi(out.shape, roi)])

    t4k = _best_time(lambda: blend.paste_back(frame4k, crop, M4k))
    t480 = _best_time(lambda: blend.paste_back(small, crop, M480))
    def naive_full_frame_paste():  # what paste_back avoids: warping and blending at frame size
        warped = cv2.warpAffine(crop, M4k, (3840, 2160), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        alpha = frame_alpha(frame4k.shape, M4k, 256)[..., None]
        return (frame4k * (1 - alpha) + warped * alpha).astype(np.uint8)

    t_naive = _best_time(naive_full_frame_paste, repeats=2)
    assert t4k < 0.05
    assert t4k < 3.0 * t480 + 0.002  # cost follows the face, not the frame
    assert t4k < t_naive / 5


def test_paste_back_face_half_outside_frame():
    frame = smooth_frame(480, 640, seed=5)
    M = crop_matrix(20.0, 240.0, 200.0, 256, angle_deg=5.0)  # face centre 20 px from the left edge
    crop = cv2.warpAffine(frame, M, (256, 256))  # the out-of-frame half is black
    out = frame.copy()
    blend.paste_back(out, crop, M, config=PasteConfig(colour="reinhard"))
    alpha = frame_alpha(frame.shape, M, 256)
    inside = alpha > 0.99
    assert inside.sum() > 3000
    err = np.abs(out.astype(np.int16) - frame.astype(np.int16))
    assert err[inside].mean() < 1.0  # black border excluded from the colour statistics
    roi = blend.paste_roi(frame.shape, M, crop.shape)
    assert roi[0] == 0 and roi[2] < 200
    # a solid replacement shows right up to the frame edge
    solid = np.full((256, 256, 3), (10, 240, 10), np.uint8)
    out2 = frame.copy()
    blend.paste_back(out2, solid, M, config=PasteConfig(colour="none"))
    assert np.abs(out2[240, 0].astype(int) - (10, 240, 10)).max() <= 1
    # entirely outside: a no-op, no error
    out3 = frame.copy()
    blend.paste_back(out3, solid, crop_matrix(-500.0, 240.0, 100.0, 256))
    assert np.array_equal(out3, frame)
    assert blend.paste_roi(frame.shape, crop_matrix(-500.0, 240.0, 100.0, 256), (256, 256)) is None


def test_paste_back_rejects_bad_input():
    frame = smooth_frame(64, 64)
    crop = smooth_frame(32, 32)
    with pytest.raises(ValueError):
        blend.paste_back(frame, crop, np.zeros((2, 3)))
    with pytest.raises(ValueError):
        blend.paste_back(frame, crop.astype(np.float32), crop_matrix(32, 32, 32, 32))
    with pytest.raises(ValueError):
        blend.paste_back(frame, crop, crop_matrix(32, 32, 32, 32), mask=np.ones((10, 10)))


# ------------------------------------------------------------------------------------------------
# colour transfer
def _lab_stats(img, mask):
    lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)[mask]
    return lab.mean(axis=0), lab.std(axis=0)


def test_reinhard_matches_lab_mean_and_std_inside_mask():
    rng = np.random.default_rng(6)
    noise = lambda s: cv2.GaussianBlur(rng.normal(0, s, (128, 128, 3)).astype(np.float32), (0, 0), 1.5)  # noqa: E731
    src = np.clip(np.array([100, 120, 140]) + noise(40), 0, 255).astype(np.uint8)
    ref = np.clip(np.array([90, 140, 170]) + noise(25), 0, 255).astype(np.uint8)
    mask = np.zeros((128, 128), np.uint8)
    cv2.circle(mask, (64, 64), 45, 255, -1)
    m = mask > 0
    out = blend.reinhard_lab(src, ref, mask)
    mu_o, sd_o = _lab_stats(out, m)
    mu_r, sd_r = _lab_stats(ref, m)
    mu_s, sd_s = _lab_stats(src, m)
    assert np.abs(mu_s - mu_r).max() > 5  # the test is not trivial
    assert np.abs(mu_o - mu_r).max() < 0.6
    assert np.abs(sd_o / sd_r - 1).max() < 0.05
    # statistics outside the mask are ignored: changing them changes nothing
    ref2 = ref.copy()
    ref2[~m] = 255
    assert np.array_equal(blend.reinhard_lab(src, ref2, mask), out)
    # identical images: identity up to rounding
    same = blend.reinhard_lab(ref, ref, mask)
    assert np.abs(same.astype(int) - ref).max() <= 1


def test_reinhard_statistics_from_every_kth_pixel_match_the_full_crop():
    """A 512 px crop: the statistics read every 4th row and column (1/16 of the colour conversions); the
    result stays within 2 grey levels of statistics over every pixel."""
    from pathlib import Path

    assert blend.stats_step((128, 128)) == 1 and blend.stats_step((512, 512)) == 4
    photo = cv2.imread(str(Path(__file__).parent / "data" / "photos" / "obama.jpg"))
    ref = cv2.resize(photo[: photo.shape[1]] if photo.shape[0] > photo.shape[1] else photo, (512, 512))
    src = np.clip(cv2.GaussianBlur(ref, (0, 0), 2).astype(np.int16) + np.array([40, -25, 15]), 0, 255)
    src = src.astype(np.uint8)
    mask = np.zeros((512, 512), np.uint8)
    cv2.ellipse(mask, (256, 270), (170, 220), 0, 0, 360, 255, -1)

    def lab(img):
        return cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)

    (mu_s, sd_s), (mu_r, sd_r) = [(x.reshape(-1), y.reshape(-1)) for x, y in
                                  (cv2.meanStdDev(lab(src), mask=mask), cv2.meanStdDev(lab(ref), mask=mask))]
    gain = np.clip(sd_r / sd_s, 0.25, 4.0)
    full = cv2.cvtColor(((lab(src) - mu_s) * gain + mu_r).astype(np.float32), cv2.COLOR_Lab2BGR)
    expected = np.clip(np.rint(np.clip(full, 0, 1) * 255), 0, 255).astype(np.uint8)
    got = blend.reinhard_lab(src, ref, mask)
    diff = np.abs(got.astype(int) - expected)
    assert np.abs(src.astype(int) - expected).mean() > 10  # the transfer does something
    assert diff.max() <= 2 and diff.mean() < 0.5


def test_histogram_match_matches_quantiles_inside_mask():
    rng = np.random.default_rng(7)
    src = rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    ref = np.clip(rng.normal([150, 90, 200], [20, 35, 10], size=(96, 96, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((96, 96), bool)
    mask[10:80, 20:90] = True
    out = blend.histogram_match(src, ref, mask)
    for c in range(3):
        q_out = np.percentile(out[..., c][mask], [10, 25, 50, 75, 90])
        q_ref = np.percentile(ref[..., c][mask], [10, 25, 50, 75, 90])
        assert np.abs(q_out - q_ref).max() <= 2.0
    # a monotone map: the order of source levels is kept
    order = np.argsort(src[..., 0][mask], kind="stable")
    assert np.all(np.diff(out[..., 0][mask][order].astype(int)) >= 0)


# ------------------------------------------------------------------------------------------------
# landmark masks and the inner-face blend
def _at(mask, pts):
    return np.array([mask[int(round(y)), int(round(x))] for x, y in pts])


def test_inner_face_mask_covers_features_and_excludes_hair_and_corners():
    size = 256
    lm = FFHQ5 * size
    mask = blend.inner_face_mask(lm, size)
    assert mask.shape == (size, size) and mask.dtype == np.float32
    assert _at(mask, lm).min() > 0.97  # eyes, nose, mouth corners
    d = lm[1, 0] - lm[0, 0]
    h = lm[3:, 1].mean() - lm[:2, 1].mean()
    brows = [(lm[0, 0], lm[0, 1] - 0.3 * h), (lm[1, 0], lm[1, 1] - 0.3 * h)]
    cheeks = [(lm[0, 0] - 0.2 * d, lm[0, 1] + 0.5 * h), (lm[1, 0] + 0.2 * d, lm[1, 1] + 0.5 * h)]
    lips = [(lm[2, 0], lm[3, 1] + 0.15 * h)]
    assert _at(mask, brows + cheeks + lips).min() > 0.9
    corners = [(0, 0), (size - 1, 0), (0, size - 1), (size - 1, size - 1)]
    assert _at(mask, corners).max() == 0.0
    assert mask[: int(0.25 * size)].max() < 0.05  # hair / upper forehead
    eye_row = int(lm[0, 1])
    assert mask[eye_row, : int(0.15 * size)].max() < 0.01  # left ear side
    assert mask[eye_row, int(0.85 * size):].max() < 0.01  # right ear side
    assert mask[int(0.95 * size):].max() < 0.01  # neck
    region = blend.face_region_mask(lm, size)
    assert _at(region, lm).min() > 0.97
    assert region.sum() > mask.sum()  # the colour-statistics oval is the larger one
    assert _at(region, corners).max() == 0.0


def test_inner_face_mask_follows_rotation_and_scales():
    size = 256
    lm = FFHQ5 * size
    rot = cv2.getRotationMatrix2D((128.0, 128.0), 30.0, 1.0)
    lm_r = lm @ rot[:, :2].T + rot[:, 2]
    mask = blend.inner_face_mask(lm, size)
    mask_r = blend.inner_face_mask(lm_r, size)
    expected = cv2.warpAffine(mask, rot, (size, size))
    inter = ((mask_r > 0.5) & (expected > 0.5)).sum()
    union = ((mask_r > 0.5) | (expected > 0.5)).sum()
    assert inter / union > 0.97
    assert _at(mask_r, lm_r).min() > 0.97
    # a 1024 px crop (drawn at a reduced working size) matches the 256 px mask
    big = blend.inner_face_mask(lm * 4, 1024)
    assert big.shape == (1024, 1024)
    assert np.abs(cv2.resize(big, (256, 256), interpolation=cv2.INTER_AREA) - mask).max() < 0.05


@pytest.mark.parametrize("colour", ["reinhard", "histogram"])
def test_blend_inner_face_keeps_outside_and_matches_colour(colour):
    size = 256
    lm = FFHQ5 * size
    source = smooth_frame(size, size, seed=8)
    texture = smooth_frame(size, size, seed=9)
    generated = np.clip(texture.astype(np.int16) + np.array([60, -40, 0]), 0, 255).astype(np.uint8)
    out = blend.blend_inner_face(source, generated, lm, blend.InnerBlendConfig(colour=colour))
    alpha = blend.inner_face_mask(lm, size)
    # hair, ears, neck, background: the source's exact pixels
    zero = alpha == 0
    assert zero.mean() > 0.5
    assert np.array_equal(out[zero], source[zero])
    # inside the inner face: the generated face's content, in the source's colours
    core = alpha > 0.99
    assert core.sum() > 4000
    region = blend.face_region_mask(lm, size) > 0.5
    gap_before = np.abs(generated[region].mean(0) - source[region].mean(0)).max()
    gap_after = np.abs(out[core].astype(np.float32).mean(0) - source[region].mean(0)).max()
    assert gap_before > 30 and gap_after < 15
    corr_gen = np.corrcoef(out[core][:, 1].astype(float), texture[core][:, 1].astype(float))[0, 1]
    corr_src = np.corrcoef(out[core][:, 1].astype(float), source[core][:, 1].astype(float))[0, 1]
    assert corr_gen > 0.9 and corr_gen > corr_src + 0.3
    # without colour matching the core is the generated crop itself
    plain = blend.blend_inner_face(source, generated, lm, blend.InnerBlendConfig(colour="none"))
    assert np.abs(plain[core].astype(int) - generated[core]).max() <= 1
    # a generated crop of another resolution is resized to the source's
    big = cv2.resize(generated, (512, 512), interpolation=cv2.INTER_CUBIC)
    out_big = blend.blend_inner_face(source, big, lm)
    assert out_big.shape == source.shape and np.array_equal(out_big[zero], source[zero])


# ------------------------------------------------------------------------------------------------
# fallback obscuring
@pytest.fixture()
def noise_frame():
    return np.random.default_rng(10).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)


@pytest.mark.parametrize("fn", [fallback.pixelate, fallback.blur])
def test_obscure_changes_whole_box_and_nothing_outside(noise_frame, fn):
    box = np.array([200.0, 150.0, 300.0, 270.0], np.float32)  # 100 x 120
    out = noise_frame.copy()
    region = fn(out, box)
    assert region == (175, 120, 325, 300)  # box + 25 % of its width / height each side
    changed = np.any(out != noise_frame, axis=2)
    assert changed[150:270, 200:300].all()  # every pixel of the face box
    assert changed[120:300, 175:325].mean() > 0.99
    keep = outside_roi(out.shape, region)
    assert np.array_equal(out[keep], noise_frame[keep])


def test_pixelate_block_count(noise_frame):
    out = noise_frame.copy()
    x0, y0, x1, y1 = fallback.pixelate(out, np.array([200, 100, 328, 228]), blocks=8)
    patch = out[y0:y1, x0:x1]
    assert patch.shape[:2] == (192, 192)
    colours = np.unique(patch.reshape(-1, 3), axis=0)
    assert len(colours) <= 64
    runs_per_row = 1 + np.any(np.diff(patch.astype(int), axis=1) != 0, axis=2).sum(axis=1)
    runs_per_col = 1 + np.any(np.diff(patch.astype(int), axis=0) != 0, axis=2).sum(axis=0)
    assert runs_per_row.max() <= 8 and runs_per_col.max() <= 8
    # tiles are the block means of the original
    block = noise_frame[y0:y0 + 24, x0:x0 + 24].reshape(-1, 3).mean(axis=0)
    assert np.abs(patch[0, 0].astype(float) - block).max() <= 1.0


@pytest.mark.parametrize("fn", [fallback.pixelate, fallback.blur])
def test_obscure_keeps_only_block_means(fn):
    """Two faces with the same block averages come out identical: no detail below a block survives."""
    rng = np.random.default_rng(11)
    a = rng.integers(30, 226, size=(480, 640, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:480, 0:640]
    checker = np.where((yy + xx) % 2 == 0, 25, -25)[..., None]  # zero mean over every 24 x 24 block
    b = (a.astype(np.int16) + checker).astype(np.uint8)
    box = np.array([200, 100, 328, 228])  # region 168..360 x 68..260, 8 x 8 blocks of 24 px
    fa, fb = a.copy(), b.copy()
    ra, rb = fn(fa, box, blocks=8), fn(fb, box, blocks=8)
    x0, y0, x1, y1 = ra
    assert ra == rb == (168, 68, 360, 260)
    assert np.abs(a[y0:y1, x0:x1].astype(int) - b[y0:y1, x0:x1]).mean() > 20  # very different faces...
    assert np.array_equal(fa[y0:y1, x0:x1], fb[y0:y1, x0:x1])  # ...same obscured output


def test_obscure_ellipse_and_edges(noise_frame):
    box = np.array([200, 150, 300, 270])
    out = noise_frame.copy()
    x0, y0, x1, y1 = fallback.pixelate(out, box, shape="ellipse")
    changed = np.any(out != noise_frame, axis=2)
    assert changed[150:270, 200:300].all()  # the ellipse contains the whole face box
    assert not changed[y0, x0] and not changed[y1 - 1, x1 - 1]  # region corners are outside the ellipse
    keep = outside_roi(out.shape, (x0, y0, x1, y1))
    assert np.array_equal(out[keep], noise_frame[keep])
    # a box half outside the frame is clipped, its visible part covered
    out2 = noise_frame.copy()
    region = fallback.blur(out2, np.array([-50.0, -40.0, 60.0, 80.0]))
    assert region == (0, 0, 88, 110)
    assert np.any(out2 != noise_frame, axis=2)[0:80, 0:60].all()
    # entirely outside: nothing to do
    out3 = noise_frame.copy()
    assert fallback.pixelate(out3, np.array([700, 10, 760, 70])) is None
    assert np.array_equal(out3, noise_frame)
    with pytest.raises(ValueError):
        fallback.pixelate(out3, np.array([np.nan, 0, 10, 10]))
