"""Image explanations: the patch faithfulness measure tells a right map from a wrong one, the
methods find the pixels a model reads, and the randomisation cascade walks a CNN's layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from glasswork.explain.pixels import agreement, explain_pixels, faithfulness_pixels, patch_scores
from glasswork.explain.sanity import cascade, randomisation_check
from glasswork.models.cnn import SmallCNN


class _Split(nn.Module):
    """A 1x1 conv to two channels: the top-left 4 x 4 corner's pixels, and all the others."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        mask = torch.zeros(1, 2, 16, 16)
        mask[:, 0, :4, :4] = 1
        mask[:, 1] = 1 - mask[:, 0]
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.mask


class CornerModel(nn.Module):
    """Two classes; class 1's logit is 4 x the mean of the top-left corner: the model reads
    nothing else. Its only layer is a conv, so Grad-CAM has channels to weigh."""

    def __init__(self):
        super().__init__()
        self.last_conv = _Split()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        corner = self.last_conv(pixel_values)[:, 0].sum((1, 2)) / 16
        return torch.stack([torch.zeros_like(corner), 4 * corner], dim=1)


def _images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 1, 16, 16), generator=torch.Generator().manual_seed(seed)) + 0.5


def test_patch_scores_sum_squares_in_row_order():
    scores = np.arange(16, dtype=float).reshape(1, 4, 4)
    assert patch_scores(scores, 2).tolist() == [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    assert patch_scores(np.ones((1, 5, 5)), 2).tolist() == [[4, 4, 2, 4, 4, 2, 2, 2, 1]]  # edge squares smaller


def test_faithfulness_ranks_the_right_map_above_chance_and_the_wrong_one_below():
    model, x = CornerModel(), _images()
    right = np.zeros((8, 16, 16))
    right[:, :4, :4] = 1.0  # the corner the model reads
    wrong = 1.0 - right  # everything but it
    metrics = faithfulness_pixels(model, x, [1] * 8, {"right": right, "wrong": wrong}, [0.05, 0.1], patch=4, seed=0)
    # 16 patches: 5% and 10% are one and two patches, the corner first for "right".
    assert metrics["right/comprehensiveness_aopc"] > metrics["right/random_comprehensiveness_aopc"] + 0.1
    assert metrics["wrong/comprehensiveness_aopc"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["right/sufficiency_aopc"] == pytest.approx(0.0, abs=1e-6)  # the corner alone keeps it all
    assert metrics["wrong/sufficiency_aopc"] > metrics["wrong/random_sufficiency_aopc"]
    assert metrics["right/comprehensiveness_gain"] > 0 > metrics["wrong/comprehensiveness_gain"]


@pytest.mark.parametrize("method", ["integrated_gradients", "grad_cam", "occlusion"])
def test_each_method_finds_the_corner_the_model_reads(method):
    model, x = CornerModel(), _images(4)
    scores = explain_pixels(model, x, [1] * 4, [method], n_steps=8, patch=4)[method]
    assert scores.shape == (4, 16, 16)
    inside, outside = np.abs(scores[:, :4, :4]).mean(), np.abs(scores[:, 6:, 6:]).mean()
    assert inside > 5 * outside + 1e-6, (method, inside, outside)


def test_agreement_is_one_for_the_same_maps_and_falls_for_others():
    a = np.random.default_rng(0).normal(size=(3, 8, 8))
    assert agreement(a, a) == pytest.approx(1.0)
    assert agreement(a, -a) == pytest.approx(-1.0)
    assert agreement(a, -a, absolute=True) == pytest.approx(1.0)
    assert abs(agreement(a, np.random.default_rng(1).normal(size=(3, 8, 8)))) < 0.2


def test_the_cascade_walks_a_cnn_from_the_classifier_down_and_its_maps_part_from_the_trained_ones():
    torch.manual_seed(0)
    net = SmallCNN(3, image_size=(16, 16), channels=(4, 8), hidden=16).eval()
    assert [name for name, _ in cascade(net)] == ["classifier", "dense", "conv 2", "conv 1"]
    x = _images(16)
    targets = net(x).argmax(-1).tolist()

    def explain_with(model):
        return explain_pixels(model, x, targets, ["integrated_gradients"], n_steps=8)

    metrics, curves = randomisation_check(net, explain_with, agreement, seed=0, max_spearman=0.5)
    assert list(curves["integrated_gradients"]) == ["classifier", "dense", "conv 2", "conv 1"]
    assert metrics["integrated_gradients/randomisation_spearman"] < 0.9  # every layer random
    assert set(metrics) >= {
        "integrated_gradients/randomisation_passed",
        "integrated_gradients/randomisation_spearman_4",
    }


def test_explanation_drift_descriptors_say_where_the_evidence_lies():
    from glasswork.explain.pixel_drift import mean_map, saliency_descriptors

    pixels = torch.zeros((3, 1, 8, 8), dtype=torch.uint8)
    pixels[:, :, 2:6, 2:6] = 200  # a bright square in the middle of a black background
    maps = np.zeros((3, 8, 8))
    maps[0, 0, 0] = 1.0  # all on one background corner pixel
    maps[1, 2:6, 2:6] = 1.0  # spread evenly over the object, which is the centre
    maps[2] = 1.0  # spread evenly over the whole image
    found = saliency_descriptors(maps, pixels)
    assert found["on_background"] == pytest.approx([1.0, 0.0, 48 / 64])
    assert found["in_centre"] == pytest.approx([0.0, 1.0, 16 / 64])
    # The top 10% (6 of 64 pixels) hold everything of one pixel, 6 of 16 and 6 of 64.
    assert found["top_decile"] == pytest.approx([1.0, 6 / 16, 6 / 64])
    mean = mean_map(maps)
    assert mean.sum() == pytest.approx(1.0) and mean[0, 0] == pytest.approx(1 / 3 + 1 / 192)
