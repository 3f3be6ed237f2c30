"""Interactive play: the policy or you, inside the world model or in the real game.

The game logic (:class:`PlaySession`, a state machine fed with ``PlayCommand`` values and the held game
buttons) is separate from pygame (:class:`PlayApp` turns key events into commands and draws), so that tests
drive it headless; the rules both products' sessions share (pause, step, horizon, recording, help, quit) and
the pygame loop are ``viz/play_core.py``'s. Environments:

- the world model: a :class:`~diffworld.agent.imagination.WorldModelEnv` of batch size 1 whose trajectories
  start from L real frames and actions of the run's dataset (an agent folder has no dataset: a few real
  steps of the policy are played first instead); its horizon, the steps after which a trajectory restarts
  from new real frames, changes with ``[`` and ``]``;
- the real test environment (episodes run to game over) and the real training one (a life loss ends an
  episode), both at the run's settings (the Atari 100k ones for an Atari game).

You play an Atari game with the arrow keys and the space bar (``viz/keymaps.py``); a continuous-control game
(``dmc:``, ``gym:``, CatchContinuous) with a pair of keys per action component, held for -1 or +1
(``agent/play_keys.py``, or a key map file: ``--keymap``).

The policy is the actor-critic with its LSTM state: it sees every frame, whoever plays, so control can
pass to it at any moment; its state restarts with each episode (burnt in on the world model's context
frames, zero in a real game). Recording writes every episode played while it is on, in the dataset format
(``EpisodeDataset.load`` reads the folder); an episode cut by a reset, a switch or stopping the recording is
kept too, as an episode cut by the end of collection (neither terminated nor truncated).
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from diffworld.agent.imagination import WorldModelEnv
from diffworld.agent.play_keys import CONTROL_KEYS, BoxKeys, box_keys, keymap_refusal
from diffworld.data import Episode, EpisodeDataset, SegmentSampler
from diffworld.data.frames import frames_to_tensor, tensor_to_frames
from diffworld.data.storage import episode_path
from diffworld.errors import UserError
from diffworld.models.actor_critic import ActorCritic, LSTMState
from diffworld.viz.display import Window, import_pygame
from diffworld.viz.episodes import RECORDING_INFO
from diffworld.viz.keymaps import ButtonMap
from diffworld.viz.play_core import (
    PlayAppCore,
    PlayCommand,
    PlaySessionCore,
    TrajectoryRecorder,
    controls_text,
    default_record_dir,
    play_until_quit,
)
from diffworld.world_model_folder import PlayOptions

if TYPE_CHECKING:
    from diffworld.agent.trained import TrainedAgent
    from diffworld.envs.vector import AtariEnvs

_CONTEXT_EPISODES = 100
"""World-model starts in a run folder come from its last this many episodes (not all: a whole dataset is
about 1.2 GB of frames)."""
_LIVE_READ_ATTEMPTS = 5
"""Reads of a live run's episodes before giving up (the trainer may merge one's parts meanwhile)."""
_CONTEXT_EXTRA_STEPS = 32
"""Without a dataset, the policy plays L + this many real steps to draw world-model starts from."""


class EnvKind(enum.Enum):
    WORLD_MODEL = "world model"
    TEST = "real game (test)"
    TRAIN = "real game (train)"


ENV_CHOICES = {"world-model": EnvKind.WORLD_MODEL, "test": EnvKind.TEST, "train": EnvKind.TRAIN}
"""``--env``'s choices."""
SCALE = 8
"""Screen pixels per frame pixel (``--scale``'s default for an agent)."""


@dataclass(frozen=True)
class Start:
    """The first frame of an episode, and the frames before it where there are some (world model)."""

    obs: np.ndarray
    """(H, W, 3) uint8."""
    history: Tensor | None = None
    """(1, L-1, 3, H, W) in [-1, 1]: context frames, to burn the policy's LSTM in on."""
    history_mask: Tensor | None = None


@dataclass(frozen=True)
class Transition:
    reached: np.ndarray
    """(H, W, 3) uint8: the frame the step reached (the episode's last where it ended)."""
    reward: float
    terminated: bool
    truncated: bool
    next_start: Start | None
    """Where the episode ended: the next episode's start (environments restart at once)."""


Action = int | np.ndarray
"""An action played: an index, or a (D,) float32 vector in [-1, 1] of a continuous-control game."""


class PlayEnv(Protocol):
    def reset(self) -> Start: ...

    def step(self, action: Action) -> Transition: ...

    def close(self) -> None: ...


class WorldModelPlayEnv:
    """One imagined trajectory; it restarts from new dataset segments when it ends or reaches the horizon."""

    def __init__(self, env: WorldModelEnv) -> None:
        if env.num_envs != 1:
            raise ValueError("play needs a WorldModelEnv of batch size 1")
        self.env = env

    @property
    def horizon(self) -> int:
        return self.env.horizon

    @horizon.setter
    def horizon(self, value: int) -> None:
        self.env.horizon = value

    def reset(self) -> Start:
        s = self.env.reset()
        return Start(tensor_to_frames(s.obs[0]), s.history, s.history_mask)

    def step(self, action: Action) -> Transition:
        if isinstance(action, np.ndarray):
            act = torch.as_tensor(action[None], dtype=torch.float32, device=self.env.device)
        else:
            act = torch.tensor([action], dtype=torch.long, device=self.env.device)
        s = self.env.step(act)
        end, trunc = bool(s.end[0]), bool(s.trunc[0])
        next_start = Start(tensor_to_frames(s.obs[0]), s.history, s.history_mask) if end or trunc else None
        return Transition(tensor_to_frames(s.final_obs[0]), float(s.rew[0]), end, trunc, next_start)

    def close(self) -> None:
        pass


class RealPlayEnv:
    """One real Atari 100k environment (``AtariEnvs`` of one env)."""

    def __init__(self, envs: AtariEnvs) -> None:
        self.envs = envs

    def reset(self) -> Start:
        return Start(self.envs.reset()[0])

    def step(self, action: Action) -> Transition:
        r = self.envs.step(np.array([action]))
        done = bool(r.done[0])
        next_start = Start(r.obs[0]) if done else None
        return Transition(
            r.final_obs[0], float(r.reward[0]), bool(r.terminated[0]), bool(r.truncated[0]), next_start
        )

    def close(self) -> None:
        self.envs.close()


class Recorder(TrajectoryRecorder[tuple[Action, float]]):
    """Episodes played while recording is on, written to ``directory`` in the dataset format as they end.

    The folder is created, or appended to, when the first episode is written; ``recording.json`` beside the
    episodes names the game and its actions. ``action_shape``: ``(D,)`` for the vectors of a continuous
    game.
    """

    def __init__(
        self,
        directory: Path,
        frame_shape: tuple[int, int, int],
        info: dict[str, Any],
        action_shape: tuple[int, ...] = (),
    ) -> None:
        super().__init__(directory)
        self.frame_shape = frame_shape
        self.action_shape = action_shape
        self.info = info
        self._dataset: EpisodeDataset | None = None

    def finish(self, terminated: bool = False, truncated: bool = False) -> Path | None:
        """Write the running episode if it has a step (both flags False: cut short); returns its file."""
        return self._written(partial(self._write, terminated, truncated))

    def _write(self, terminated: bool, truncated: bool) -> Path:
        # (T,) indices, or (T, D) vectors of a continuous-control game.
        actions = np.asarray(
            [action for action, _ in self.steps], dtype=np.float32 if self.action_shape else np.int64
        )
        rewards = [reward for _, reward in self.steps]
        episode = Episode.from_steps(
            self.frames, actions, rewards, terminated=terminated, truncated=truncated
        )
        return episode_path(self.directory, self._open().add(episode))

    def _open(self) -> EpisodeDataset:
        if self._dataset is None:
            if self.directory.is_dir() and any(self.directory.glob("episode_*.npz")):
                self._dataset = EpisodeDataset.load(
                    self.directory, frame_shape=self.frame_shape, action_shape=self.action_shape
                )
            else:
                self._dataset = EpisodeDataset(
                    self.directory, frame_shape=self.frame_shape, action_shape=self.action_shape
                )
            info_path = self.directory / RECORDING_INFO
            if not info_path.exists():
                info_path.write_text(json.dumps(self.info, indent=2) + "\n")
        return self._dataset


class PlaySession(PlaySessionCore[Collection[str]]):
    """The state of play and its rules, without any display (see the module docstring).

    ``make_env`` builds each environment the first time it is used. ``log`` receives the messages meant for
    the terminal (episode ends, recordings, horizon changes).
    """

    controller_names = ("policy", "human")
    controller_message = "Controller: {}"
    horizon_message = "Imagination horizon: {}"
    recording_off_message = "Recording off: {num_saved} episode(s) in {directory}"
    cut_message = "Recorded {} (cut)"
    recordings_message = "Recordings (key r) go to {}"
    recorder: Recorder

    def __init__(
        self,
        actor_critic: ActorCritic,
        keymap: ButtonMap | BoxKeys,
        make_env: Callable[[EnvKind], PlayEnv],
        *,
        recorder: Recorder,
        device: torch.device,
        epsilon: float = 0.0,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        horizon: int = 1000,
        env: EnvKind = EnvKind.WORLD_MODEL,
        human: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        super().__init__(recorder=recorder, horizon=horizon, human=human, log=log)
        self.actor_critic = actor_critic
        self.keymap = keymap
        self._make_env = make_env
        self._envs: dict[EnvKind, PlayEnv] = {}
        self.device = device
        self.epsilon = epsilon
        self.temperature = temperature
        self.generator = generator
        self.last_action: Action | None = None
        self.last_return: float | None = None
        self.env_kind = env
        self.t = 0
        self.episode_return = 0.0
        self._state: LSTMState | None = None
        self._start_episode(self.env.reset())

    # ------------------------------------------------------------------------------------------- state

    @property
    def env(self) -> PlayEnv:
        if self.env_kind not in self._envs:
            env = self._make_env(self.env_kind)
            if isinstance(env, WorldModelPlayEnv):
                env.horizon = self.horizon
            self._envs[self.env_kind] = env
        return self._envs[self.env_kind]

    def help(self) -> str:
        return help_text(self.keymap)

    def _status(self) -> str:
        """Environment, controller, step, return."""
        return f"{self.env_kind.value} | {self.controller} | step {self.t} | return {self.episode_return:g}"

    def _flags(self) -> list[str]:
        flags = []
        if self.env_kind is EnvKind.WORLD_MODEL:
            flags.append(f"horizon {self.horizon}")
        if self.last_return is not None:
            flags.append(f"last return {self.last_return:g}")
        return flags

    # ---------------------------------------------------------------------------------------- commands

    def _handle(self, command: PlayCommand) -> None:
        if command is PlayCommand.NEXT_ENV:
            kinds = list(EnvKind)
            self._switch(kinds[(kinds.index(self.env_kind) + 1) % len(kinds)])
        elif command is PlayCommand.ENV_WORLD_MODEL:
            self._switch(EnvKind.WORLD_MODEL)
        elif command is PlayCommand.ENV_TEST:
            self._switch(EnvKind.TEST)
        elif command is PlayCommand.ENV_TRAIN:
            self._switch(EnvKind.TRAIN)

    def _horizon_changed(self) -> None:
        wm = self._envs.get(EnvKind.WORLD_MODEL)
        if isinstance(wm, WorldModelPlayEnv):
            wm.horizon = self.horizon

    def _reset(self) -> None:
        self._start_episode(self.env.reset())

    def _release(self) -> None:
        """Close the environments."""
        for env in self._envs.values():
            env.close()

    def update(self, held: Collection[str] = ()) -> bool:
        """Advance one step unless paused (a STEP command steps once while paused), the game buttons ``held``
        (none by default) pressed; returns if it did."""
        return super().update(held)

    # ----------------------------------------------------------------------------------------- internals

    @torch.no_grad()
    def _advance(self, held: Collection[str]) -> None:
        logits, _, self._state = self.actor_critic.step(
            frames_to_tensor(self.frame[None], self.device), self._state
        )
        action: Action
        if self.human:
            action = self.keymap.action(held)
        else:
            # An index (``sample_actions``) or a vector in [-1, 1]^D, as the policy's kind draws it.
            drawn = self.actor_critic.policy.act(logits, self.epsilon, self.temperature, self.generator)
            continuous = self.actor_critic.policy.continuous
            action = drawn[0].float().cpu().numpy() if continuous else int(drawn[0])
        step = self.env.step(action)
        self.last_action = action
        self.num_steps_taken += 1
        self.t += 1
        self.episode_return += step.reward
        self.recorder.add_step((action, step.reward), step.reached)
        if step.next_start is None:
            self.frame = step.reached
            return
        how = "terminated" if step.terminated else "truncated" if step.truncated else "ended"
        self.log(f"{self.env_kind.value}: episode {how} after {self.t} steps, return {self.episode_return:g}")
        self.last_return = self.episode_return
        if self.recording:
            self.log(f"Recorded {self.recorder.finish(step.terminated, step.truncated)}")
        self._start_episode(step.next_start)

    @torch.no_grad()
    def _start_episode(self, start: Start) -> None:
        self.frame = start.obs
        self.t = 0
        self.episode_return = 0.0
        if start.history is not None and start.history_mask is not None:
            self._state = self.actor_critic.burn_in(start.history, start.history_mask)
        else:
            self._state = self.actor_critic.initial_state(1, self.device)
        self.recorder.begin(self.frame)

    def _switch(self, kind: EnvKind) -> None:
        if kind is self.env_kind:
            return
        self._cut_recording()
        self.env_kind = kind
        self.log(f"Environment: {kind.value}")
        self._start_episode(self.env.reset())


def help_text(keymap: ButtonMap | BoxKeys) -> str:
    if isinstance(keymap, BoxKeys):
        how = "each action component, the keys held and the value they give it; 0 without"
    else:
        how = "arrow keys and space; the action each combination plays"
    return f"{controls_text(CONTROL_KEYS)}\nHuman play ({keymap.game}: {how}):\n{keymap.describe()}"


def pygame_bindings(pg: Any) -> tuple[dict[int, PlayCommand], dict[int, str]]:
    """pygame key codes -> control commands, and -> game buttons."""
    names = {
        "Tab": pg.K_TAB,
        "[": pg.K_LEFTBRACKET,
        "]": pg.K_RIGHTBRACKET,
        ".": pg.K_PERIOD,
        "Enter": pg.K_RETURN,
        "Esc": pg.K_ESCAPE,
    }
    controls: dict[int, PlayCommand] = {}
    for label, command, _ in CONTROL_KEYS:
        for key in label.split(" / "):
            controls[names[key] if key in names else getattr(pg, f"K_{key.lower()}")] = command
    controls[pg.K_KP_ENTER] = PlayCommand.RESET
    buttons = {pg.K_UP: "up", pg.K_DOWN: "down", pg.K_LEFT: "left", pg.K_RIGHT: "right", pg.K_SPACE: "fire"}
    return controls, buttons


class PlayApp(PlayAppCore[Collection[str]]):
    """The pygame front end of a :class:`PlaySession`: key events in, frames and the header out.

    A game button pressed and released within one frame still counts for that frame's step. A
    continuous-control game's keys are held by their pygame names (``BoxKeys``), the control keys apart.
    """

    session: PlaySession

    def __init__(self, session: PlaySession, *, scale: int = SCALE, fps: float = 15.0) -> None:
        size = session.frame.shape[:2]
        window = Window(f"diffworld play: {session.keymap.game}", (size[0], size[1]), scale, header_lines=2)
        super().__init__(session, window, fps)
        self.controls, self.buttons = pygame_bindings(self.pg)
        self.by_name = isinstance(session.keymap, BoxKeys)
        self.held: set[str] = set()

    def _input(self, key: int) -> str | None:
        """The game input of a pygame key code (None: none), control keys excepted."""
        if self.by_name:
            return None if key in self.controls else str(self.pg.key.name(key))
        return self.buttons.get(key)

    def read_events(self) -> set[str]:
        pg = self.pg
        pressed: set[str] = set()
        for event in pg.event.get():
            if event.type == pg.QUIT:
                self.session.handle(PlayCommand.QUIT)
            elif event.type == pg.KEYDOWN:
                name = self._input(event.key)
                if name is not None:
                    self.held.add(name)
                    pressed.add(name)
                elif event.key in self.controls:
                    self.session.handle(self.controls[event.key])
            elif event.type == pg.KEYUP and (name := self._input(event.key)) is not None:
                self.held.discard(name)
        return self.held | pressed


def make_world_model_env(
    denoiser: Any,
    reward_model: Any,
    sampler_cfg: Any,
    dataset: EpisodeDataset,
    horizon: int,
    seed: int,
    device: torch.device,
) -> WorldModelPlayEnv:
    """A batch-1 world-model environment whose trajectories start from segments of ``dataset``."""
    num_cond = denoiser.cfg.num_cond_frames
    sampler = SegmentSampler(
        dataset, 1, num_cond - 1, sample_weights=None, rng=np.random.default_rng(seed), device=device
    )
    generator = torch.Generator(device).manual_seed(seed)
    return WorldModelPlayEnv(WorldModelEnv(denoiser, reward_model, sampler, sampler_cfg, horizon, generator))


def build_session(
    trained: TrainedAgent,
    source: Path | None,
    *,
    env: EnvKind = EnvKind.WORLD_MODEL,
    human: bool = False,
    horizon: int = 1000,
    record_dir: Path | None = None,
    seed: int = 0,
    context_dataset: EpisodeDataset | None = None,
    keymap_file: Path | None = None,
    log: Callable[[str], None] = print,
) -> PlaySession:
    """A play session for a loaded agent.

    The world model starts its trajectories from ``context_dataset`` if given, else from the last episodes
    of the run folder ``source``'s dataset, else (an agent folder) from a short real episode of the policy.
    ``keymap_file``: a key map file for the actions of a continuous-control game (``agent/play_keys.py``).
    """
    from diffworld.agent.collector import collect_real_episode
    from diffworld.envs.from_config import seeded_envs
    from diffworld.envs.make import make_env as make_game_env
    from diffworld.run.folder import dataset_dir, is_run_dir_locked
    from diffworld.utils.seeding import derive_seed
    from diffworld.viz.episodes import recent_episodes

    cfg, agent, device = trained.cfg, trained.agent, trained.device
    probe = make_game_env(cfg.game)
    meanings = probe.action_meanings
    probe.close()
    if len(meanings) != trained.num_actions:
        raise UserError(
            f"{cfg.game} has {len(meanings)} actions but the agent was built for {trained.num_actions}."
        )
    keymap: ButtonMap | BoxKeys
    if agent.actor_critic.policy.continuous:
        keymap = box_keys(cfg.game, meanings, keymap_file)
    elif keymap_file is not None:
        raise keymap_refusal(cfg.game)
    else:
        keymap = ButtonMap.for_game(cfg.game, meanings)
    frame_shape = (cfg.env.size, cfg.env.size, 3)
    action_shape = agent.action_shape
    num_cond = cfg.denoiser.num_cond_frames

    def world_model_context() -> EpisodeDataset:
        if context_dataset is not None:
            return context_dataset
        if (
            source is not None
            and dataset_dir(source).is_dir()
            and any(dataset_dir(source).glob("episode_*.npz"))
        ):
            log(f"World-model starts: the last {_CONTEXT_EPISODES} episodes of {dataset_dir(source)}")
            # A live run may merge an episode's parts between listing and reading them: read again.
            for attempt in range(_LIVE_READ_ATTEMPTS):
                try:
                    return recent_episodes(dataset_dir(source), _CONTEXT_EPISODES, frame_shape, action_shape)
                except UserError:
                    if attempt + 1 == _LIVE_READ_ATTEMPTS or not is_run_dir_locked(source):
                        raise
                    time.sleep(0.2)
        log(f"World-model starts: {num_cond + _CONTEXT_EXTRA_STEPS} real steps of the policy (no dataset)")
        episode, _ = collect_real_episode(
            agent.actor_critic,
            cfg,
            num_cond + _CONTEXT_EXTRA_STEPS,
            derive_seed(seed, "play/context"),
            device,
        )
        dataset = EpisodeDataset(frame_shape=frame_shape, action_shape=action_shape)
        dataset.add(episode)
        return dataset

    def make_env(kind: EnvKind) -> PlayEnv:
        if kind is EnvKind.WORLD_MODEL:
            return make_world_model_env(
                agent.denoiser,
                agent.reward_model,
                cfg.denoiser.sampler,
                world_model_context(),
                horizon,
                seed,
                device,
            )
        envs = seeded_envs(
            cfg,
            1,
            derive_seed(seed, f"play/{kind.name.lower()}"),
            life_loss_terminal=kind is EnvKind.TRAIN,
            asynchronous=False,
        )
        return RealPlayEnv(envs)

    info = {"game": cfg.game, "action_meanings": meanings, "source": None if source is None else str(source)}
    recorder = Recorder(record_dir or default_record_dir(cfg.game), frame_shape, info, action_shape)
    return PlaySession(
        agent.actor_critic,
        keymap,
        make_env,
        recorder=recorder,
        device=device,
        epsilon=cfg.collection.test_epsilon,
        temperature=cfg.policy_temperature(),
        generator=torch.Generator(device).manual_seed(derive_seed(seed, "play/policy")),
        horizon=horizon,
        env=env,
        human=human,
        log=log,
    )


def run_play(source: Path, options: PlayOptions) -> PlaySession:
    """``diffworld play``: load the agent of ``source``, print the keys, play until quit."""
    from diffworld.agent.trained import load_trained_agent

    if options.horizon < 1:
        raise UserError(f"--horizon must be >= 1, got {options.horizon}")
    import_pygame()  # fail before loading anything where the viz extra is missing
    trained = load_trained_agent(source, options.device)
    session = build_session(
        trained,
        source,
        env=ENV_CHOICES[options.env],
        human=options.human,
        horizon=options.horizon,
        record_dir=options.record_dir,
        seed=options.seed,
        keymap_file=options.keymap,
    )
    app = partial(PlayApp, scale=options.scale or SCALE, fps=options.fps)
    return play_until_quit(session, app, options.max_frames)
