"""Loading the pretrained backbone."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from glasswork.models.backbone import build_model


def test_weights_stored_in_half_precision_are_trained_in_fp32(tmp_path, cfg_factory):
    """A model folder saved in fp16 (as shipped to GPU workers to halve its size) must still give
    fp32 master weights: in fp16, AdamW's small updates round away."""
    tiny = cfg_factory(["debug=fast"]).model
    build_model(tiny, 2).half().save_pretrained(tmp_path)
    pretrained = OmegaConf.merge(tiny, {"random_init": None, "dir": str(tmp_path)})
    assert {p.dtype for p in build_model(pretrained, 2).parameters()} == {torch.float32}
    # A random initialisation shaped after that folder's config (which says fp16) too.
    reshaped = OmegaConf.merge(tiny, {"dir": str(tmp_path)})
    assert {p.dtype for p in build_model(reshaped, 2).parameters()} == {torch.float32}
