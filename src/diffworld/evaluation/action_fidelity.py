"""Action fidelity: whether a world model makes each action do what the real game does with it. The
measurement both products share: an engine's on the real game of its recorded dataset
(``engine/action_fidelity.py``), an agent's on its continuous-control game (``agent/action_fidelity.py``).

The real game is played with uniformly random actions among its ``num_actions`` probe actions, from a seed.
Every ``every`` steps of an episode, once it holds the world model's ``context_length`` frames, the game is
probed: each probe action is stepped from the same state (``ProbeGame.outcomes``: the state is saved and
restored), and the next frames, compared exactly, sort the actions into distinct real outcomes; a state with
a single outcome (no action changes anything) is skipped.

At each kept state the world model predicts the next frame for every probe action in one batch, from the same
context: the last ``num_cond`` real frames (made low-resolution as in its training, ``low_res_of``; an
agent's world model takes them as they are), the real actions taken after all but the last of them, and the
action probed; an upsampler, where there is one, gets the last real full-resolution frames. Each action is a
trial, a success where the prediction is closer (mean squared error) to the real outcome of that action than
to every other distinct real outcome (a tie fails): at full resolution through the upsampler, and at low
resolution against the real outcomes made low-resolution. ``fidelity`` is successes over trials (the
upsampled one where there is an upsampler); ``chance``, the mean over trials of one over the state's number
of distinct outcomes, is what a guess among the outcomes scores (1 / K where all K outcomes differ). Play
stops after ``states`` kept states (or ``50 * states * every + 1000`` steps).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from diffworld.data.actions import ActionSpec
from diffworld.data.frames import frames_to_tensor
from diffworld.errors import UserError
from diffworld.models.diffusion.denoiser import FrameSampler

FIDELITY_STATES = 64
"""States probed by default (``engine eval`` on a dataset recorded from a Gymnasium env)."""
FIDELITY_EVERY = 10
"""Steps between probed states of an episode by default."""
SEED_OFFSET = 1_000_000
"""The default seed of an engine's held-out play: the recording's seed plus this."""


class FrameUpsampler(Protocol):
    def upsample(
        self, low_res_next: Tensor, prev_full: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """(B, 3, H, W) full-resolution frames of ``low_res_next`` (B, 3, h, w), given the previous
        full-resolution frames ``prev_full`` (B, L_full, 3, H, W), all in [-1, 1]."""
        ...


class FidelityModel(Protocol):
    """What the measurement needs of a world model (``engine.imagine.EngineSamplers`` has it)."""

    @property
    def predictor(self) -> FrameSampler:
        """The next-frame sampler, on (B, num_cond, 3, h, w) frames and (B, num_cond, D) action vectors."""
        ...

    @property
    def num_cond(self) -> int: ...

    @property
    def upsampler(self) -> FrameUpsampler | None: ...

    @property
    def num_cond_full(self) -> int:
        """The previous full-resolution frames the upsampler is conditioned on."""
        ...

    @property
    def context_length(self) -> int:
        """Real frames a state needs before it: enough for the predictor and the upsampler."""
        ...

    def low_res_of(self, frames: Tensor) -> Tensor:
        """(..., 3, H, W) full-resolution frames in [-1, 1] as the predictor saw such frames in training."""
        ...


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


def closest(pred: Tensor, real: Tensor, classes: Tensor) -> Tensor:
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
    engine: FidelityModel,
    game: ProbeGame,
    *,
    states: int = FIDELITY_STATES,
    every: int = FIDELITY_EVERY,
    seed: int = SEED_OFFSET,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """The action fidelity of ``engine`` (an engine's samplers, or an agent's world model seen as one) on
    ``game`` (see the module docstring), as a JSON-ready dict.

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
                successes["low_res"] += closest(low, engine.low_res_of(real_full), cls).cpu().numpy()
                if engine.upsampler is not None:
                    prev = ctx_full[context - engine.num_cond_full :]
                    full = engine.upsampler.upsample(
                        low, prev[None].expand(n, *prev.shape).contiguous(), generator=generator
                    )
                    successes["full_res"] += closest(full, real_full, cls).cpu().numpy()
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
