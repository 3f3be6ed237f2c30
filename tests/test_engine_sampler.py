"""EngineSegmentSampler: batch shapes and dtypes, left padding, area downsampling, reproducibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffworld.data.actions import ActionSpec, bins, keys
from diffworld.data.folder_store import EngineDataset, EngineDatasetError, EngineDatasetWriter
from diffworld.engine.config import LowResFilter
from diffworld.engine.segment_sampler import EngineSegmentSampler

SPEC = ActionSpec.of(keys(["w", "fire"]), bins("mouse", [-1, 0, 1]))
SIZE = (10, 15)


@pytest.fixture
def dataset(tmp_path: Path) -> EngineDataset:
    writer = EngineDatasetWriter(tmp_path / "d", SPEC, SIZE)
    for i, length in enumerate([6, 30, 3]):
        # Frame t of episode i is filled with the level 10 * i + t, action t is (t % 2, 1, t % 3).
        frames = (10 * i + np.arange(length, dtype=np.uint8))[:, None, None, None] * np.ones(
            (1, *SIZE, 3), np.uint8
        )
        t = np.arange(length)
        writer.add_episode(frames, np.stack([t % 2, np.ones(length), t % 3], axis=1))
    writer.finish(test_names=["000002"])
    return EngineDataset(tmp_path / "d")


def sampler(dataset: EngineDataset, seed: int = 0, **kwargs: object) -> EngineSegmentSampler:
    args: dict = {"batch_size": 16, "seq_length": 5, "low_res": (5, 5), "rng": np.random.default_rng(seed)}
    args.update(kwargs)
    return EngineSegmentSampler(dataset, dataset.train_ids, **args)


def test_batch_shapes_and_dtypes(dataset: EngineDataset) -> None:
    batch = sampler(dataset).sample()
    assert batch.obs.shape == (16, 5, 3, 5, 5) and batch.obs.dtype == torch.float32
    assert batch.obs_full is not None and batch.obs_full.shape == (16, 5, 3, *SIZE)
    assert batch.act.shape == (16, 5, 3) and batch.act.dtype == torch.float32
    assert batch.frame_mask.shape == (16, 5) and batch.frame_mask.dtype == torch.bool
    assert batch.obs.min() >= -1 and batch.obs.max() <= 1
    assert sampler(dataset).sample(batch_size=3).obs.shape[0] == 3


def test_segments_hold_the_episode_frames_in_order_with_left_padding(dataset: EngineDataset) -> None:
    s = sampler(dataset, low_res=None)
    batch = s.make_batch(np.array([0, 1]), np.array([-2, 25]))
    assert batch.obs_full is None and batch.obs.shape == (2, 5, 3, *SIZE)
    assert batch.frame_mask.tolist() == [[False, False, True, True, True], [True] * 5]
    levels = ((batch.obs[:, :, 0, 0, 0] + 1) * 127.5).round()
    assert levels[0, 2:].tolist() == [0, 1, 2]
    assert levels[1].tolist() == [35, 36, 37, 38, 39]  # episode 1: level 10 + t
    assert (batch.obs[0, :2] == 0).all() and (batch.act[0, :2] == 0).all()  # padding
    assert batch.act[0, 2:].tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 2]]
    with pytest.raises(ValueError, match="invalid"):
        s.make_batch(np.array([0]), np.array([2]))  # would end beyond episode 0's last frame


def test_sampling_follows_the_official_rule(dataset: EngineDataset) -> None:
    s = sampler(dataset, batch_size=4000, seq_length=8)
    episodes, starts = s.sample_segments()
    assert set(episodes.tolist()) == {0, 1}  # the train split only
    assert abs((episodes == 1).mean() - 30 / 36) < 0.03  # proportional to length
    stops = starts + 8
    assert (stops >= 1).all() and (stops <= dataset.lengths[episodes]).all()
    assert (starts < 0).any()  # left padding happens (episode 0 is shorter than a segment)


def test_low_res_is_bicubic_at_8_bit_levels_by_default(dataset: EngineDataset) -> None:
    # The official CS:GO low-resolution data: antialiased bicubic resizing of the [-1, 1] frames, stored as
    # 8-bit levels by truncation. Here in float64, levels counted from 0 to 255: where the value lies on a
    # level (a flat region of the frame: bicubic weights sum to 1), float32 and float64 rounding may land on
    # either side of it and truncate to neighbouring levels; nowhere else may they differ.
    batch = sampler(dataset, low_res=(5, 3)).make_batch(np.array([1]), np.array([0]))
    assert batch.obs_full is not None
    resized = F.interpolate(
        batch.obs_full[0].double(), size=(5, 3), mode="bicubic", align_corners=False, antialias=True
    )
    exact = ((resized + 1) * 127.5).clamp(0, 255)
    levels = torch.floor(exact)
    got_levels = ((batch.obs[0].double() + 1) * 127.5).round()
    differ = got_levels != levels
    assert ((levels - got_levels).abs()[differ] == 1).all()
    assert ((exact - exact.round()).abs()[differ] < 1e-4).all()
    assert not differ.all()


def test_low_res_area_filter(dataset: EngineDataset) -> None:
    batch = sampler(dataset, low_res=(5, 3), low_res_filter=LowResFilter.area).make_batch(
        np.array([1]), np.array([0])
    )
    assert batch.obs_full is not None
    expected = F.interpolate(batch.obs_full[0], size=(5, 3), mode="area")
    assert torch.allclose(batch.obs[0], expected, atol=1e-6)
    assert sampler(dataset, low_res=(5, 3), full_res=False).sample().obs_full is None


def test_same_rng_same_batches(dataset: EngineDataset) -> None:
    a, b = sampler(dataset, seed=3), sampler(dataset, seed=3)
    for _ in range(3):
        x, y = a.sample(), b.sample()
        assert (
            torch.equal(x.obs, y.obs)
            and torch.equal(x.act, y.act)
            and torch.equal(x.frame_mask, y.frame_mask)
        )
    moved = x.to("cpu")
    assert torch.equal(moved.obs, x.obs)


def test_traverse_covers_every_frame_once_in_order(dataset: EngineDataset) -> None:
    s = sampler(dataset, batch_size=4, seq_length=8, low_res=None)
    rng_state = s.rng.bit_generator.state
    batches = list(s.traverse())
    assert s.rng.bit_generator.state == rng_state
    # Episode 0 (6 frames): one left-padded segment; episode 1 (30 frames): ends at 8, 16, 24 and 30.
    assert sum(b.obs.shape[0] for b in batches) == 5 and [b.obs.shape[0] for b in batches] == [4, 1]
    levels = torch.cat([((b.obs[:, :, 0, 0, 0] + 1) * 127.5).round() for b in batches])
    mask = torch.cat([b.frame_mask for b in batches])
    assert levels[0][mask[0]].tolist() == [0, 1, 2, 3, 4, 5]
    covered = torch.cat([levels[i][mask[i]] for i in range(1, 5)]).unique().tolist()
    assert covered == [10 + t for t in range(30)]


def test_bad_arguments(dataset: EngineDataset) -> None:
    with pytest.raises(EngineDatasetError, match="empty split"):
        EngineSegmentSampler(dataset, [], 2, 2, None, np.random.default_rng(0))
    with pytest.raises(EngineDatasetError, match="at most the dataset's frames"):
        sampler(dataset, low_res=(20, 5))
