"""Videos: real | world model from the same start, frame count and size, actions change the imagined half,
the denoising strip, mp4/gif files, the TensorBoard clip of the trainer's tests; an engine's video of a test
episode of its dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffworld.agent import Agent, export_agent
from diffworld.agent.test_video import VIDEO_TAG, log_test_video
from diffworld.cli import main
from diffworld.config import build_config
from diffworld.data import Episode, EpisodeDataset
from diffworld.fitting.logger import MetricsLogger
from diffworld.models.diffusion import Denoiser
from diffworld.utils.video_encoding import VideoWriter
from diffworld.viz.side_by_side import compose_frames, imagine_along, real_vs_imagined
from test_engine_cli import fails_in_one_line
from test_engine_quality import LOW, ActionCoded, NearestUp, action_coded_dataset, bar_dataset, engine_folder

L = 4
NUM_ACTIONS = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _denoiser(*extra: str) -> tuple[Denoiser, object]:
    """The smoke preset's denoiser with perturbed weights, so that its frames depend on the actions: a
    freshly initialized one ignores them (its output and residual layers start at zero)."""
    cfg = build_config(["game=Breakout", "preset=smoke", *extra])
    torch.manual_seed(0)
    agent = Agent.build(cfg, NUM_ACTIONS).eval()
    with torch.no_grad():
        for param in agent.denoiser.parameters():  # zero-initialized layers (output, residual convs) too
            param.add_(torch.randn_like(param) * 0.1)
    return agent.denoiser, cfg.denoiser.sampler


def _episode(length: int, actions: np.ndarray | None = None, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        obs=rng.integers(0, 256, size=(length + 1, 64, 64, 3), dtype=np.uint8),
        act=rng.integers(0, NUM_ACTIONS, size=length) if actions is None else actions.astype(np.int64),
        rew=np.zeros(length, dtype=np.float32),
        terminated=np.eye(length, dtype=bool)[-1],
        truncated=np.zeros(length, dtype=bool),
    )


def _video(denoiser: Denoiser, sampler: object, episode: Episode, steps: int, **kwargs: object) -> np.ndarray:
    generator = torch.Generator().manual_seed(7)
    return real_vs_imagined(denoiser, sampler, episode, steps, generator=generator, **kwargs)  # type: ignore[arg-type]


def test_frame_count_and_size() -> None:
    denoiser, sampler = _denoiser()
    episode = _episode(20)
    frames = _video(denoiser, sampler, episode, 6, scale=2)
    header = 14
    assert frames.shape == (L + 6, header + 128, 256, 3) and frames.dtype == np.uint8
    # Left half: the real frames L-1 .. L+5 upscaled; right half: the same context, then predictions.
    real = frames[:, header:, :128]
    assert np.array_equal(real[:, ::2, ::2], episode.obs[: L + 6])
    assert np.array_equal(frames[:L, header:, 128:], real[:L])
    assert not np.array_equal(frames[L:, header:, 128:], real[L:])
    # Too few real steps: as many predictions as the episode allows (frames up to its final one).
    assert len(_video(denoiser, sampler, _episode(6), 100, scale=1)) == 6 + 1
    with pytest.raises(ValueError, match="too short"):
        _video(denoiser, sampler, _episode(L - 1), 5)


def test_world_model_half_changes_with_the_actions() -> None:
    denoiser, sampler = _denoiser()
    actions = np.zeros(16, dtype=np.int64)
    other = actions.copy()
    other[L - 1 :] = 2  # same context frames and actions but the last one, then other actions
    a = _video(denoiser, sampler, _episode(16, actions), 8, scale=1)
    b = _video(denoiser, sampler, _episode(16, other), 8, scale=1)
    again = _video(denoiser, sampler, _episode(16, actions), 8, scale=1)
    header = 14
    assert np.array_equal(a, again)  # same actions, same seed: the same video
    real_a, real_b = a[:, header:, :64], b[:, header:, :64]
    imagined_a, imagined_b = a[:, header:, 64:], b[:, header:, 64:]
    assert np.array_equal(real_a, real_b)
    assert np.array_equal(imagined_a[:L], imagined_b[:L])  # the shared context
    for t in range(L, L + 8):
        assert not np.array_equal(imagined_a[t], imagined_b[t]), t


def test_imagination_feeds_back_its_own_frames() -> None:
    denoiser, sampler = _denoiser()
    episode = _episode(12)
    imagined = imagine_along(denoiser, sampler, episode, 3, generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    # The second prediction is conditioned on the first one, not on the real frame L.
    changed = Episode(
        obs=episode.obs.copy(),
        act=episode.act,
        rew=episode.rew,
        terminated=episode.terminated,
        truncated=episode.truncated,
    )
    changed.obs[L] = 0
    again = imagine_along(denoiser, sampler, changed, 3, generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    assert np.array_equal(imagined.frames, again.frames)
    assert imagined.frames.shape == (3, 64, 64, 3)


@pytest.mark.parametrize("kind", ["edm", "ddpm"])
def test_denoising_steps_strip(kind: str) -> None:
    denoiser, sampler = _denoiser(f"denoiser.kind={kind}", "denoiser.sampler.num_steps=3")
    episode = _episode(10)
    plain = _video(denoiser, sampler, episode, 3, scale=2)
    imagination = imagine_along(
        denoiser,
        sampler,
        episode,
        3,
        generator=torch.Generator().manual_seed(7),
        record_denoising=True,  # type: ignore[arg-type]
    )
    assert imagination.denoising is not None and [len(s) for s in imagination.denoising] == [3, 3, 3]
    # Recording the steps does not change the sampling.
    assert np.array_equal(
        imagination.frames,
        imagine_along(denoiser, sampler, episode, 3, generator=torch.Generator().manual_seed(7)).frames,
    )  # type: ignore[arg-type]
    assert not hasattr(denoiser, "__dict__") or "denoise" not in vars(denoiser)  # the wrapper is gone
    with_strip = compose_frames(episode, imagination, L, scale=2)
    assert with_strip.shape[0] == plain.shape[0] and with_strip.shape[2] == plain.shape[2]
    assert with_strip.shape[1] > plain.shape[1]
    assert np.array_equal(with_strip[:, : plain.shape[1]], plain)
    last = imagination.denoising[-1][-1]
    if kind == "edm":  # the last Euler step lands on the last estimate, before quantization
        assert np.abs(last.estimate.astype(int) - imagination.frames[-1].astype(int)).max() <= 1


def _write(path: Path, frames: np.ndarray) -> None:
    """The frames written one at a time, as ``diffworld video`` writes them (``viz.video_out``)."""
    with VideoWriter(path, fps=15) as video:
        for frame in frames:
            video.append(frame)


def test_write_mp4_and_gif(tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v3 as iio

    denoiser, sampler = _denoiser()
    frames = _video(denoiser, sampler, _episode(12), 5, scale=2)
    t, h, w, _ = frames.shape
    _write(tmp_path / "v.gif", frames)
    with Image.open(tmp_path / "v.gif") as gif:
        assert gif.n_frames == t and gif.size == (w, h)
    _write(tmp_path / "sub" / "v.mp4", frames)
    mp4 = iio.imread(tmp_path / "sub" / "v.mp4", index=None)
    # H.264 wants sizes in multiples of 16: the frames are padded with black, never scaled.
    assert mp4.shape == (t, -(-h // 16) * 16, -(-w // 16) * 16, 3)
    assert np.abs(mp4[:, :h, :w].astype(int) - frames.astype(int)).mean() < 8
    assert main(["video", str(tmp_path), "--out", str(tmp_path / "v.avi")]) == 2


def test_tensorboard_video(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    denoiser, sampler = _denoiser()
    dataset = EpisodeDataset()
    dataset.add(_episode(30))
    logger = MetricsLogger(tmp_path, tensorboard=True)
    assert log_test_video(logger, denoiser, sampler, dataset, 10, env_steps=123, seed=0)  # type: ignore[arg-type]
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert VIDEO_TAG in events.Tags()["images"]
    (image,) = events.Images(VIDEO_TAG)
    assert image.step == 123 and image.encoded_image_string[:6] == b"GIF89a"
    with Image.open(__import__("io").BytesIO(image.encoded_image_string)) as gif:
        assert gif.n_frames == L + 10 and gif.size == (image.width, image.height) == (256, 14 + 128)

    (tmp_path / "no_tb").mkdir()
    quiet = MetricsLogger(tmp_path / "no_tb", tensorboard=False)
    assert not log_test_video(quiet, denoiser, sampler, dataset, 10, env_steps=1, seed=0)  # type: ignore[arg-type]
    assert not log_test_video(logger, denoiser, sampler, EpisodeDataset(), 10, env_steps=1, seed=0)  # type: ignore[arg-type]
    quiet.close()


def test_cli_video(tmp_path: Path) -> None:
    cfg = build_config(["game=Breakout", "preset=smoke"])
    folder = tmp_path / "agent"
    export_agent(Agent.build(cfg, NUM_ACTIONS), cfg, NUM_ACTIONS, folder)
    out = tmp_path / "real_vs_imagined.gif"
    argv = ["video", str(folder), "--out", str(out), "--steps", "3", "--device", "cpu", "--scale", "2"]
    assert main([*argv, "--show-denoising"]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == L + 3 and gif.size[0] == 256
    assert main([*argv, "--denoising-steps", "3"]) == 2  # a number of steps is an engine's option
    assert main([*argv, "--data", str(tmp_path)]) == 2


def test_a_failed_video_leaves_no_file(tmp_path: Path) -> None:
    for name in ("v.gif", "v.mp4"):
        with pytest.raises(RuntimeError, match="stop"), VideoWriter(tmp_path / name, fps=15) as video:
            video.append(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("stop")
    with pytest.raises(ValueError, match="one size"), VideoWriter(tmp_path / "v.gif", fps=15) as video:
        video.append(np.zeros((16, 16, 3), np.uint8))
        video.append(np.zeros((16, 8, 3), np.uint8))
    assert not list(tmp_path.iterdir())  # neither the video nor a temporary file


# ------------------------------------------------------------------------------------------ engine videos


def _panels(video: np.ndarray, height: int, width: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(real, imagined) panels of side-by-side frames, back at frame resolution."""
    header = max(14, 5 * scale)
    body = video[:, header : header + height * scale, : 2 * width * scale : scale][:, ::scale]
    return body[:, :, :width], body[:, :, width:]


def test_engine_video_frames_show_the_episode_and_the_imagination(tmp_path: Path) -> None:
    """An engine that knows the game's rule (the next frame's level is coded by the action) imagines the
    episode exactly: only if it gets the episode's actions, each after the frame it follows."""
    from diffworld.engine.imagine import EngineSamplers
    from diffworld.engine.video import engine_video_frames

    dataset = action_coded_dataset(tmp_path / "d", [30])
    frames, actions = dataset.frames(0), dataset.actions(0)
    engine = EngineSamplers(ActionCoded(), 3, LOW, NearestUp(), 2)
    video = np.stack(
        list(
            engine_video_frames(
                engine, frames, actions, start=4, steps=100, scale=2, device=torch.device("cpu")
            )
        )
    )
    h, w = frames.shape[1:3]
    assert video.shape == (30 - 4, 14 + 2 * h, 2 * 2 * w, 3)  # 3 context frames, then 23 predictions
    real, imagined = _panels(video, h, w, 2)
    assert np.array_equal(real, frames[4:])
    assert np.array_equal(imagined, frames[4:])
    assert np.array_equal(video[:, 14:, : 2 * w][:, ::2, ::2], frames[4:])  # upscaled by pixel repetition


def test_cli_engine_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A smoke engine's video, read back: frame count and size, and its real panel is the first test
    episode of the dataset (GIF colours are quantized, so approximately)."""
    import imageio.v3 as iio

    from diffworld.data.folder_store import EngineDataset

    data = bar_dataset(tmp_path / "bars")
    engine = engine_folder(tmp_path / "engine", data)
    episode = EngineDataset(data).frames(int(EngineDataset(data).test_ids[0]))  # 16 frames of 12x20
    out = tmp_path / "v.gif"
    argv = ["video", str(engine), "--out", str(out), "--steps", "5", "--start", "3", "--device", "cpu"]
    assert main(argv) == 0
    assert f"{2 + 5} frames of 80x38" in capsys.readouterr().out  # context 2, scale 2, header 14
    gif = iio.imread(out, index=None)[..., :3]
    assert gif.shape == (7, 38, 80, 3)
    real, _ = _panels(gif, 12, 20, 2)
    errors = np.abs(real.astype(int)[:, None] - episode.astype(int)[None]).mean(axis=(2, 3, 4))
    assert np.array_equal(errors.argmin(axis=1), np.arange(3, 10)), errors.round()
    assert errors.min(axis=1).max() < 12 < 50 < np.sort(errors, axis=1)[:, 1].min()

    pytest.importorskip("imageio_ffmpeg")
    mp4 = tmp_path / "long.mp4"
    assert main(["video", str(engine), "--out", str(mp4), "--steps", "100", "--denoising-steps", "2"]) == 0
    assert iio.imread(mp4, index=None).shape == (16, 48, 80, 3)  # the whole episode; padded to 16s


def test_engine_video_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    data = bar_dataset(tmp_path / "bars")
    engine = engine_folder(tmp_path / "engine", data)
    video = ["video", str(engine), "--out", str(tmp_path / "v.gif")]
    assert "give --start from 0 to 13" in fails_in_one_line([*video, "--start", "14"], capsys)
    assert "give --episode from 0 to 1" in fails_in_one_line([*video, "--episode", "2"], capsys)
    assert "--denoising-steps N" in fails_in_one_line([*video, "--show-denoising"], capsys)
    assert ".mp4 or a .gif" in fails_in_one_line([*video[:3], str(tmp_path / "v.avi")], capsys)
    assert "no dataset.json" in fails_in_one_line([*video, "--data", str(engine)], capsys)
    shutil.move(data, tmp_path / "moved")
    assert "is gone: give one with --data" in fails_in_one_line(video, capsys)
    shutil.rmtree(engine / "checkpoints")
    assert "has no checkpoint yet" in fails_in_one_line(video, capsys)
    assert not (tmp_path / "v.gif").exists()
