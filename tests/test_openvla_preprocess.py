"""LIBERO frame preprocessing (the official TF steps, done without TF) and the action <-> token mapping."""
import io
import math

import numpy as np
import pytest
from PIL import Image

from vla_pruner.models import preprocess
from evaluate.envs.libero_conventions import gripper_to_env, libero_image
from vla_pruner.models.openvla.action_tokenizer import ActionTokenizer, select_action_stats, unnormalize


@pytest.fixture
def frame():
    """A LIBERO-like 256x256 frame: smooth gradients plus texture (JPEG and resampling both act on it)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:256]
    base = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.float64)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def reference_lanczos(image, size):
    """Independent, loop-per-pixel Lanczos-3 with antialiasing (TF rule: support 3*scale around (i+0.5)*scale)."""
    def weights(n_in):
        scale = n_in / size
        rows = []
        for i in range(size):
            center = (i + 0.5) * scale
            w = np.zeros(n_in)
            for j in range(n_in):
                d = abs(j + 0.5 - center) / scale
                w[j] = 1.0 if d == 0 else (np.sinc(d) * np.sinc(d / 3) if d < 3 else 0.0)
            rows.append(w / w.sum())
        return np.array(rows)
    wy, wx = weights(image.shape[0]), weights(image.shape[1])
    out = np.stack([wy @ image[..., c].astype(np.float64) @ wx.T for c in range(3)], axis=-1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def reference_crop(image, area=0.9):
    """Independent crop_and_resize: bilinear samples of the centred box, corners on the box corners."""
    h, w = image.shape[:2]
    side = math.sqrt(area)
    y1, x1 = (1 - side) / 2, (1 - side) / 2
    out = np.zeros(image.shape)
    src = image.astype(np.float64) / 255.0
    for i in range(h):
        yy = y1 * (h - 1) + i * side * (h - 1) / (h - 1)
        y0, fy = int(np.floor(yy)), yy - np.floor(yy)
        for j in range(w):
            xx = x1 * (w - 1) + j * side * (w - 1) / (w - 1)
            x0, fx = int(np.floor(xx)), xx - np.floor(xx)
            top = src[y0, x0] * (1 - fx) + src[y0, min(x0 + 1, w - 1)] * fx
            bottom = src[min(y0 + 1, h - 1), x0] * (1 - fx) + src[min(y0 + 1, h - 1), min(x0 + 1, w - 1)] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return np.minimum(np.floor(out * 255.5), 255).astype(np.uint8)


def test_lanczos_resize_matches_independent_reference(frame):
    ours = preprocess.resize_lanczos(frame, 224)
    diff = np.abs(ours.astype(int) - reference_lanczos(frame, 224))
    assert ours.shape == (224, 224, 3) and diff.max() <= 1 and diff.mean() < 0.01


def test_lanczos_resize_is_close_to_pillow(frame):
    pillow = np.asarray(Image.fromarray(frame).resize((224, 224), Image.Resampling.LANCZOS))
    assert np.abs(preprocess.resize_lanczos(frame, 224).astype(int) - pillow).mean() < 0.6


def test_center_crop_matches_independent_reference(frame):
    image = frame[:224, :224]
    diff = np.abs(preprocess.center_crop_resize(image).astype(int) - reference_crop(image))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_center_crop_of_a_ramp_samples_the_central_box():
    ramp = np.repeat(np.repeat(np.arange(224, dtype=np.uint8)[None, :, None], 224, 0), 3, 2)
    out = preprocess.center_crop_resize(ramp).astype(float)[0, :, 0]
    start = (1 - math.sqrt(0.9)) / 2 * 223
    expected = start + np.arange(224) * math.sqrt(0.9)  # pixel value = its column index
    assert np.abs(out - np.floor(expected / 255 * 255.5)).max() <= 1


def test_jpeg_roundtrip_decodes_with_the_fast_dct(frame):
    """TF decodes with libjpeg's fast integer DCT; Pillow's default (accurate) decode must not be what we do."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
    accurate = np.asarray(Image.open(buffer).convert("RGB")).astype(int)
    ours = preprocess.jpeg_roundtrip(frame).astype(int)
    assert ours.shape == frame.shape and np.abs(ours - frame).mean() < 10
    assert np.abs(ours - accurate).mean() > 0.05


def test_libero_image_chains_the_steps(frame):
    expected = preprocess.center_crop_resize(preprocess.resize_lanczos(
        preprocess.jpeg_roundtrip(frame[::-1, ::-1]), 224))
    out = libero_image(frame)
    assert out.dtype == np.uint8 and out.shape == (224, 224, 3) and np.array_equal(out, expected)


def test_action_tokens_map_to_bin_centres():
    tokenizer = ActionTokenizer(32000, 256)
    assert len(tokenizer.bin_centers) == 255
    assert np.isclose(tokenizer.normalized(31999), -1 + 1 / 255)  # first bin centre
    assert np.isclose(tokenizer.normalized(31745), 1 - 1 / 255)  # last bin centre
    assert tokenizer.normalized(31744) == tokenizer.normalized(31745)  # clipped into the last bin
    assert tokenizer.normalized(32000) == tokenizer.normalized(31999)


def test_unnormalize_respects_mask_and_key_fallback():
    stats = {"libero_spatial_no_noops": {"action": {"q01": [-2.0, 0.0], "q99": [2.0, 1.0], "mask": [True, False]}}}
    chosen = select_action_stats(stats, "libero_spatial")
    assert np.allclose(unnormalize(np.array([0.5, 0.5]), chosen), [1.0, 0.5])
    with pytest.raises(ValueError, match="no action statistics for 'libero_goal'"):
        select_action_stats(stats, "libero_goal")


def test_gripper_maps_open_close_to_env_convention():
    actions = np.array([[0.1] * 6 + [0.9], [0.1] * 6 + [0.1]])
    out = gripper_to_env(actions)
    assert out[0, -1] == -1.0 and out[1, -1] == 1.0 and np.array_equal(out[:, :6], actions[:, :6])


def test_image_processor_resizes_other_sizes_bicubic_then_normalises(frame):
    from vla_pruner.models.openvla.processor import ImageProcessor
    from vla_pruner.models.openvla.tiny import PREPROCESSOR_CONFIG

    pixels = ImageProcessor.from_config(PREPROCESSOR_CONFIG)(Image.fromarray(frame))
    resized = np.asarray(Image.fromarray(frame).resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    assert pixels.shape == (1, 6, 224, 224)
    assert np.allclose(pixels[0, 3:].numpy(), ((resized - 0.5) / 0.5).transpose(2, 0, 1), atol=1e-6)


@pytest.fixture
def image_processor():
    from vla_pruner.models.openvla.processor import ImageProcessor
    from vla_pruner.models.openvla.tiny import PREPROCESSOR_CONFIG

    return ImageProcessor.from_config(PREPROCESSOR_CONFIG)


def test_image_processor_takes_uint8_arrays_as_pil_images(frame, image_processor):
    flipped = frame[::-1, ::-1]  # a strided view, as LIBERO frames are flipped
    assert np.array_equal(image_processor(flipped).numpy(), image_processor(Image.fromarray(flipped.copy())).numpy())


def test_float_image_in_unit_range_is_scaled_not_black(frame, image_processor):
    as_float = frame.astype(np.float32) / 255.0
    pixels = image_processor(as_float)
    assert np.array_equal(pixels.numpy(), image_processor(frame).numpy())
    rounding = np.full((224, 224, 3), 0.5, dtype=np.float64)  # 127.5 rounds to 128
    assert np.array_equal(image_processor(rounding).numpy(),
                          image_processor(np.full((224, 224, 3), 128, dtype=np.uint8)).numpy())


@pytest.mark.parametrize("image, message", [
    (np.zeros((224, 224), np.uint8), r"HxWx3.*got shape \(224, 224\)"),
    (np.zeros((3, 224, 224), np.uint8), r"HxWx3.*got shape \(3, 224, 224\)"),
    (np.zeros((224, 224, 4), np.uint8), r"HxWx3.*got shape \(224, 224, 4\)"),
    (np.zeros((224, 224, 3), np.int64), "dtype int64 is not supported"),
    (np.zeros((224, 224, 3), bool), "dtype bool is not supported"),
    (np.full((224, 224, 3), 200.0), r"float \(float64\) array must hold values in \[0, 1\], got \[200, 200\]"),
    (np.full((224, 224, 3), np.nan, np.float32), "NaN or inf"),
    (Image.new("F", (224, 224), 0.5), "PIL mode 'F' is not 8-bit"),
    (Image.new("I;16", (224, 224), 300), "PIL mode 'I;16' is not 8-bit"),
    ([[0, 0, 0]], "PIL image or an HxWx3 numpy array, got list"),
])
def test_image_processor_refuses_other_images_naming_them(image, message, image_processor):
    with pytest.raises(ValueError, match=message):
        image_processor(image)
