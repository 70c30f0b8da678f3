"""Training-time augmentation of model inputs, on each training batch (recipe table ``[train.augment]``).

For spectrogram-like inputs (C, T, F) — time on the second-to-last axis, features on the last, as the MFCC of
``spoken_keywords`` (1, 49, 10) — it offers a random time shift (vacated frames repeat the edge frame),
SpecAugment's time and feature masks (masked values set to 0, the training mean after normalization),
Gaussian noise (in units of the normalized input, for any input shape) and, for MFCC inputs, a random
frequency stretch of the spectrum done in the cepstral domain (vocal-tract-length perturbation: a 10 x 10
matrix per warp factor, :func:`tinyprec.data.mfcc.warp_matrix`). All off by default; the validation
and test splits are never augmented. Draws come from a generator seeded with (recipe seed, epoch), so a run
is reproducible and a resumed run draws what an uninterrupted one would.

>>> import torch
>>> aug = AugmentConfig(time_shift=2, time_masks=1, time_mask_width=3)
>>> x = torch.arange(2 * 1 * 6 * 4, dtype=torch.float32).reshape(2, 1, 6, 4)
>>> y = augment_batch(x, aug, torch.Generator().manual_seed(0))
>>> y.shape, bool((y == x).all())
(torch.Size([2, 1, 6, 4]), False)
>>> augment_batch(x, AugmentConfig(), torch.Generator()) is x
True
"""

from __future__ import annotations

from typing import Any

from tinyprec.errors import RecipeError
from tinyprec.recipe import AugmentConfig


def epoch_generator(seed: int, epoch: int, device: Any) -> Any:
    """The generator one epoch's augmentation draws from (independent of the data order's generator)."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63))
    return gen


def _masks(n: int, length: int, count: int, width: int, gen: Any, device: Any) -> Any:
    """(n, length) bool: ``count`` spans per row, each of 0..width positions at a random start."""
    import torch

    pos = torch.arange(length, device=device)
    out = torch.zeros(n, length, dtype=torch.bool, device=device)
    for _ in range(count):
        w = torch.randint(0, width + 1, (n, 1), generator=gen, device=device)
        start = (torch.rand(n, 1, generator=gen, device=device) * (length - w + 1)).floor().long()
        out |= (pos >= start) & (pos < start + w)
    return out


WARP_STEPS = 33  # warp factors drawn from this many evenly spaced values in [1 - w, 1 + w]


def cepstral_warps(cfg: AugmentConfig, preprocess: Any, device: Any) -> tuple[Any, Any] | None:
    """For ``freq_warp``: (K, C, C) matrices and (K, C) offsets that warp *normalized* MFCC inputs.

    ``preprocess`` is the dataset's record: its ``frontend`` (an MFCC :class:`tinyprec.data.mfcc.FrontEnd`)
    gives the mel and DCT layout, its (mean, std) the normalization undone around the warp
    (``x' = T x + mean * (T 1 - 1) / std``). None when freq_warp is off; RecipeError without an MFCC front end.
    """
    import numpy as np
    import torch

    if cfg.freq_warp <= 0:
        return None
    fe = getattr(preprocess, "frontend", None)
    if fe is None or not hasattr(fe, "mel_bins") or not hasattr(fe, "coefficients"):
        raise RecipeError("'train.augment.freq_warp' needs MFCC inputs from a front end (data.name = "
                          "'spoken_keywords'); set it to 0 for this data")
    from tinyprec.data.mfcc import warp_matrix

    alphas = np.linspace(1.0 - cfg.freq_warp, 1.0 + cfg.freq_warp, WARP_STEPS)
    mats = np.stack([warp_matrix(float(a), fe) for a in alphas])
    offsets = float(preprocess.mean) * (mats.sum(axis=2) - 1.0) / float(preprocess.std)
    return (torch.tensor(mats, dtype=torch.float32, device=device),
            torch.tensor(offsets, dtype=torch.float32, device=device))


def augment_batch(x: Any, cfg: AugmentConfig, gen: Any, warps: tuple[Any, Any] | None = None) -> Any:
    """``x`` (N, ...) augmented as ``cfg`` says (a new tensor), or ``x`` itself when nothing is on.

    ``warps`` (from :func:`cepstral_warps`) is needed when ``cfg.freq_warp`` is on.
    """
    import torch

    if not cfg.active:
        return x
    n, device = x.shape[0], x.device
    out = x.clone()
    if cfg.freq_warp > 0:
        if warps is None:
            raise ValueError("augment_batch: freq_warp needs the matrices of cepstral_warps()")
        mats, offsets = warps
        pick = torch.randint(0, mats.shape[0], (n,), generator=gen, device=device)
        shape = (n, *([1] * (x.dim() - 2)), x.shape[-1])
        out = torch.einsum("n...c,ndc->n...d", out, mats[pick]) + offsets[pick].view(shape)
    if cfg.time_shift > 0:
        t = x.shape[-2]
        shift = torch.randint(-cfg.time_shift, cfg.time_shift + 1, (n,), generator=gen, device=device)
        src = (torch.arange(t, device=device)[None, :] - shift[:, None]).clamp(0, t - 1)  # edge frames repeat
        index = src.view(n, *([1] * (x.dim() - 3)), t, 1).expand_as(x)
        out = torch.gather(out, -2, index)
    if cfg.time_masks > 0 and cfg.time_mask_width > 0:
        m = _masks(n, x.shape[-2], cfg.time_masks, cfg.time_mask_width, gen, device)
        out = out.masked_fill(m.view(n, *([1] * (x.dim() - 3)), x.shape[-2], 1), 0.0)
    if cfg.freq_masks > 0 and cfg.freq_mask_width > 0:
        m = _masks(n, x.shape[-1], cfg.freq_masks, cfg.freq_mask_width, gen, device)
        out = out.masked_fill(m.view(n, *([1] * (x.dim() - 2)), x.shape[-1]), 0.0)
    if cfg.noise_std > 0:
        out = out + torch.randn(out.shape, generator=gen, device=device, dtype=out.dtype) * cfg.noise_std
    if cfg.probability < 1.0:
        keep = torch.rand(n, generator=gen, device=device) >= cfg.probability
        out = torch.where(keep.view(n, *([1] * (x.dim() - 1))), x, out)
    return out


__all__ = ["AugmentConfig", "augment_batch", "cepstral_warps", "epoch_generator"]
