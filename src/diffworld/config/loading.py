"""Build a validated :class:`Config` from a preset and ``key=value`` overrides; save and reload it.

Everything that can be wrong with a configuration is reported here, before anything runs, as a
:class:`ConfigError` that names the key and the fix. No value is ever evaluated as code: values are
parsed as YAML scalars/lists by OmegaConf and checked against the dataclass types.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from diffworld.config.presets import PRESETS
from diffworld.config.schema import Config
from diffworld.errors import UserError
from diffworld.games import UnknownGameError, resolve_game
from diffworld.utils.atomic import atomic_write_text

MAX_SEED = 2**32 - 1
"""Seeds (``seed=``, a sweep's ``seeds=``, every ``--seed``) are integers from 0 to ``MAX_SEED``: numpy's
generators refuse negative seeds, and its legacy global seed (the score report's bootstrap) stops there."""


class ConfigError(UserError, ValueError):
    """A configuration that cannot run: the message names the key and how to fix it."""


def all_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, leaves only (``denoiser.optimizer.lr``, ...)."""
    keys = []
    for f in dataclasses.fields(schema):
        name = prefix + f.name
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            keys += all_keys(type(sub), name + ".")
        else:
            keys.append(name)
    return keys


def close_keys(key: str, candidates: Sequence[str] | None = None, n: int = 3) -> list[str]:
    """Valid keys that look like ``key``: by the whole dotted path, then by its last component."""
    candidates = list(candidates or all_keys())
    found = difflib.get_close_matches(key, candidates, n=n, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    by_leaf = {c.rsplit(".", 1)[-1]: c for c in candidates}
    for match in difflib.get_close_matches(leaf, list(by_leaf), n=n, cutoff=0.6):
        for c in candidates:
            if c.rsplit(".", 1)[-1] == match and c not in found:
                found.append(c)
    return found[:n]


def _first_line(error: OmegaConfBaseException) -> str:
    return str(getattr(error, "msg", None) or error).splitlines()[0]


def _suggest(key: str, schema: type = Config) -> str:
    close = close_keys(key, all_keys(schema))
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"{hint} Run 'diffworld config --keys' to list every key."


LEGACY_KEYS: dict[str, str] = {
    "denoiser.num_autoregressive_steps": "denoiser.training.num_autoregressive_steps",
}
"""Configuration keys renamed since configurations were first saved, old -> new: saved configurations
(``config.yaml``, ``agent.json``'s ``config``) and overrides (the command line, sweeps, branches) with an old
key are read as if they had the new one, with one warning line per file (``report_renamed_keys``)."""

OVERRIDES = "key=value overrides"
"""How ``report_renamed_keys`` names overrides, which come from no file."""

logger = logging.getLogger(__name__)


def report_renamed_keys(source: str, renamed: Sequence[str]) -> None:
    """One warning line (``logging``: on stderr unless configured otherwise) saying that ``source``, the file
    a configuration was read from or ``OVERRIDES``, names the keys ``renamed`` (of ``LEGACY_KEYS``) by their
    former names, and their new names; nothing when ``renamed`` is empty."""
    if renamed:
        moves = ", ".join(f"{old} is now {LEGACY_KEYS[old]}" for old in renamed)
        logger.warning("%s: %s (renamed in this version; read at the new address)", source, moves)


def upgrade_legacy_override_keys(overrides: Mapping[str, str]) -> dict[str, str]:
    """``overrides`` (dotted key -> value) with the keys of ``LEGACY_KEYS`` renamed, in their order."""
    upgraded = {LEGACY_KEYS.get(key, key): value for key, value in overrides.items()}
    report_renamed_keys(OVERRIDES, [key for key in overrides if key in LEGACY_KEYS])
    return upgraded


def upgrade_legacy_keys(tree: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A copy of the nested configuration ``tree`` (plain dicts) with the keys of ``LEGACY_KEYS`` moved to
    their new place; one given under both names keeps the new name's value. ``source`` names where the tree
    was read (``report_renamed_keys``)."""
    upgraded: dict[str, Any] = _copy_tree(tree)
    renamed: list[str] = []
    for old, new in LEGACY_KEYS.items():
        *old_parents, old_leaf = old.split(".")
        parent: Any = upgraded
        for name in old_parents:
            parent = parent.get(name) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or old_leaf not in parent:
            continue
        renamed.append(old)
        value = parent.pop(old_leaf)
        *new_parents, new_leaf = new.split(".")
        target = upgraded
        for name in new_parents:
            target = target.setdefault(name, {})
        target.setdefault(new_leaf, value)
    report_renamed_keys(source, renamed)
    return upgraded


def _copy_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_tree(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def parse_overrides(args: Iterable[str]) -> dict[str, str]:
    """Split ``key=value`` arguments; the last one wins for a repeated key."""
    overrides: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            example = "game=Pong seed=3 preset=quick"
            raise ConfigError(f"Expected key=value, got {arg!r} (for example: {example}).")
        overrides[key.strip()] = value
    return overrides


def apply_override(
    cfg: DictConfig, key: str, value: Any, parsed_from_text: bool, schema: type = Config
) -> None:
    """Set ``cfg.key`` (a structured config of ``schema``) to ``value``, parsed as YAML if
    ``parsed_from_text``; a ``ConfigError`` naming the key (and close valid ones) if it cannot be."""
    fills_null_section = False
    try:
        # from_dotlist parses the value as YAML (numbers, booleans, lists, {a: 1}) and never evaluates code.
        parsed = OmegaConf.from_dotlist([f"v={value}"]).v if parsed_from_text else value
        # A mapping given to an optional section that is null (such as denoiser.sigma_cond_distribution) is
        # merged into it, which builds the section from its schema's defaults and checks its keys.
        fills_null_section = isinstance(parsed, (Mapping, DictConfig)) and OmegaConf.select(cfg, key) is None
        OmegaConf.update(cfg, key, parsed, merge=fills_null_section)
    except (ConfigKeyError, ConfigAttributeError) as e:
        if fills_null_section:
            raise ConfigError(f"Bad value {value!r} for {key!r}: {str(e).splitlines()[0]}") from None
        raise ConfigError(f"Unknown configuration key {key!r}.{_suggest(key, schema)}") from None
    except ValidationError as e:
        raise ConfigError(f"Bad value {value!r} for {key!r}: {_first_line(e)}") from None
    except OmegaConfBaseException as e:
        message = str(e).splitlines()[0]
        section = key.rsplit(".", 1)[0]
        if "." in key and OmegaConf.select(cfg, section, default=0) is None:
            leaf = key.rsplit(".", 1)[1]
            message = f"{section} is null; set the whole section, e.g. {section}='{{{leaf}: ...}}'"
        raise ConfigError(f"Cannot set {key!r} to {value!r}: {message}") from None


def preset_config(
    schema: type, presets: Mapping[str, Mapping[str, Any]], preset: str, what: str
) -> DictConfig:
    """The structured configuration of ``schema`` (either product's) with the values of ``presets[preset]``;
    an unknown ``preset`` is refused, ``what`` naming the kind (``preset``, ``engine preset``)."""
    if preset not in presets:
        close = difflib.get_close_matches(preset, list(presets), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"Unknown {what} {preset!r}.{hint} Presets: {', '.join(presets)}.")
    cfg = OmegaConf.structured(schema)
    cfg.preset = preset
    for key, value in presets[preset].items():
        apply_override(cfg, key, value, parsed_from_text=False, schema=schema)
    return cfg


def build_config(args: Iterable[str] = ()) -> Config:
    """The run configuration for command-line arguments like ``game=Pong preset=quick seed=3``."""
    overrides = upgrade_legacy_override_keys(parse_overrides(args))
    cfg = preset_config(Config, PRESETS, overrides.pop("preset", "atari100k"), "preset")
    for key, value in overrides.items():
        apply_override(cfg, key, value, parsed_from_text=True)
    return _finalize(cfg)


def with_overrides(cfg: Config, args: Iterable[str]) -> Config:
    """A copy of ``cfg`` with the ``key=value`` arguments applied, validated as ``build_config``'s result."""
    merged = OmegaConf.structured(cfg)
    for key, value in upgrade_legacy_override_keys(parse_overrides(args)).items():
        apply_override(merged, key, value, parsed_from_text=True)
    return _finalize(merged)


def _finalize(cfg: DictConfig) -> Config:
    try:
        game = cfg.game
    except MissingMandatoryValue:
        raise ConfigError("No game given: add game=<Game>, for example game=Breakout.") from None
    try:
        cfg.game = resolve_game(game)
    except UnknownGameError as e:
        raise ConfigError(str(e)) from None
    return checked_object(cfg, Config, validate)


SchemaT = TypeVar("SchemaT")


def checked_object(cfg: DictConfig, schema: type[SchemaT], validate: Callable[[SchemaT], None]) -> SchemaT:
    """``cfg`` as the dataclass ``schema`` of either product's configuration, which ``validate`` checks."""
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, schema)
    validate(config)
    return config


class ConfigChecks:
    """The checks of a configuration that types alone cannot express, gathered so that one error names
    every failure (``check(ok, message)``, then ``raise_failures()``)."""

    def __init__(self, title: str) -> None:
        self.title = title
        """What the error says first: ``Invalid configuration``."""
        self.failures: list[str] = []

    def __call__(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)

    def raise_failures(self) -> None:
        """Raise a ``ConfigError`` that names every failed check, if one failed."""
        if len(self.failures) == 1:  # one line, as every other error of the command
            raise ConfigError(f"{self.title}: {self.failures[0]}")
        if self.failures:
            raise ConfigError(f"{self.title}:\n  " + "\n  ".join(self.failures))


def validate(cfg: Config) -> None:
    """Checks that types alone cannot express; each failure names the key and the fix."""
    check = ConfigChecks("Invalid configuration")

    for name in ("denoiser", "reward_model"):
        model = getattr(cfg, name)
        n = len(model.channels)
        check(n > 0, f"{name}.channels must list at least one level.")
        check(
            len(model.depths) == n and len(model.attn_depths) == n,
            f"{name}.channels, {name}.depths and {name}.attn_depths must have one entry per level "
            f"(got {len(model.channels)}, {len(model.depths)}, {len(model.attn_depths)}).",
        )
        check(all(c > 0 for c in model.channels), f"{name}.channels must be positive.")
        check(all(d > 0 for d in model.depths), f"{name}.depths must be positive.")
    check(len(cfg.actor_critic.channels) > 0, "actor_critic.channels must list at least one block.")
    for name in ("denoiser", "reward_model"):
        downsamplings = len(getattr(cfg, name).channels) - 1
        check(
            cfg.env.size % 2**downsamplings == 0,
            f"env.size={cfg.env.size} must be divisible by 2^(len({name}.channels) - 1).",
        )
    check(
        cfg.denoiser.cond_channels % cfg.denoiser.num_cond_frames == 0,
        "denoiser.cond_channels must be divisible by denoiser.num_cond_frames "
        "(each past action gets cond_channels / num_cond_frames dims).",
    )
    check(cfg.denoiser.num_cond_frames >= 1, "denoiser.num_cond_frames must be >= 1.")
    check(
        cfg.denoiser.training.num_autoregressive_steps >= 1,
        "denoiser.training.num_autoregressive_steps must be >= 1.",
    )
    check(
        not cfg.denoiser.noise_previous_obs,
        "denoiser.noise_previous_obs=true: the Atari world model's network is not told the conditioning "
        "frames' noise level (an engine's is).",
    )
    s = cfg.denoiser.sampler
    check(s.num_steps >= 1, "denoiser.sampler.num_steps must be >= 1.")
    check(s.order in (1, 2), "denoiser.sampler.order must be 1 (Euler) or 2 (Heun).")
    check(0 < s.sigma_min < s.sigma_max, "Need 0 < denoiser.sampler.sigma_min < denoiser.sampler.sigma_max.")
    check(s.rho > 0, "denoiser.sampler.rho must be > 0.")
    check(s.s_churn >= 0, "denoiser.sampler.s_churn must be >= 0.")
    check(
        s.s_cond == 0,
        "denoiser.sampler.s_cond must be 0: the Atari world model's network is not told the conditioning "
        "frames' noise level (an engine's is).",
    )
    check(
        cfg.denoiser.sigma_cond_distribution is None,
        "denoiser.sigma_cond_distribution must be null: the Atari world model's conditioning frames are not "
        "noised in training (an engine's are, with noise_previous_obs).",
    )
    sd = cfg.denoiser.sigma_distribution
    check(0 < sd.sigma_min < sd.sigma_max, "Need 0 < sigma_distribution.sigma_min < sigma_max.")
    check(sd.scale > 0, "denoiser.sigma_distribution.scale must be > 0.")
    check(cfg.denoiser.sigma_data > 0, "denoiser.sigma_data must be > 0.")
    check(cfg.denoiser.ddpm_num_train_timesteps >= 1, "denoiser.ddpm_num_train_timesteps must be >= 1.")
    check(
        0 < cfg.denoiser.ddpm_beta_start < cfg.denoiser.ddpm_beta_end < 1,
        "Need 0 < denoiser.ddpm_beta_start < denoiser.ddpm_beta_end < 1.",
    )

    for name in ("denoiser", "reward_model", "actor_critic"):
        t = getattr(cfg, name).training
        o = getattr(cfg, name).optimizer
        check(t.batch_size >= 1, f"{name}.training.batch_size must be >= 1.")
        check(t.grad_acc_steps >= 1, f"{name}.training.grad_acc_steps must be >= 1.")
        check(t.steps_first_epoch >= 0 and t.steps_per_epoch >= 0, f"{name}.training steps must be >= 0.")
        w = t.sample_weights
        check(
            len(w) > 0 and all(0 <= x <= 1 for x in w) and math.isclose(sum(w), 1.0, abs_tol=1e-6),
            f"{name}.training.sample_weights must be probabilities summing to 1 (got {list(w)}).",
        )
        check(o.lr > 0, f"{name}.optimizer.lr must be > 0.")
        check(o.weight_decay >= 0, f"{name}.optimizer.weight_decay must be >= 0.")
        check(o.warmup_steps >= 0, f"{name}.optimizer.warmup_steps must be >= 0.")
        check(o.max_grad_norm > 0, f"{name}.optimizer.max_grad_norm must be > 0.")

    ac = cfg.actor_critic
    check(0 < ac.gamma <= 1, "actor_critic.gamma must be in (0, 1].")
    check(0 <= ac.lambda_ <= 1, "actor_critic.lambda_ must be in [0, 1].")
    check(ac.imagination_horizon >= 1, "actor_critic.imagination_horizon must be >= 1.")
    check(ac.temperature > 0, "actor_critic.temperature must be > 0.")
    check(all(t > 0 for t in ac.temperature_per_game.values()), "actor_critic.temperature_per_game: > 0.")
    cp = ac.continuous
    check(cp.min_std > 0, f"actor_critic.continuous.min_std must be > 0 (got {cp.min_std}).")
    check(
        cp.max_std > cp.min_std and math.isfinite(cp.max_std),
        f"actor_critic.continuous.max_std must be finite and above the least std (got {cp.max_std}, the "
        f"least {cp.min_std}).",
    )
    check(
        math.isfinite(cp.std_offset),
        f"actor_critic.continuous.std_offset must be finite (got {cp.std_offset}).",
    )

    c = cfg.collection
    check(c.steps_per_epoch >= 1, "collection.steps_per_epoch must be >= 1.")
    for key in ("total_env_steps", "initial_min_steps", "initial_max_steps"):
        check(
            getattr(c, key) % c.steps_per_epoch == 0,
            f"collection.{key}={getattr(c, key)} must be a multiple of collection.steps_per_epoch="
            f"{c.steps_per_epoch}.",
        )
    check(
        0 < c.initial_min_steps <= c.initial_max_steps <= c.total_env_steps,
        "Need 0 < collection.initial_min_steps <= initial_max_steps <= total_env_steps.",
    )
    check(0 <= c.train_epsilon <= 1 and 0 <= c.test_epsilon <= 1, "collection epsilons must be in [0, 1].")
    check(c.test_every_epochs >= 1, "collection.test_every_epochs must be >= 1.")
    check(c.num_test_episodes >= 0 and c.num_final_episodes >= 0, "collection episode counts must be >= 0.")

    check(
        0 <= cfg.seed <= MAX_SEED,
        f"seed={cfg.seed}: a seed is an integer from 0 to {MAX_SEED} (numpy refuses negative seeds).",
    )

    e = cfg.env
    check(e.frame_skip >= 1, "env.frame_skip must be >= 1.")
    check(e.action_repeat >= 1, "env.action_repeat must be >= 1.")
    check(e.noop_max >= 0, "env.noop_max must be >= 0.")
    check(e.size >= 8, "env.size must be >= 8.")
    check(e.max_frames_per_episode >= e.frame_skip, "env.max_frames_per_episode must be >= env.frame_skip.")
    check(
        c.test_max_frames_per_episode is None
        or e.frame_skip <= c.test_max_frames_per_episode <= e.max_frames_per_episode,
        "collection.test_max_frames_per_episode must be null or from env.frame_skip to "
        "env.max_frames_per_episode.",
    )
    check(e.num_train_envs >= 1 and e.num_test_envs >= 1, "env.num_train_envs/num_test_envs must be >= 1.")
    check(cfg.training.num_final_epochs >= 0, "training.num_final_epochs must be >= 0.")
    check(
        not cfg.training.model_free or cfg.actor_critic.training.steps_per_epoch >= 1,
        "training.model_free=true needs actor_critic.training.steps_per_epoch >= 1: its epochs train the "
        "actor-critic on real rollouts until collection.total_env_steps are spent.",
    )
    check(cfg.training.save_agent_every >= 1, "training.save_agent_every must be >= 1.")
    check(cfg.logging.video_steps >= 0, "logging.video_steps must be >= 0 (0: no video).")
    check(
        cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith(("cuda", "mps")),
        f"device={cfg.device!r}: use auto, cpu, cuda or cuda:N.",
    )
    check.raise_failures()


def reward_model_seq_length(cfg: Config) -> int:
    """Steps of a reward/termination training segment: as in imagination, the L - 1 pairs of the conditioning
    frames (burn-in) then the horizon's steps: 18 steps (19 frames) at the paper's settings, the official
    code's segment."""
    return cfg.denoiser.num_cond_frames - 1 + cfg.actor_critic.imagination_horizon


def to_yaml(cfg: object) -> str:
    """Either product's configuration (its schema's dataclass) as its ``config.yaml`` holds it."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict[str, Any]:
    """The configuration as plain values (enums by name), as ``config.yaml`` holds it."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    assert isinstance(container, dict)
    return {str(key): value for key, value in container.items()}


def save_config(cfg: object, path: Path) -> None:
    """Write either product's resolved configuration atomically as YAML."""
    atomic_write_text(path, to_yaml(cfg))


def read_yaml(path: Path, what: str) -> DictConfig | ListConfig:
    """The YAML file ``path``, not yet checked against a schema; its errors call it ``what``."""
    try:
        return OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"No {what} file at {path}.") from None
    except Exception as e:
        raise ConfigError(f"Cannot parse {what} {path}: {e}") from None


def load_config_file(path: Path) -> Config:
    """Read a saved configuration back, checked against the current schema."""
    loaded = read_yaml(path, "configuration")
    if isinstance(loaded, DictConfig):
        container = OmegaConf.to_container(loaded)
        assert isinstance(container, dict)
        loaded = OmegaConf.create(upgrade_legacy_keys({str(k): v for k, v in container.items()}, str(path)))
    cfg = OmegaConf.structured(Config)
    try:
        cfg = OmegaConf.merge(cfg, loaded)
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = str(e.full_key)
        hint = _suggest(key)
        raise ConfigError(f"{path}: unknown key {key!r} (written by another version?).{hint}") from None
    except ValidationError as e:
        raise ConfigError(f"{path}: bad value for {e.full_key!r}: {_first_line(e)}") from None
    assert isinstance(cfg, DictConfig)
    return _finalize(cfg)
