"""On-device batch augmentation: what each part does to digits, its RNG discipline, its config and flags."""

import pytest
import torch
import torch.nn.functional as F

from mnistkit.config import TrainConfig, option_help
from mnistkit.errors import ConfigError
from mnistkit.training.augment import (
    Augmentation,
    _max3x3,
    affine_grids,
    gaussian_blur,
    random_shift,
    random_thickness,
    warp,
)

FILL = -1.0  # the background after the tutorial normalisation


def _digits(n=8) -> torch.Tensor:
    """A batch of "digits": a bright bar on the background, ``[n, 1, 28, 28]``."""
    x = torch.full((n, 1, 28, 28), FILL)
    x[:, :, 6:22, 12:16] = 1.0
    return x


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "aug",
    [
        Augmentation(),
        Augmentation(shift=0, rotate=15, scale=0.2),
        Augmentation(shift=0, elastic=34),
        Augmentation(shift=0, thickness=1.0),
        Augmentation(shift=3, rotate=10, scale=0.1, elastic=34, thickness=0.5),
    ],
)
def test_each_part_keeps_shape_range_and_background(aug):
    x = _digits()
    out = aug(x, FILL, _gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= FILL - 1e-5 and out.max() <= 1.0 + 1e-5  # resampling never invents brighter ink
    blank = aug(torch.full_like(x, FILL), FILL, _gen())  # an empty page stays empty
    assert torch.allclose(blank, torch.full_like(x, FILL), atol=1e-5)
    assert not torch.equal(out, x)


def test_everything_off_is_the_identity_and_same_generator_same_batch():
    x = _digits()
    assert torch.equal(Augmentation(shift=0)(x, FILL, _gen()), x)
    aug = Augmentation(shift=2, rotate=10, scale=0.1, elastic=34, thickness=0.5)
    assert torch.equal(aug(x, FILL, _gen(5)), aug(x, FILL, _gen(5)))  # what makes resume bit-identical
    assert not torch.equal(aug(x, FILL, _gen(5)), aug(x, FILL, _gen(6)))


def test_shift_only_draws_exactly_what_the_original_augment_drew():
    """Old runs (``augment=True`` before the --aug-* options) replay the same random stream."""
    x = _digits()
    assert torch.equal(Augmentation()(x, FILL, _gen(3)), random_shift(x, 2, FILL, _gen(3)))


def test_rotation_turns_the_image_counter_clockwise_and_zero_is_the_identity():
    x = torch.full((1, 1, 28, 28), FILL)
    x[0, 0, 4:14, 13:15] = 1.0  # a bar from the top edge down to the centre
    one = torch.ones(1)
    assert torch.allclose(warp(x, affine_grids(torch.zeros(1), one, (28, 28)), FILL), x, atol=1e-5)
    turned = warp(x, affine_grids(torch.full((1,), 90.0), one, (28, 28)), FILL)[0, 0] > 0
    ys, xs = turned.nonzero(as_tuple=True)
    assert ys.min() >= 12 and ys.max() <= 15 and xs.max() <= 15 and xs.min() <= 5  # now centre -> left edge
    grown = warp(x, affine_grids(torch.zeros(1), torch.full((1,), 1.5), (28, 28)), FILL)[0, 0] > 0
    assert grown.nonzero()[:, 0].min() < 4  # scaled about the centre: the bar now reaches past row 4


def test_scaling_up_grows_the_ink_and_down_shrinks_it():
    x = _digits(64)
    big = Augmentation(shift=0, scale=0.4)(x, FILL, _gen())
    ink = (big > 0).flatten(1).sum(1).float()
    base = float((x[0] > 0).sum())
    assert ink.max() > 1.2 * base and ink.min() < 0.8 * base


def test_elastic_moves_ink_by_a_few_pixels_not_more():
    x = _digits(32)
    out = Augmentation(shift=0, elastic=34, elastic_sigma=4)(x, FILL, _gen())
    changed = (out - x).abs().flatten(1).amax(1)
    assert (changed > 0.1).all()  # every image is distorted...
    far = torch.zeros(28, 28, dtype=torch.bool)
    far[:, :6] = far[:, 22:] = True  # ...but no ink lands 8+ px away from the bar
    assert (out[:, 0][:, far] < 0).all()


def test_thickness_blends_between_erosion_and_dilation():
    x = _digits(256)
    out = random_thickness(x, 1.0, _gen())
    ink = (out + 1).flatten(1).sum(1)
    base = float((x[0] + 1).sum())
    assert ink.max() > 1.3 * base and ink.min() < 0.7 * base
    dil = _max3x3(x)
    assert torch.equal(dil, F.max_pool2d(x, 3, stride=1, padding=1))


def test_gaussian_blur_matches_a_separable_convolution():
    x = torch.rand(3, 28, 28, generator=_gen())
    r = 12
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1.0) / 4) ** 2)
    k = k / k.sum()
    ref = F.conv2d(F.conv2d(x.unsqueeze(1), k.view(1, 1, 1, -1), padding=(0, r)), k.view(1, 1, -1, 1), padding=(r, 0))
    assert torch.allclose(gaussian_blur(x, 4.0), ref.squeeze(1), atol=2e-3)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("aug_rotate", 90, r"aug_rotate must be a number in \[0, 45\] degrees, got 90"),
        ("aug_scale", -0.1, r"aug_scale must be a number in \[0, 0.5\]"),
        ("aug_elastic", float("nan"), r"aug_elastic must be a number in \[0, 100\] pixels, got nan"),
        ("aug_thickness", 1.5, r"aug_thickness must be a number in \[0, 1\]"),
        ("aug_elastic_sigma", 0, r"aug_elastic_sigma must be in \[0.5, 10\] pixels, got 0"),
        ("aug_shift", 2.5, r"aug_shift must be a whole number of pixels in \[0, 8\], got 2.5"),
    ],
)
def test_config_refuses_bad_strengths_naming_the_range(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value})


def test_from_config_is_none_when_augment_is_off():
    assert Augmentation.from_config(TrainConfig(aug_rotate=10)) is None
    a = Augmentation.from_config(TrainConfig(augment=True, aug_rotate=10, aug_thickness=0.3))
    assert (a.shift, a.rotate, a.thickness, a.elastic) == (2, 10, 0.3, 0)


def test_cli_flags_take_help_from_the_config_and_imply_augment(monkeypatch):
    from click.testing import CliRunner

    import mnistkit.training
    from mnistkit.cli import cli
    from mnistkit.config import resolve_config

    out = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output
    assert option_help("aug_elastic").split("  [")[0] in " ".join(out.split())
    asked = {}

    def fake_fit(config=None, **kw):  # the CLI's job ends at the options it hands to fit
        asked.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr(mnistkit.training, "fit", fake_fit)
    CliRunner().invoke(cli, ["train", "--model", "cnn", "--aug-rotate", "8", "--aug-elastic", "20"])
    cfg = resolve_config(**{k: v for k, v in asked.items() if k not in ("resume", "echo", "tensorboard", "progress")})
    assert cfg.augment is True and (cfg.aug_rotate, cfg.aug_elastic, cfg.aug_shift) == (8, 20, 2)
    CliRunner().invoke(cli, ["train", "--model", "cnn", "--aug-rotate", "8", "--no-augment"])
    assert asked["augment"] is False  # an explicit --no-augment wins over the strengths
    monkeypatch.undo()  # the real fit: the config refuses the value before loading any data
    res = CliRunner().invoke(cli, ["train", "--aug-rotate", "99"])
    assert res.exit_code != 0 and "aug_rotate must be a number in [0, 45] degrees, got 99" in str(res.exception)
