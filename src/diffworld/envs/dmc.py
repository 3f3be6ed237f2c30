"""DeepMind Control Suite tasks from pixels, as Gymnasium environments with bounded continuous actions.

A task is named ``dmc:<domain>-<task>``, e.g. ``dmc:cartpole-swingup``, ``dmc:cup-catch``: a dash between
the domain and the task because both can hold underscores (``ball_in_cup``, ``balance_sparse``), and the
``dmc:`` prefix so that no name can be taken for an Atari game's. ``cup`` is the short name of dm_control's
``ball_in_cup`` domain (as in DreamerV3); spelling is checked like the Atari games' (case, dashes and
underscores ignored), so ``dmc:Cartpole_Swingup`` and ``dmc:ball_in_cup-catch`` resolve too. Every task of
``dm_control.suite.ALL_TASKS`` can be made (``available_dmc_tasks()`` lists them); ``DMC_VISION_TASKS`` are
the 20 of the DMC-vision benchmark of DreamerV3 (Hafner et al., 2023) and the papers it compares with. The
names are resolved in ``diffworld.games`` (which the configuration checks ``game=`` with) and re-exported
here.

The protocol is the literature's (DreamerV3, DrQ-v2): 64x64 RGB frames rendered by MuJoCo from camera 0
(camera 2, the one that follows the body, for the quadruped), each action repeated for ``action_repeat``
control steps (2 by default) with the rewards summed, and dm_control's own time limit of 1,000 control
steps, so 500 agent steps at repeat 2. The time limit is a truncation (``truncated=True``); no task of the
suite terminates, but one whose ``get_termination`` would end an episode with discount 0 reports
``terminated=True``. Observations are HWC uint8 like the Atari and Catch envs'.

Rendering is headless: ``MUJOCO_GL`` is set to ``egl`` before dm_control is first imported unless it is set
already (``osmesa`` is the other headless backend; it needs the system's libOSMesa). In software (Mesa's
llvmpipe, a machine without a GPU) a 64x64 frame takes about 17 ms of one CPU core, almost all of it for the
shadows; the physics of a control step takes about 0.1 ms.

Randomness: the task draws the initial state from its ``numpy.random.RandomState``. ``reset(seed=s)`` (or the
first reset of an env made with ``seed=s``) reseeds it from ``s``, so an episode is a function of the seed
and the actions. ``get_state`` / ``set_state`` save and restore everything that decides the future frames
(MuJoCo's full integration state, the time-limit counter, the task's generator), e.g. to try several actions
from one state.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from diffworld.envs.continuous import InvalidActionError, check_box_action
from diffworld.errors import UserError
from diffworld.games import (
    DEFAULT_ACTION_REPEAT,
    DMC_PREFIX,
    DMC_VISION_TASKS,
    DMCNotInstalledError,
    UnknownDMCTaskError,
    available_dmc_tasks,
    import_dmc_suite,
    resolve_dmc_task,
)

if TYPE_CHECKING:
    from dm_control.rl.control import Environment

__all__ = [
    "DEFAULT_ACTION_REPEAT",
    "DMC_PREFIX",
    "DMC_VISION_TASKS",
    "DMCEnv",
    "DMCNotInstalledError",
    "DMCRenderError",
    "InvalidActionError",
    "UnknownDMCTaskError",
    "available_dmc_tasks",
    "make_dmc_env",
    "resolve_dmc_task",
]

_QUADRUPED_CAMERA = 2
"""The quadruped's tracking camera; every other domain is seen from camera 0 (DreamerV3, DrQ-v2)."""


class DMCRenderError(UserError, RuntimeError):
    """MuJoCo could not render headless with the chosen ``MUJOCO_GL`` backend."""


# The task names are resolved in ``diffworld.games``, below the configuration that checks them.
_import_suite = import_dmc_suite


class DMCEnv(gym.Env[np.ndarray, np.ndarray]):
    """One DeepMind Control Suite task from pixels: ``(size, size, 3)`` uint8 frames, a float32 Box of
    actions.

    Args:
        task: ``dmc:<domain>-<task>`` (see ``resolve_dmc_task``).
        seed: seed for the first ``reset`` called without one, so that a freshly made env is reproducible.
        action_repeat: control steps per agent step, the action held and the rewards summed.
        size: side of the square RGB observation.
        camera: MuJoCo camera id; None takes the literature's (2 for the quadruped, else 0).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 25}  # noqa: RUF012 (as Gymnasium declares it)

    def __init__(
        self,
        task: str,
        seed: int | None = None,
        *,
        action_repeat: int = DEFAULT_ACTION_REPEAT,
        size: int = 64,
        camera: int | None = None,
        render_mode: str | None = "rgb_array",
        max_episode_steps: int | None = None,
    ) -> None:
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.task_name, domain, task_name = resolve_dmc_task(task)
        suite = import_dmc_suite()
        self._env: Environment = suite.load(domain, task_name)
        self.action_repeat = action_repeat
        self.camera = (_QUADRUPED_CAMERA if domain == "quadruped" else 0) if camera is None else camera
        self._size = size
        self.render_mode = render_mode
        spec = self._env.action_spec()
        self._action_box = gym.spaces.Box(
            low=np.asarray(spec.minimum, np.float32).reshape(spec.shape),
            high=np.asarray(spec.maximum, np.float32).reshape(spec.shape),
            dtype=np.float32,
        )
        self.action_space = self._action_box
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.control_steps_per_episode = int(self._env._step_limit)
        """dm_control's time limit in control steps (1,000 for every suite task)."""
        self.max_episode_steps = -(-self.control_steps_per_episode // action_repeat)
        """Agent steps in an episode (500 at repeat 2), or ``max_episode_steps`` if it is given and fewer:
        the episode is truncated then."""
        if max_episode_steps is not None:
            if max_episode_steps < 1:
                raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
            self.max_episode_steps = min(self.max_episode_steps, max_episode_steps)
        self._pending_seed = seed
        self._steps = 0
        self._over = True
        self._frame = np.zeros(self.observation_space.shape, np.uint8)

    @property
    def physics(self) -> Any:
        """dm_control's ``Physics`` of the task (read it; changing it bypasses ``get_state``)."""
        return self._env.physics

    @property
    def action_meanings(self) -> list[str]:
        """The names of the action's components: the task's MuJoCo actuators (``right_hip``, ... for the
        walker), ``a<i>`` for one without a name."""
        model = self.physics.model
        return [model.id2name(i, "actuator") or f"a{i}" for i in range(model.nu)]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A new episode; with a seed (or the constructor's, on the first reset), the task's generator is
        reseeded from it, else it goes on."""
        seed = self._pending_seed if seed is None else seed
        self._pending_seed = None
        super().reset(seed=seed)
        if seed is not None:
            # A 32-bit seed drawn from Gymnasium's generator: RandomState takes no larger one.
            self._env.task.random.seed(int(self.np_random.integers(2**32)))
        self._env.reset()
        self._steps = 0
        self._over = False
        self._frame = self._render()
        return self._frame.copy(), self._info(discount=1.0)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Hold ``action`` for ``action_repeat`` control steps (fewer if the episode ends), summing the
        rewards.

        Raises:
            InvalidActionError: the action's shape is not the action space's, or a value is NaN, infinite or
                outside ``[low, high]`` (checked in float32, the action space's dtype; nothing is clipped).
        """
        if self._over:
            raise RuntimeError("step() called before reset() or after the episode ended: call reset()")
        action = self._check_action(action)
        reward = 0.0
        time_step = None
        for _ in range(self.action_repeat):
            time_step = self._env.step(action)
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        assert time_step is not None
        self._steps += 1
        discount = 1.0 if time_step.discount is None else float(time_step.discount)
        terminated = bool(time_step.last() and discount == 0.0)
        truncated = bool((time_step.last() or self._steps >= self.max_episode_steps) and not terminated)
        self._over = terminated or truncated
        self._frame = self._render()
        return self._frame.copy(), reward, terminated, truncated, self._info(discount)

    def render(self) -> np.ndarray:
        """The current observation (Gymnasium's ``rgb_array`` mode)."""
        return self._frame.copy()

    def get_state(self) -> dict[str, Any]:
        """Everything that decides this env's future frames, to continue exactly with ``set_state``.

        MuJoCo's full integration state (``mj_getState`` with ``mjSTATE_INTEGRATION``: time, positions,
        velocities, actuator activations, the constraint solver's warm start, controls, applied forces,
        mocap bodies), dm_control's time-limit counter, the task's and Gymnasium's generators, this env's step
        count. Arrays are stored as bytes, so that the state survives ``torch.save`` /
        ``torch.load(weights_only=True)``. Settings (task, repeat, size, camera) are not part of it: restore
        into an env made with the same ones.
        """
        import mujoco

        task_random = self._env.task.random.get_state()
        return {
            "physics": self.physics.get_state(sig=mujoco.mjtState.mjSTATE_INTEGRATION).tobytes(),
            "control_steps": int(self._env._step_count),
            "reset_next_step": bool(self._env._reset_next_step),
            "task_random": (
                task_random[0],
                task_random[1].tobytes(),
                int(task_random[2]),
                int(task_random[3]),
                float(task_random[4]),
            ),
            "np_random": self.np_random.bit_generator.state,
            "pending_seed": self._pending_seed,
            "steps": self._steps,
            "over": self._over,
            "frame": self._frame.tobytes(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Put the env back where ``get_state`` found it (the env need not have been reset)."""
        import mujoco

        physics = self.physics
        physics.set_state(
            np.frombuffer(state["physics"], np.float64), sig=mujoco.mjtState.mjSTATE_INTEGRATION
        )
        # Recompute the quantities derived from the state (dm_control's step expects them up to date).
        physics.forward()
        self._env._step_count = int(state["control_steps"])
        self._env._reset_next_step = bool(state["reset_next_step"])
        name, key, pos, has_gauss, cached = state["task_random"]
        self._env.task.random.set_state((name, np.frombuffer(key, np.uint32), pos, has_gauss, cached))
        self.np_random.bit_generator.state = state["np_random"]
        self._pending_seed = state["pending_seed"]
        self._steps = int(state["steps"])
        self._over = bool(state["over"])
        self._frame = np.frombuffer(state["frame"], np.uint8).reshape(self.observation_space.shape).copy()

    # An attribute as well, so that a vector env's ``set_attr`` can hand every env its own state.
    state = property(get_state, set_state)

    def _check_action(self, action: Any) -> np.ndarray:
        space = self._action_box
        return check_box_action(action, space.low, space.high, self.task_name).astype(np.float64)

    def _render(self) -> np.ndarray:
        try:
            frame = self.physics.render(self._size, self._size, camera_id=self.camera)
        except Exception as err:  # the backends fail with assorted errors (ImportError, AttributeError, ...)
            backend = os.environ.get("MUJOCO_GL")
            first_line = (str(err).strip().splitlines() or [""])[0]
            raise DMCRenderError(
                f"MuJoCo cannot render with MUJOCO_GL={backend} ({type(err).__name__}: {first_line}): "
                "MUJOCO_GL=egl needs the system's libEGL and Mesa (Debian: libegl1 libgl1-mesa-dri), "
                "MUJOCO_GL=osmesa needs libOSMesa (Debian: libosmesa6)"
            ) from err
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def _info(self, discount: float) -> dict[str, Any]:
        return {
            "lives": 0,
            "life_loss": False,
            "episode_frame_number": int(self._env._step_count),
            "discount": discount,
        }


def make_dmc_env(
    task: str,
    seed: int | None = None,
    *,
    action_repeat: int = DEFAULT_ACTION_REPEAT,
    size: int = 64,
    camera: int | None = None,
    max_episode_steps: int | None = None,
) -> DMCEnv:
    """One DeepMind Control Suite task from pixels (see ``DMCEnv``)."""
    return DMCEnv(
        task,
        seed,
        action_repeat=action_repeat,
        size=size,
        camera=camera,
        max_episode_steps=max_episode_steps,
    )
