"""Action fidelity: whether an engine makes each action do what the real game does with it.

The dataset's real game is rebuilt from its ``source`` (``diffworld engine record`` stores the Gymnasium id,
its ``make`` arguments, the policy and the seed) and played anew with uniformly random actions, from a seed
that is not the recording's: held-out play. Every ``every`` steps of an episode, once it holds the engine's
``context_length`` frames, the game is probed: its state is cloned, each action of its discrete action space
is stepped from that state, and the state restored (``get_state`` / ``set_state`` where the env has them, as
diffworld's Catch and Atari 100k envs do, else the ALE's ``cloneState(include_rng=True)`` / ``restoreState``
with the env's ``np_random``: sticky actions draw from the emulator's RNG, so each action meets the same
draws). The next frames, compared exactly, sort the actions into distinct real outcomes; a state with a single
outcome (no action changes anything) is skipped.

At each kept state the engine predicts the next frame for every action in one batch, from the same context:
the last ``num_cond`` real frames made low-resolution as in its training (``EngineSamplers.low_res_of``), the
real actions taken after all but the last of them, and the action probed; its upsampler, where it has one,
gets the last real full-resolution frames. Each action is a trial, a success where the prediction is closer
(mean squared error) to the real outcome of that action than to every other distinct real outcome (a tie
fails): at full resolution through the upsampler, and at low resolution against the real outcomes made
low-resolution. ``fidelity`` is successes over trials (the upsampled one where there is an upsampler);
``chance``, the mean over trials of one over the state's number of distinct outcomes, is what a guess among
the outcomes scores. Play stops after ``states`` kept states (or ``50 * states * every + 1000`` steps).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from diffworld.data.actions import ActionSpec
from diffworld.data.folder_store import EngineDataset
from diffworld.data.frames import frames_to_tensor
from diffworld.engine.convert.from_gym import PolicyLoader, as_rgb, load_policy
from diffworld.engine.imagine import EngineSamplers
from diffworld.errors import UserError

FIDELITY_STATES = 64
"""States probed by default (``engine eval`` on a dataset recorded from a Gymnasium env)."""
FIDELITY_EVERY = 10
"""Steps between probed states of an episode by default."""
SEED_OFFSET = 1_000_000
"""The default seed of the held-out play: the recording's seed plus this."""
_MAX_SEED = 2**32 - 1


class ProbeGame(Protocol):
    """A real game that can be played and probed: what ``evaluate_action_fidelity`` needs."""

    name: str
    spec: ActionSpec
    action_names: list[str]

    @property
    def num_actions(self) -> int: ...

    def action_vector(self, action: int) -> np.ndarray:
        """The engine's action vector (``spec``) of action ``action`` (0 .. num_actions - 1)."""
        ...

    def reset(self, seed: int | None) -> np.ndarray:
        """A new episode's first frame, (H, W, 3) uint8."""
        ...

    def step(self, action: int) -> tuple[np.ndarray, bool]:
        """The next frame after ``action``, and whether the episode ended with it."""
        ...

    def outcomes(self) -> list[np.ndarray]:
        """The next frame after each action from the current state, which is left as it was."""
        ...


class GymGame:
    """A Gymnasium env with a ``Discrete`` action space whose state can be cloned (see the module docstring);
    its frames are its observations when they are RGB images (unless ``use_render``), else ``render()``, as
    ``diffworld engine record`` records them."""

    def __init__(self, env: Any, name: str, use_render: bool = False) -> None:
        import gymnasium as gym

        from diffworld.engine.convert.from_gym import action_spec_for, env_action_meanings

        self.env = env
        self.name = name
        space = env.action_space
        if not isinstance(space, gym.spaces.Discrete):
            raise UserError(
                f"{name} has the action space {space}: action fidelity probes every action of a Discrete one"
            )
        self.spec, self._to_vector = action_spec_for(space)
        self._start = int(space.start)
        self._n = int(space.n)
        meanings = env_action_meanings(env)
        self.action_names = (
            meanings if meanings and len(meanings) == self._n else [str(a) for a in range(self._n)]
        )
        self._layer, self._save, self._restore = _state_handle(env, name)
        obs, _ = env.reset()
        self._from_obs = not use_render and as_rgb(obs) is not None
        self.frame_size: tuple[int, int] = self._frame(obs, env).shape[:2]

    @property
    def num_actions(self) -> int:
        return self._n

    def action_vector(self, action: int) -> np.ndarray:
        return np.asarray(self._to_vector(self._start + action), dtype=np.float32)

    def _frame(self, obs: Any, holder: Any) -> np.ndarray:
        frame = as_rgb(obs if self._from_obs else holder.render())
        if frame is None:
            raise UserError(f"{self.name} gave a frame that is not an RGB image")
        return np.array(frame, copy=True)

    def reset(self, seed: int | None) -> np.ndarray:
        obs, _ = self.env.reset(seed=seed)
        return self._frame(obs, self.env)

    def step(self, action: int) -> tuple[np.ndarray, bool]:
        obs, _, terminated, truncated, _ = self.env.step(self._start + action)
        return self._frame(obs, self.env), bool(terminated or truncated)

    def outcomes(self) -> list[np.ndarray]:
        state = self._save()
        frames = []
        try:
            for action in range(self._n):
                self._restore(state)
                obs, *_ = self._layer.step(self._start + action)
                frames.append(self._frame(obs, self._layer))
        finally:
            self._restore(state)
        return frames

    def close(self) -> None:
        self.env.close()


def _state_handle(env: Any, name: str) -> tuple[Any, Callable[[], Any], Callable[[Any], None]]:
    """(the layer of ``env`` to step when probing, save its state, restore it): the outermost layer with
    ``get_state`` / ``set_state``, else the ALE env inside (its emulator with its RNG, and ``np_random``)."""
    import gymnasium as gym

    layer = env
    while True:
        get, put = getattr(layer, "get_state", None), getattr(layer, "set_state", None)
        if callable(get) and callable(put):
            return layer, get, put
        if not isinstance(layer, gym.Wrapper):
            break
        layer = layer.env
    inner = env.unwrapped
    ale = getattr(inner, "ale", None)
    if ale is None:
        raise UserError(
            f"{name}'s state cannot be cloned (it has no get_state/set_state and is no ALE game): action "
            "fidelity needs to step every action from the same state"
        )

    def save() -> Any:
        return ale.cloneState(include_rng=True), inner.np_random.bit_generator.state

    def restore(state: Any) -> None:
        ale.restoreState(state[0])
        inner.np_random.bit_generator.state = state[1]

    return inner, save, restore


def _recorded_from(dataset: EngineDataset) -> Mapping[str, Any] | None:
    """The dataset's ``source`` if ``diffworld engine record`` made it (it names a Gymnasium env)."""
    source = dataset.source
    if isinstance(source, dict) and source.get("converter") == "gym" and isinstance(source.get("env"), str):
        return source
    return None


def has_game(dataset: EngineDataset) -> bool:
    """Whether the dataset names the Gymnasium env it was recorded from."""
    return _recorded_from(dataset) is not None


def open_game(dataset: EngineDataset, spec: ActionSpec, policy_loader: PolicyLoader | None = None) -> GymGame:
    """The real game of ``dataset``, rebuilt from its ``source``; one-line errors where there is none, it
    cannot be made, or its actions or frames are not the dataset's (``spec``: the engine's actions). A
    dataset recorded by a diffworld agent needs ``policy_loader`` (``from_gym.PolicyLoader``), which reads
    the agent's game settings."""
    source = _recorded_from(dataset)
    if source is None:
        raise UserError(
            f"{dataset.folder} was not recorded from a Gymnasium environment (its dataset.json 'source' "
            "names none): action fidelity needs the real game; evaluate with --fidelity-states 0"
        )
    env_id = str(source["env"])
    policy = source.get("policy", "random")
    kwargs = source.get("env_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise UserError(f"{dataset.folder}: the source's env_kwargs must be an object, got {kwargs!r}")
    if policy == "random":
        from diffworld.engine.convert.from_gym import _make_gym_env

        game = GymGame(_make_gym_env(env_id, kwargs), env_id)
    else:
        agent_env = _agent_game_env(Path(str(policy)), env_id, policy_loader)
        game = GymGame(agent_env, env_id, use_render=True)
    try:
        if game.spec != spec:
            raise UserError(
                f"{env_id} has the actions {game.spec.describe()}, but the engine takes {spec.describe()}"
            )
        if game.frame_size != dataset.frame_size:
            (h, w), (dh, dw) = game.frame_size, dataset.frame_size
            why = "" if "env_kwargs" in source else " (its source keeps no env_kwargs: record it again)"
            raise UserError(
                f"{env_id} made with {kwargs or 'no arguments'} gives frames of {h}x{w}, but "
                f"{dataset.folder} holds {dh}x{dw}{why}"
            )
    except UserError:
        game.close()
        raise
    return game


def _agent_game_env(agent: Path, game: str, policy_loader: PolicyLoader | None) -> Any:
    """The env a diffworld agent recorded its game in (``from_gym._make_agent_env``): the settings of the
    agent's configuration."""
    from diffworld.envs.make import make_env

    if not agent.exists():
        raise UserError(
            f"the dataset was recorded by the agent {agent}, which is gone: action fidelity needs its game's "
            "settings; evaluate with --fidelity-states 0"
        )
    env = load_policy(policy_loader, agent, "cpu", 0).env
    return make_env(
        game,
        max_frames_per_episode=env.max_frames_per_episode,
        noop_max=env.noop_max,
        frame_skip=env.frame_skip,
        size=env.size,
    )


def fidelity_seed(dataset: EngineDataset, seed: int | None) -> int:
    """The seed of the held-out play: ``seed``, which must not be the recording's, else the recording's plus
    ``SEED_OFFSET``."""
    source = _recorded_from(dataset) or {}
    recorded = source.get("seed")
    recorded = recorded if isinstance(recorded, int) else None
    if seed is None:
        return ((recorded or 0) + SEED_OFFSET) % (_MAX_SEED + 1)
    if seed == recorded:
        raise UserError(
            f"--fidelity-seed {seed} is the seed {dataset.folder} was recorded with: held-out play needs "
            "another"
        )
    return seed


def _closest(pred: Tensor, real: Tensor, classes: Tensor) -> Tensor:
    """(A,) bool: whether each prediction (A, C, H, W) is strictly closer (MSE) to the real outcome of its
    class ``classes[a]`` among ``real`` (M, C, H, W) than to every other one."""
    d = (pred[:, None].double() - real[None].double()).pow(2).flatten(2).mean(2)
    rows = torch.arange(d.size(0), device=d.device)
    own = d[rows, classes]
    others = d.clone()
    others[rows, classes] = torch.inf
    return own < others.min(dim=1).values


@torch.no_grad()
def evaluate_action_fidelity(
    engine: EngineSamplers,
    game: ProbeGame,
    *,
    states: int = FIDELITY_STATES,
    every: int = FIDELITY_EVERY,
    seed: int = SEED_OFFSET,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """The action fidelity of ``engine`` on ``game`` (see the module docstring), as a JSON-ready dict.

    The play is seeded by ``seed`` (the first reset and the random actions, drawn from a ``torch.Generator``);
    ``generator`` draws the engine's samples. Keys: ``fidelity`` (None without trials), ``resolution`` (of
    ``fidelity``), ``chance``, ``low_res`` and (with an upsampler) ``full_res``, each ``{"fidelity",
    "successes"}``; ``states`` (kept), ``skipped_states`` (a single outcome), ``trials``,
    ``distinct_outcomes`` (states by their number of outcomes), ``per_action`` (``{name: {"trials",
    "low_res", "full_res"}}``, successes), ``episodes`` and ``steps`` played, ``nondeterministic_steps``
    (played steps whose frame differed from the probed outcome of the same action: should be 0).
    """
    if states < 1 or every < 1:
        raise UserError(f"fidelity states and every must be >= 1, got {states} and {every}")
    device = torch.device(device)
    context = engine.context_length
    max_steps = max_steps if max_steps is not None else 50 * states * every + 1000
    n = game.num_actions
    vectors = torch.tensor(
        np.stack([game.action_vector(a) for a in range(n)]), dtype=torch.float32, device=device
    )
    policy = torch.Generator().manual_seed(seed)
    upsample = engine.upsampler is not None
    resolutions = ("low_res", "full_res") if upsample else ("low_res",)
    successes = {res: np.zeros(n, dtype=np.int64) for res in resolutions}
    action_trials = np.zeros(n, dtype=np.int64)
    outcome_counts: Counter[int] = Counter()
    kept = skipped = steps = nondeterministic = 0
    chance_sum = 0.0

    frames = [game.reset(seed)]  # the episode's last ``context`` frames
    actions: list[int] = []  # the actions taken after all but the last of them
    t, episodes = 0, 1  # t: the current frame's index in its episode
    while kept < states and steps < max_steps:
        probed: list[np.ndarray] | None = None
        if t >= context - 1 and (t - (context - 1)) % every == 0:
            probed = game.outcomes()
            index: dict[bytes, int] = {}
            classes = [index.setdefault(o.tobytes(), len(index)) for o in probed]
            m = len(index)
            if m < 2:
                skipped += 1
            else:
                cls = torch.tensor(classes, device=device)
                real_full = frames_to_tensor(np.stack([probed[classes.index(j)] for j in range(m)]), device)
                ctx_full = frames_to_tensor(np.stack(frames[-context:]), device)
                low_ctx = engine.low_res_of(ctx_full)[context - engine.num_cond :]
                past = (
                    vectors[actions[len(actions) - (engine.num_cond - 1) :]]
                    if engine.num_cond > 1
                    else vectors[:0]
                )
                act = torch.cat([past[None].expand(n, -1, -1), vectors[:, None]], dim=1)
                low = engine.predictor.predict_next(
                    low_ctx[None].expand(n, *low_ctx.shape).contiguous(), act, generator=generator
                )
                successes["low_res"] += _closest(low, engine.low_res_of(real_full), cls).cpu().numpy()
                if engine.upsampler is not None:
                    prev = ctx_full[context - engine.num_cond_full :]
                    full = engine.upsampler.upsample(
                        low, prev[None].expand(n, *prev.shape).contiguous(), generator=generator
                    )
                    successes["full_res"] += _closest(full, real_full, cls).cpu().numpy()
                action_trials += 1
                chance_sum += n / m
                outcome_counts[m] += 1
                kept += 1
                if kept >= states:
                    break
        action = int(torch.randint(n, (1,), generator=policy))
        frame, ended = game.step(action)
        steps += 1
        if probed is not None and not np.array_equal(frame, probed[action]):
            nondeterministic += 1
        if ended:
            frames, actions, t = [game.reset(None)], [], 0
            episodes += 1
        else:
            frames = [*frames[-(context - 1) :], frame] if context > 1 else [frame]
            actions = [*actions, action][-(context - 1) :] if context > 1 else []
            t += 1

    trials = int(action_trials.sum())
    by_res = {
        res: {"fidelity": (int(s.sum()) / trials if trials else None), "successes": int(s.sum())}
        for res, s in successes.items()
    }
    main = "full_res" if upsample else "low_res"
    return {
        "fidelity": by_res[main]["fidelity"],
        "resolution": main,
        "chance": chance_sum / trials if trials else None,
        **by_res,
        "states": kept,
        "skipped_states": skipped,
        "trials": trials,
        "distinct_outcomes": {str(m): c for m, c in sorted(outcome_counts.items())},
        "per_action": {
            name: {"trials": int(action_trials[a]), **{res: int(successes[res][a]) for res in resolutions}}
            for a, name in enumerate(game.action_names)
        },
        "episodes": episodes,
        "steps": steps,
        "nondeterministic_steps": nondeterministic,
        "seed": seed,
        "every": every,
        "max_states": states,
    }


def format_fidelity(report: Mapping[str, Any]) -> str:
    """``report["action_fidelity"]`` in a few lines."""
    if "skipped" in report:
        return f"Action fidelity: not measured ({report['skipped']})"
    if not report["trials"]:
        return (
            f"Action fidelity on {report['env']}: no state where the actions' outcomes differ in "
            f"{report['steps']} steps"
        )

    def pct(x: float) -> str:
        return f"{100 * x:.1f} %"

    figures = [
        f"{pct(report[res]['fidelity'])} {label}"
        for res, label in (("full_res", "upsampled"), ("low_res", "low-res"))
        if res in report
    ]
    lines = [
        f"Action fidelity on {report['env']} (held-out play, seed {report['seed']}): {', '.join(figures)}; "
        f"chance {pct(report['chance'])}; {report['trials']} trials in {report['states']} states "
        f"({report['skipped_states']} skipped: one outcome)",
    ]
    main = report["resolution"]
    per = ", ".join(
        f"{name} {counts[main]}/{counts['trials']}" for name, counts in report["per_action"].items()
    )
    lines.append(f"  per action ({'upsampled' if main == 'full_res' else 'low-res'}): {per}")
    if report["nondeterministic_steps"]:
        lines.append(
            f"  warning: {report['nondeterministic_steps']} played steps differed from the probed outcome of "
            "their action (the env's state is not fully restored)"
        )
    return "\n".join(lines)


def engine_action_fidelity(
    engine: EngineSamplers,
    dataset: EngineDataset,
    game: GymGame,
    *,
    states: int = FIDELITY_STATES,
    every: int = FIDELITY_EVERY,
    seed: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """``evaluate_action_fidelity`` on the real game of ``dataset`` (``open_game``), seeded by
    ``fidelity_seed``, with the env it was made of."""
    play_seed = fidelity_seed(dataset, seed)
    source = _recorded_from(dataset) or {}
    report = evaluate_action_fidelity(
        engine,
        game,
        states=states,
        every=every,
        seed=play_seed,
        device=device,
        generator=torch.Generator(device).manual_seed(play_seed),
    )
    return {
        "env": game.name,
        "env_kwargs": source.get("env_kwargs") or {},
        "recorded_by": source.get("policy", "random"),
        **report,
    }
