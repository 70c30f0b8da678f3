"""[train.augment]: recipe validation, what each augmentation does to a batch, seeded reproducibility in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinyprec.data import Dataset
from tinyprec.errors import RecipeError
from tinyprec.recipe import AugmentConfig, TrainConfig, load_recipe, parse_recipe
from tinyprec.training import seed_everything, train_model
from tinyprec.training.augment import augment_batch, epoch_generator

MODELS = Path(__file__).resolve().parents[1] / "models"


def _recipe(augment: str) -> str:
    return f'[model]\narch = "ds_cnn"\n[train.augment]\n{augment}\n'


def test_recipe_table_parses() -> None:
    import tomllib

    r = parse_recipe(tomllib.loads(_recipe("time_shift = 4\nfreq_masks = 1\nfreq_mask_width = 2\nnoise_std = 0.1")))
    assert r.train.augment == AugmentConfig(time_shift=4, freq_masks=1, freq_mask_width=2, noise_std=0.1)
    assert r.train.augment.active and not TrainConfig().augment.active


@pytest.mark.parametrize("body,pattern", [
    ("time_shift = -1", r"'train\.augment\.time_shift' = -1 must be >= 0"),
    ("noise_std = -0.5", r"'train\.augment\.noise_std' = -0.5 must be >= 0"),
    ("probability = 1.5", r"'train\.augment\.probability' = 1\.5 must be in \[0, 1\]"),
    ("time_masks = 2", r"set both 'time_masks' and 'time_mask_width'"),
    ("freq_mask_width = 2", r"set both 'freq_masks' and 'freq_mask_width'"),
    ("time_shift = 1.5", r"'train\.augment\.time_shift' = 1\.5 is not valid; expected int"),
    ("shift = 1", r"unknown key 'train\.augment\.shift'; allowed: time_shift"),
])
def test_bad_values_one_line_errors(tmp_path: Path, body: str, pattern: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(_recipe(body))
    with pytest.raises(RecipeError, match=pattern) as info:
        load_recipe(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_not_a_table(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[model]\narch = "ds_cnn"\n[train]\naugment = 3\n')
    with pytest.raises(RecipeError, match=r"\[train\.augment\] must be a table"):
        load_recipe(path)


def test_off_in_every_shipped_recipe_but_kws() -> None:
    for path in sorted(MODELS.glob("*.toml")):
        active = load_recipe(path).train.augment.active
        assert active == path.stem.startswith("kws_ds_cnn"), path.name


def test_shape_checked_against_the_input() -> None:
    with pytest.raises(RecipeError, match=r"need \(C, T, F\) inputs.*not \(40,\)"):
        AugmentConfig(time_shift=2).check_shape((40,))
    with pytest.raises(RecipeError, match="below the 49 time frames"):
        AugmentConfig(time_shift=49).check_shape((1, 49, 10))
    with pytest.raises(RecipeError, match="at most the 10 features"):
        AugmentConfig(freq_masks=1, freq_mask_width=11).check_shape((1, 49, 10))
    AugmentConfig(noise_std=0.1).check_shape((40,))  # noise fits any shape


def _batch(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 1, 12, 5, generator=torch.Generator().manual_seed(1))


def test_time_shift_moves_frames_and_repeats_the_edge() -> None:
    x = _batch()
    y = augment_batch(x, AugmentConfig(time_shift=3), torch.Generator().manual_seed(0))
    shifts = []
    for a, b in zip(x, y):
        found = [s for s in range(-3, 4)
                 if torch.equal(b[0], a[0, (torch.arange(12) - s).clamp(0, 11)])]
        assert len(found) == 1
        shifts.append(found[0])
    assert set(shifts) == set(range(-3, 4))  # 64 draws cover every shift


def test_masks_zero_whole_rows_and_columns_within_width() -> None:
    x = _batch() + 10.0  # no zeros of its own
    y = augment_batch(x, AugmentConfig(time_masks=2, time_mask_width=3), torch.Generator().manual_seed(0))
    rows = (y[:, 0] == 0).all(dim=-1)  # (N, T) masked frames
    assert torch.equal((y == 0).any(dim=-1)[:, 0], rows)  # a frame is masked whole or not at all
    assert int(rows.sum(dim=1).max()) <= 6 and int(rows.sum()) > 0
    assert torch.equal(y[~(y == 0)], x[~(y == 0)])
    y = augment_batch(x, AugmentConfig(freq_masks=1, freq_mask_width=2), torch.Generator().manual_seed(0))
    cols = (y[:, 0] == 0).all(dim=-2)  # (N, F)
    assert torch.equal((y == 0).any(dim=-2)[:, 0], cols)
    assert int(cols.sum(dim=1).max()) <= 2 and int(cols.sum()) > 0


def test_noise_probability_and_seeding() -> None:
    x = torch.zeros(4000, 1, 12, 5)
    y = augment_batch(x, AugmentConfig(noise_std=0.5), torch.Generator().manual_seed(0))
    assert abs(float(y.std()) - 0.5) < 0.01
    half = augment_batch(x, AugmentConfig(noise_std=0.5, probability=0.5), torch.Generator().manual_seed(0))
    touched = float((half != 0).flatten(1).any(1).float().mean())
    assert 0.45 < touched < 0.55
    assert torch.equal(augment_batch(x, AugmentConfig(noise_std=0.5, probability=0.0), torch.Generator()), x)
    a = augment_batch(x, AugmentConfig(noise_std=0.5), epoch_generator(0, 3, "cpu"))
    b = augment_batch(x, AugmentConfig(noise_std=0.5), epoch_generator(0, 3, "cpu"))
    c = augment_batch(x, AugmentConfig(noise_std=0.5), epoch_generator(0, 4, "cpu"))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_training_with_augmentation_is_reproducible(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(96) % 4
    x = rng.standard_normal((96, 1, 8, 8)).astype(np.float32) + y[:, None, None, None]
    data = Dataset.from_arrays(x, y, name="tiny", seed=0)
    aug = AugmentConfig(time_shift=2, time_masks=1, time_mask_width=2, noise_std=0.2)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=3e-3, precision="fp32", augment=aug)

    def run(c: TrainConfig, name: str) -> dict[str, torch.Tensor]:
        seed_everything(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 4))
        return train_model(model, data, c, tmp_path / name, seed=0).model.state_dict()

    a, b, plain = run(cfg, "a"), run(cfg, "b"), run(TrainConfig(epochs=2, batch_size=16, lr=3e-3, precision="fp32"), "p")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], plain[k]) for k in a if a[k].is_floating_point())


def test_cepstral_warp_is_the_dct_of_a_stretched_log_mel() -> None:
    from scipy.fft import dct

    from tinyprec.data.mfcc import MLPERF_KWS, dct_matrix, warp_matrix

    log_mel = np.random.default_rng(0).standard_normal((3, 40))
    ours = log_mel @ dct_matrix(MLPERF_KWS).T
    # tf.signal.mfccs_from_log_mel_spectrograms: the unnormalized DCT-II (scipy's norm=None) / sqrt(2 * 40)
    theirs = dct(log_mel, type=2, axis=-1)[:, :10] / np.sqrt(80.0)
    assert np.abs(ours - theirs).max() < 1e-12
    assert np.allclose(warp_matrix(1.0), np.eye(10))
    bump = 3.0 * np.exp(-0.5 * ((np.arange(40) - 15) / 2.0) ** 2)
    back = np.linalg.pinv(dct_matrix())
    peaks = [int(np.argmax(back @ warp_matrix(a) @ dct_matrix() @ bump)) for a in (0.9, 1.0, 1.1)]
    assert peaks[0] < peaks[1] == 15 < peaks[2]  # alpha > 1 moves formants up


def _mfcc_dataset(n: int = 96) -> Dataset:
    import dataclasses

    from tinyprec.data import Preprocess
    from tinyprec.data.mfcc import MLPERF_KWS

    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    x = (rng.standard_normal((n, 1, 6, 10)) * 5 - 3 + y[:, None, None, None]).astype(np.float32)
    data = Dataset.from_arrays(x, y, name="mfcc", seed=0)
    return dataclasses.replace(data, preprocess=Preprocess(data.preprocess.mean, data.preprocess.std, MLPERF_KWS))


def test_warp_acts_on_the_raw_coefficients_of_normalized_inputs() -> None:
    from tinyprec.data.mfcc import warp_matrix
    from tinyprec.training.augment import WARP_STEPS, cepstral_warps

    data = _mfcc_dataset()
    cfg = AugmentConfig(freq_warp=0.1)
    warps = cepstral_warps(cfg, data.preprocess, "cpu")
    assert warps is not None and warps[0].shape == (WARP_STEPS, 10, 10)
    raw = torch.from_numpy(data.train.x[:8])
    x = torch.from_numpy(data.preprocess.apply(data.train.x[:8]))
    y = augment_batch(x, cfg, torch.Generator().manual_seed(0), warps)
    mean, std = data.preprocess.mean, data.preprocess.std
    alphas = np.linspace(0.9, 1.1, WARP_STEPS)
    for a, b in zip(raw, y):  # each sample is one of the warps of its raw coefficients, renormalized
        errs = [float((torch.from_numpy(((a.double().numpy() @ warp_matrix(al).T) - mean) / std).float() - b)
                      .abs().max()) for al in alphas]
        assert min(errs) < 1e-4
    with pytest.raises(RecipeError, match="freq_warp' needs MFCC inputs"):
        cepstral_warps(cfg, Dataset.from_arrays(data.train.x, data.train.y, seed=0).preprocess, "cpu")
    with pytest.raises(RecipeError, match=r"must be in \[0, 0\.5\)"):
        AugmentConfig(freq_warp=0.6).check()


def test_training_with_a_warp(tmp_path: Path) -> None:
    data = _mfcc_dataset()
    cfg = TrainConfig(epochs=1, batch_size=16, precision="fp32", augment=AugmentConfig(freq_warp=0.1, time_shift=1))
    seed_everything(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(60, 4))
    result = train_model(model, data, cfg, tmp_path, seed=0)
    assert result.val_accuracy is not None and result.epochs_run == 1


def test_a_config_built_in_code_is_checked_by_training(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=1, precision="fp32", augment=AugmentConfig(time_shift=-2))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(60, 4))
    with pytest.raises(RecipeError, match=r"'train\.augment\.time_shift' = -2 must be >= 0"):
        train_model(model, _mfcc_dataset(), cfg, tmp_path, seed=0)
