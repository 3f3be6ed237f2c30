"""Atari 100k preprocessing checked against frames computed directly from ALE screens, and the vector env."""

from __future__ import annotations

from dataclasses import dataclass, field

import ale_py
import cv2
import numpy as np
import pytest
from ale_py import ALEInterface, roms
from gymnasium.utils import seeding

from diffworld.envs import AtariEnvs, StepResult, make_atari_env

FRAME_SKIP = 4
NOOP_MAX = 30


def resize(screen: np.ndarray) -> np.ndarray:
    return cv2.resize(screen, (64, 64), interpolation=cv2.INTER_AREA)


def expected_noops(seed: int) -> int:
    """Number of reset no-ops for ``reset(seed=seed)``.

    ale-py's ``AtariEnv.seed_game`` derives the env's np_random from the first word of ``SeedSequence(seed)``
    and the spec draws ``integers(1, noop_max + 1)`` from it.
    """
    np_seed, _ = np.random.SeedSequence(seed).generate_state(n_words=2)
    rng, _ = seeding.np_random(int(np_seed))
    return int(rng.integers(1, NOOP_MAX + 1))


@dataclass
class RefStep:
    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    life_loss: bool


@dataclass
class ReferenceAtari:
    """The spec written out on a bare ALEInterface, seeded like ale-py's ``AtariEnv.reset(seed=seed)``."""

    rom: str
    seed: int
    max_frames: int = 108_000
    ale: ALEInterface = field(init=False)

    def __post_init__(self) -> None:
        self.ale = ALEInterface()
        self.ale.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale.setFloat("repeat_action_probability", 0.0)
        self.ale.setInt("max_num_frames_per_episode", self.max_frames)
        _, ale_seed = np.random.SeedSequence(self.seed).generate_state(n_words=2)
        self.ale.setInt("random_seed", np.int32(ale_seed))
        self.ale.loadROM(roms.get_rom_path(self.rom))
        self.ale.reset_game()
        self.actions = self.ale.getMinimalActionSet()

    def noop(self) -> np.ndarray:
        """One raw no-op frame (resetting on game over, as the spec's reset does); returns the observation."""
        self.ale.act(self.actions[0])
        if self.ale.game_over():
            self.ale.reset_game()
        return resize(self.ale.getScreenRGB())

    def step(self, action: int) -> RefStep:
        lives = self.ale.lives()
        frames, reward = [], 0.0
        for _ in range(FRAME_SKIP):
            reward += self.ale.act(self.actions[action])
            frames.append(self.ale.getScreenRGB())
            if self.ale.game_over():
                break
        pooled = np.maximum.reduce(frames[-2:])
        terminated = self.ale.game_over(with_truncation=False)
        truncated = self.ale.game_truncated() and not terminated
        return RefStep(resize(pooled), reward, terminated, truncated, self.ale.lives() < lives)


def reference_after_reset(rom: str, seed: int, max_frames: int = 108_000) -> ReferenceAtari:
    ref = ReferenceAtari(rom, seed, max_frames)
    for _ in range(expected_noops(seed)):
        ref.noop()
    return ref


def random_actions(num_actions: int, length: int, seed: int = 0) -> list[int]:
    return [int(a) for a in np.random.default_rng(seed).integers(num_actions, size=length)]


def assert_step_matches(got: tuple, ref: RefStep, t: int) -> None:
    obs, reward, terminated, truncated, info = got
    np.testing.assert_array_equal(obs, ref.obs, err_msg=f"step {t}")
    assert (reward, terminated, truncated, info["life_loss"]) == (
        ref.reward,
        ref.terminated,
        ref.truncated,
        ref.life_loss,
    ), f"step {t}"


def test_reset_plays_1_to_30_noops_drawn_from_np_random() -> None:
    # Asterix: every one of the first 31 screens differs, so the no-op count can be read off the frame.
    env, found = make_atari_env("Asterix"), []
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        ref = ReferenceAtari("asterix", seed)
        matches = [k for k in range(1, NOOP_MAX + 1) if np.array_equal(ref.noop(), obs)]
        assert matches == [expected_noops(seed)]
        found.append(matches[0])
    assert all(1 <= k <= NOOP_MAX for k in found)
    assert len(set(found)) > 1


def test_noop_max_0_plays_no_noops_and_draws_nothing() -> None:
    # The official wrapper accepts noop_max=0: the first observation is the screen right after the reset.
    env = make_atari_env("Asterix", noop_max=0)
    obs, _ = env.reset(seed=2)
    ref = ReferenceAtari("asterix", 2)
    np.testing.assert_array_equal(obs, resize(ref.ale.getScreenRGB()))
    before = env.np_random.bit_generator.state
    env.reset()
    assert env.np_random.bit_generator.state == before


def test_negative_noop_max_is_refused() -> None:
    with pytest.raises(ValueError, match="noop_max must be >= 0"):
        make_atari_env("Asterix", noop_max=-1)


def test_steps_match_reference_pooling_and_resize() -> None:
    env = make_atari_env("Asterix", seed=3)
    obs, info = env.reset()
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and not info["life_loss"]
    ref = reference_after_reset("asterix", 3)
    np.testing.assert_array_equal(obs, resize(ref.ale.getScreenRGB()))
    pooling_mattered = 0
    for t, action in enumerate(random_actions(env.action_space.n, 150)):
        expected = ref.step(action)
        pooling_mattered += not np.array_equal(expected.obs, resize(ref.ale.getScreenRGB()))
        assert_step_matches(env.step(action), expected, t)
    assert pooling_mattered > 0  # else this test could not tell max-pooling from taking the last frame


def test_life_loss_flag_and_game_over_final_frame() -> None:
    env = make_atari_env("Breakout")
    env.reset(seed=7)
    ref = reference_after_reset("breakout", 7)
    life_losses = 0
    for t, action in enumerate(random_actions(env.action_space.n, 2000, seed=1)):
        expected = ref.step(action)
        got = env.step(action)
        assert_step_matches(got, expected, t)
        assert got[4]["lives"] == ref.ale.lives()
        life_losses += expected.life_loss
        if expected.terminated:
            break
    assert expected.terminated, "random play should lose every Breakout life within 2000 steps"
    assert life_losses == 5


@pytest.mark.parametrize("extra_frames", range(FRAME_SKIP))
def test_frame_cap_truncates_with_true_final_frame(extra_frames: int) -> None:
    # Varying the cap by one frame makes the cap fall on each of the 4 frames of a skip.
    cap = 400 + extra_frames
    env = make_atari_env("Boxing", max_frames_per_episode=cap)
    env.reset(seed=0)
    ref = reference_after_reset("boxing", 0, max_frames=cap)
    steps_left = -(-(cap - expected_noops(0)) // FRAME_SKIP)  # the no-ops count towards the cap
    for t, action in enumerate(random_actions(env.action_space.n, steps_left)):
        expected = ref.step(action)
        got = env.step(action)
        assert_step_matches(got, expected, t)
        assert got[3] == (t == steps_left - 1)
    assert ref.ale.getEpisodeFrameNumber() == cap


def test_reset_restarts_a_game_that_ends_during_noops() -> None:
    cap = 5
    assert any(expected_noops(seed) > cap for seed in range(4))  # some resets do hit the cap
    env = make_atari_env("Asterix", max_frames_per_episode=cap)
    for seed in range(4):
        env.reset(seed=seed)
        assert not env.unwrapped.ale.game_over()


def test_render_gives_raw_screen_and_action_meanings() -> None:
    env = make_atari_env("breakout", seed=0)
    env.reset()
    assert env.render().shape == (210, 160, 3)
    assert env.action_meanings == ["NOOP", "FIRE", "RIGHT", "LEFT"]


def run_single(game: str, seed: int, actions: list[int], **kwargs: int) -> list[tuple]:
    """(obs, reward, terminated, truncated, final_obs, life_loss) per step of one env, auto-resetting."""
    env = make_atari_env(game, seed, **kwargs)
    env.reset()
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        final = obs
        if terminated or truncated:
            obs, _ = env.reset()
        out.append((obs, reward, terminated, truncated, final, info["life_loss"]))
    return out


def run_vector(envs: AtariEnvs, actions: np.ndarray) -> list[StepResult]:
    envs.reset()
    return [envs.step(a) for a in actions]


def test_vector_env_async_matches_single_envs_through_autoresets() -> None:
    # The small cap makes both envs auto-reset; env i must be the single env seeded with seed + i.
    cap, steps = 160, 90
    actions = np.array([random_actions(18, steps, seed=i) for i in range(2)]).T
    with AtariEnvs("Boxing", 2, seed=10, life_loss_terminal=False, max_frames_per_episode=cap) as envs:
        assert envs.num_actions == 18
        results = run_vector(envs, actions)
    for i in range(2):
        single = run_single("Boxing", 10 + i, list(actions[:, i]), max_frames_per_episode=cap)
        for t, (res, exp) in enumerate(zip(results, single, strict=True)):
            assert res.obs.shape == (2, 64, 64, 3) and res.obs.dtype == np.uint8
            assert res.final_obs.dtype == np.uint8 and res.reward.dtype == np.float32
            assert res.terminated.dtype == res.truncated.dtype == res.life_loss.dtype == np.bool_
            got = (res.obs[i], res.reward[i], res.terminated[i], res.truncated[i], res.final_obs[i])
            np.testing.assert_array_equal(got[0], exp[0], err_msg=f"env {i} step {t}")
            np.testing.assert_array_equal(got[4], exp[4], err_msg=f"env {i} step {t}")
            assert got[1:4] == exp[1:4]
    assert sum(int(r.truncated.sum()) for r in results) >= 2


def test_life_loss_terminal_ends_episode_but_game_continues() -> None:
    actions = np.array(random_actions(4, 400, seed=1))[:, None]
    with AtariEnvs("Breakout", 1, seed=5, life_loss_terminal=True) as train_envs:
        train = run_vector(train_envs, actions)
    single = run_single("Breakout", 5, list(actions[:, 0]))
    game_over = next(t for t, step in enumerate(single) if step[2])
    assert [t for t, step in enumerate(single[: game_over + 1]) if step[5]][-1] == game_over
    for t, (res, exp) in enumerate(zip(train, single, strict=True)):
        np.testing.assert_array_equal(res.obs[0], exp[0], err_msg=f"step {t}")  # no reset on a life loss
        np.testing.assert_array_equal(res.final_obs[0], exp[4], err_msg=f"step {t}")
        assert res.life_loss[0] == exp[5]
        assert res.terminated[0] == (exp[5] or exp[2])
    end = train[game_over]
    assert end.terminated[0] and not np.array_equal(end.obs, end.final_obs)  # this time the game was reset


def test_test_mode_runs_to_game_over() -> None:
    actions = np.array(random_actions(4, 400, seed=1))[:, None]
    with AtariEnvs("Breakout", 1, seed=5, life_loss_terminal=False) as test_envs:
        results = run_vector(test_envs, actions)
    game_over = next(t for t, r in enumerate(results) if r.terminated[0])
    life_loss = [t for t, r in enumerate(results[: game_over + 1]) if r.life_loss[0]]
    assert len(life_loss) == 5 and life_loss[-1] == game_over


def test_vector_env_seeding_is_deterministic() -> None:
    actions = np.array([random_actions(18, 60, seed=i) for i in range(2)]).T

    def trajectory(seed: int) -> list[StepResult]:
        with AtariEnvs("Boxing", 2, seed=seed, life_loss_terminal=True, max_frames_per_episode=100) as envs:
            return run_vector(envs, actions)

    first, again, other = trajectory(1), trajectory(1), trajectory(2)
    for a, b in zip(first, again, strict=True):
        for name in ("obs", "reward", "terminated", "truncated", "final_obs", "life_loss"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert any(not np.array_equal(a.obs, b.obs) for a, b in zip(first, other, strict=True))
