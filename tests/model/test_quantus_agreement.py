"""Our image faithfulness figures against Quantus 0.6's on the same model, images and maps.

What is compared (a SmallCNN trained for a second on synthetic images, 8 probe images of
16 x 16, integrated-gradients maps, 4 x 4 patches: 16 of them):

- **deletion** (our comprehensiveness at ``k`` of 16 patches) is ``quantus.RegionPerturbation``
  with ``order="morf"``, ``perturb_baseline=0.0`` (the normalised training mean, which is what our
  patches are set to; Quantus's default "black" is each image's minimum) and ``softmax=True``
  (the predicted class's probability, as ours): its curve after ``k`` patches. It is also
  ``p(x)`` minus ``quantus.Selectivity``'s curve, and, with 1 x 1 patches, ``p(x)`` minus
  ``quantus.PixelFlipping``'s;
- **insertion** (our sufficiency: only the top ``k`` patches kept on the baseline) is
  RegionPerturbation with ``order="lerf"`` after the ``16 - k`` least relevant patches are deleted;
- **random order**: Quantus's ``order="random"`` draws from numpy's global generator, ours from
  ``default_rng(seed)``, so the same orders are handed to Quantus as maps that rank the patches in
  our order;
- **AOPC**: Quantus 0.6 reports the curve, not an AOPC (its ``get_auc_score`` is a trapezoid
  area and calls ``np.trapz``, gone from numpy 2.4). Samek et al.'s AOPC after ``L`` patches is
  ``sum_{k=0..L} drop_k / (L + 1)``; ours is the mean of the curve at the fractions asked for
  (ERASER's bins by default). Both are checked as functions of the one curve;
- **cascading randomisation**: ``quantus.MPRT`` (``layer_order="top_down"``, Spearman of the
  absolute maps). Its layers are the modules with ``reset_parameters`` (a conv and its batch norm
  separately) and it re-seeds ``torch.manual_seed(seed + 1)`` before each, where ours goes by
  stages (``SmallCNN.cascade``) from one seed: the weights drawn differ, so the figures are
  compared on the models Quantus randomised, at the layers that close each of our stages;
- **agreement between methods**: our :func:`agreement` is the mean of Quantus's
  ``correlation_spearman`` over images.

Tolerance: 1e-6 on probabilities. Both sides run the same float32 forward pass on the same
perturbed images (0.0 written into the same pixels), so they agree to the last bit here; 1e-6
(about 8 float32 steps at 1.0) leaves room for a BLAS that sums a batch in another order. The
drops compared reach 0.5 and more, so a wrong patch, baseline or target shows up far above it
(``test_the_comparison_fails_when_a_setting_differs``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import quantus
import torch
from quantus.helpers.model.pytorch_model import PyTorchModel

from glasswork.explain.faithfulness import ERASER_BINS
from glasswork.explain.pixels import _by_image, _probabilities, agreement, explain_pixels, faithfulness_pixels
from glasswork.explain.sanity import cascade
from glasswork.models.cnn import SmallCNN

SIDE, PATCH = 16, 4
N_PATCHES = (SIDE // PATCH) ** 2  # 16
STEPS = [k / N_PATCHES for k in range(1, N_PATCHES)]  # every step but the last: 1/16 ... 15/16 (exact in binary)
ATOL = 1e-6


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise with a bright 4 x 4 square in one of four places; the label is the place."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 1, SIDE, SIDE, generator=g)
    for i, label in enumerate(labels.tolist()):
        r, c = divmod(label, 2)
        x[i, 0, r * 8 + 2 : r * 8 + 6, c * 8 + 2 : c * 8 + 6] += 1.5
    return x, labels


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(0)
    net = SmallCNN(4, image_size=(SIDE, SIDE), channels=(4, 8), hidden=16)
    x, y = _images(256, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for step in range(25):
        batch = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        loss = torch.nn.functional.cross_entropy(net(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    pixels, _ = _images(8, seed=1)
    with torch.no_grad():
        targets = net(pixels).argmax(-1).tolist()
    scores = explain_pixels(net, pixels, targets, ["integrated_gradients"], n_steps=16)["integrated_gradients"]
    return net, pixels, targets, scores


def _ours(net, pixels, targets, scores, fractions, *, patch=PATCH, n_random=1, seed=0):
    """Per image and fraction: our deletion and insertion drops, and the random order's."""
    methods, chance = _by_image(net, pixels, targets, {"m": scores}, fractions, patch, n_random, seed)

    def curve(found, key):
        return np.stack([found[f"{key}_top{f:g}"] for f in fractions], axis=1)

    return {
        "deletion": curve(methods["m"], "comprehensiveness"),
        "insertion": curve(methods["m"], "sufficiency"),
        "random_deletion": curve(chance, "random_comprehensiveness"),
        "random_insertion": curve(chance, "random_sufficiency"),
    }


def _region_perturbation(net, pixels, targets, scores, *, order="morf", baseline=0.0, patch=PATCH, softmax=True):
    """Quantus's drop ``p(x) - p(x with the first k patches deleted)`` for k = 1 .. 15: ``(N, 15)``."""
    metric = quantus.RegionPerturbation(
        patch_size=patch,
        order=order,
        regions_evaluation=N_PATCHES - 1,
        abs=False,  # ours ranks patches by their signed sum
        normalise=False,  # a division by the max would not change the order; off to keep the sums bit-equal
        perturb_baseline=baseline,
        disable_warnings=True,
    )
    curves = metric(
        model=net,
        x_batch=pixels.numpy(),
        y_batch=np.array(targets),
        a_batch=scores[:, None],
        channel_first=True,
        softmax=softmax,
        device="cpu",
    )
    return np.asarray(curves, dtype=np.float64)


def test_deletion_curve_and_aopc_equal_quantus_region_perturbation(probe):
    net, pixels, targets, scores = probe
    ours = _ours(net, pixels, targets, scores, STEPS)["deletion"]
    theirs = _region_perturbation(net, pixels, targets, scores, order="morf")
    assert theirs.shape == ours.shape == (8, N_PATCHES - 1)
    assert ours.max() > 0.5  # the top patches carry the prediction: far above the tolerance
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=ATOL)

    # Selectivity (Montavon et al.) is the same deletion, reported as p(perturbed): all 16 patches.
    selectivity = quantus.Selectivity(patch_size=PATCH, abs=False, normalise=False, perturb_baseline=0.0,
                                      disable_warnings=True)  # fmt: skip
    left = np.asarray(selectivity(model=net, x_batch=pixels.numpy(), y_batch=np.array(targets),
                                  a_batch=scores[:, None], channel_first=True, softmax=True, device="cpu"))  # fmt: skip
    full = _probabilities(net, pixels, torch.as_tensor(targets))
    np.testing.assert_allclose(full[:, None] - left[:, : N_PATCHES - 1], ours, rtol=0, atol=ATOL)

    # AOPC. Samek et al.'s over L = 15 steps counts step 0 (no drop): 15/16 of our mean over the 15 steps.
    samek = theirs.sum(1) / N_PATCHES
    np.testing.assert_allclose(samek, ours.mean(1) * (N_PATCHES - 1) / N_PATCHES, rtol=0, atol=ATOL)
    # Ours with ERASER's bins: the curve read at ceil(f * 16) patches (1, 1, 2, 4, 8), averaged.
    metrics = faithfulness_pixels(net, pixels, targets, {"ig": scores}, list(ERASER_BINS), patch=PATCH, n_random=1)
    at = [max(1, math.ceil(f * N_PATCHES)) - 1 for f in ERASER_BINS]
    assert metrics["ig/comprehensiveness_aopc"] == pytest.approx(theirs[:, at].mean(), abs=ATOL)


def test_insertion_curve_equals_quantus_least_relevant_first(probe):
    """Keeping the top k patches alone is deleting the 16 - k least relevant ones."""
    net, pixels, targets, scores = probe
    ours = _ours(net, pixels, targets, scores, STEPS)["insertion"]  # k = 1 .. 15 kept
    theirs = _region_perturbation(net, pixels, targets, scores, order="lerf")  # j = 1 .. 15 deleted
    assert np.ptp(ours) > 0.3
    np.testing.assert_allclose(ours, theirs[:, ::-1], rtol=0, atol=ATOL)  # k kept <-> 16 - k deleted


def _order_as_map(orders: np.ndarray) -> np.ndarray:
    """``(N, 16)`` patch orders as ``(N, 16, 16)`` maps whose patch sums rank the patches so."""
    per_row = SIDE // PATCH
    maps = np.zeros((len(orders), SIDE, SIDE))
    for i, order in enumerate(orders):
        for rank, p in enumerate(order):
            r, c = divmod(int(p), per_row)
            maps[i, r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH] = N_PATCHES - rank
    return maps


def test_random_order_equals_quantus_on_the_same_order(probe):
    net, pixels, targets, scores = probe
    ours = _ours(net, pixels, targets, scores, STEPS, n_random=1, seed=3)
    rng = np.random.default_rng(3)  # as pixels._by_image draws its one random order per image
    orders = np.stack([rng.permutation(N_PATCHES) for _ in range(len(pixels))])
    as_map = _order_as_map(orders)
    np.testing.assert_allclose(
        ours["random_deletion"], _region_perturbation(net, pixels, targets, as_map, order="morf"), rtol=0, atol=ATOL
    )
    np.testing.assert_allclose(
        ours["random_insertion"],
        _region_perturbation(net, pixels, targets, as_map, order="lerf")[:, ::-1],
        rtol=0,
        atol=ATOL,
    )
    # Most relevant first deletes faster than a random order: the gain the report shows.
    assert ours["deletion"].mean() > ours["random_deletion"].mean() + 0.1


def test_pixel_deletion_equals_quantus_pixel_flipping(probe):
    """With 1 x 1 patches ours is pixel flipping (Bach et al.), 16 pixels a step."""
    net, pixels, targets, scores = probe
    fractions = [k / N_PATCHES for k in range(1, N_PATCHES + 1)]  # 16, 32, ... 256 pixels
    ours = _ours(net, pixels, targets, scores, fractions, patch=1)["deletion"]
    flipping = quantus.PixelFlipping(features_in_step=SIDE * SIDE // N_PATCHES, abs=False, normalise=False,
                                     perturb_baseline=0.0, disable_warnings=True)  # fmt: skip
    left = np.asarray(flipping(model=net, x_batch=pixels.numpy(), y_batch=np.array(targets), a_batch=scores[:, None],
                               channel_first=True, softmax=True, device="cpu"))  # fmt: skip
    full = _probabilities(net, pixels, torch.as_tensor(targets))
    assert ours.max() > 0.5
    np.testing.assert_allclose(ours, full[:, None] - left, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "setting",
    [
        {"baseline": "black"},  # Quantus's default: each image's minimum, not the training mean
        {"order": "lerf"},  # least relevant first
        {"patch": 2},  # 2 x 2 patches (64 of them, 15 steps)
        {"softmax": False},  # the logit, not the probability
        {"shuffled": True},  # the maps of other images
    ],
    ids=lambda s: next(iter(s)),
)
def test_the_comparison_fails_when_a_setting_differs(probe, setting):
    """The agreement above is not true by construction: each setting moves Quantus's figure far
    past the tolerance."""
    net, pixels, targets, scores = probe
    ours = _ours(net, pixels, targets, scores, STEPS)["deletion"]
    setting = dict(setting)
    maps = np.roll(scores, 1, axis=0) if setting.pop("shuffled", False) else scores
    theirs = _region_perturbation(net, pixels, targets, maps, **setting)
    assert np.abs(ours - theirs).max() > 0.05


def test_agreement_between_methods_equals_quantus_spearman(probe):
    """Per image, our Spearman of two methods' absolute maps is Quantus's ``correlation_spearman``.
    One convention differs: a constant map (Grad-CAM's positive part can be all zero) gives NaN
    in Quantus and 0.0 in ours, so such images count as "no agreement" in our mean."""
    net, pixels, targets, scores = probe
    other = explain_pixels(net, pixels, targets, ["grad_cam", "occlusion"], patch=PATCH)
    flat = lambda a: np.abs(a).reshape(len(a), -1)  # noqa: E731
    compared = 0
    for maps in other.values():
        with np.errstate(invalid="ignore", divide="ignore"):
            theirs = quantus.similarity_func.correlation_spearman(flat(scores), flat(maps), batched=True)
        ours = np.array([agreement(scores[i : i + 1], maps[i : i + 1], absolute=True) for i in range(len(maps))])
        constant = np.ptp(flat(maps), axis=1) == 0
        assert np.isnan(theirs[constant]).all() and (ours[constant] == 0).all()
        np.testing.assert_allclose(ours[~constant], theirs[~constant], rtol=0, atol=1e-12)
        assert agreement(scores, maps, absolute=True) == pytest.approx(float(np.nan_to_num(theirs).mean()), abs=1e-12)
        compared += int((~constant).sum())
    assert compared >= 8
    signed = quantus.similarity_func.correlation_spearman(scores.reshape(8, -1), -scores.reshape(8, -1), batched=True)
    assert agreement(scores, -scores) == pytest.approx(float(np.mean(signed))) == pytest.approx(-1.0)


def test_cascading_randomisation_equals_quantus_mprt_at_our_stages(probe):
    net, pixels, targets, scores = probe
    pixels, targets = pixels[:4], targets[:4]

    def integrated_gradients(model, inputs, targets, **_):
        found = explain_pixels(model, torch.as_tensor(inputs), [int(t) for t in targets], ["integrated_gradients"],
                               n_steps=8)  # fmt: skip
        return found["integrated_gradients"][:, None]

    mprt = quantus.MPRT(layer_order="top_down", seed=7, abs=True, normalise=False, disable_warnings=True)
    theirs = mprt(model=net, x_batch=pixels.numpy(), y_batch=np.array(targets), a_batch=None, channel_first=True,
                  explain_func=integrated_gradients, device="cpu")  # fmt: skip

    # The same layers, top down; each of our stages closes at the layer where its last module goes.
    stages = cascade(net)
    names = {id(m): name for name, m in net.named_modules()}
    layers = [name for name in theirs if name != "original"]
    assert layers == ["classifier.1", "head.2", "features.1.1", "features.1.0", "features.0.1", "features.0.0"]
    randomised, closing = set(), {}
    for stage, modules in stages:
        randomised |= {names[id(part)] for m in modules for part in m.modules() if hasattr(part, "reset_parameters")}
        # The layer after which Quantus has randomised exactly what we have after this stage.
        closing[stage] = next(layer for i, layer in enumerate(layers) if set(layers[: i + 1]) == randomised)
    assert closing == {
        "classifier": "classifier.1",
        "dense": "head.2",
        "conv 2": "features.1.0",
        "conv 1": "features.0.0",
    }

    trained = integrated_gradients(net, pixels.numpy(), targets)[:, 0]
    wrapped = PyTorchModel(net, channel_first=True, softmax=False, device="cpu")
    figures = {}
    for layer, model in wrapped.get_random_layer_generator(order="top_down", seed=7):
        if layer in closing.values():
            ours = agreement(trained, integrated_gradients(model, pixels.numpy(), targets)[:, 0], absolute=True)
            figures[layer] = ours
            assert ours == pytest.approx(float(np.mean(theirs[layer])), abs=1e-9), layer
    assert figures["features.0.0"] < figures["classifier.1"]  # the maps part from the trained ones
