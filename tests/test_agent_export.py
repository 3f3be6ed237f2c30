"""Portable agent folders: safetensors + JSON round trips, integrity checks and clear errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from diffworld.agent import (
    INFO_FILE,
    WEIGHTS_FILE,
    Agent,
    AgentFolderError,
    export_agent,
    load_agent,
    load_agent_weights,
)
from diffworld.agent.run_folder import save_agent_copy
from diffworld.config import Config, build_config
from diffworld.config.schema import DiffusionKind

NUM_ACTIONS = 4


@pytest.fixture(scope="module")
def cfg() -> Config:
    return build_config(["game=Breakout", "preset=smoke"])


def _agent(cfg: Config, seed: int = 0) -> Agent:
    torch.manual_seed(seed)
    agent = Agent.build(cfg, NUM_ACTIONS)
    # Zero-initialized heads would make the output comparison trivial: perturb every parameter.
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return agent


def _assert_same_weights(a: Agent, b: Agent) -> None:
    expected, actual = a.state_dict(), b.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


@pytest.fixture
def exported(cfg: Config, tmp_path: Path) -> tuple[Agent, Path]:
    agent = _agent(cfg)
    folder = export_agent(
        agent, cfg, NUM_ACTIONS, tmp_path / "agent", metadata={"epoch": 12, "env_steps": 900}
    )
    return agent, folder


def _outputs(agent: Agent, cfg: Config) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    size, frames = cfg.env.size, cfg.denoiser.num_cond_frames
    obs = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    seq = torch.rand(2, 3, 3, size, size, generator=g) * 2 - 1
    act = torch.randint(NUM_ACTIONS, (2, 3), generator=g)
    prev_obs = torch.rand(2, frames, 3, size, size, generator=g) * 2 - 1
    prev_act = torch.randint(NUM_ACTIONS, (2, frames), generator=g)
    with torch.no_grad():
        logits, value, _ = agent.actor_critic.step(obs)
        logits_rew, logits_end, _ = agent.reward_model.predict(seq, act, seq.flip(1))
        denoised = agent.denoiser.denoise(obs, torch.tensor([0.5, 2.0]), prev_obs, prev_act)
    return [logits, value, logits_rew, logits_end, denoised]


def test_round_trip_gives_identical_tensors_and_outputs(cfg: Config, exported: tuple[Agent, Path]) -> None:
    agent, folder = exported
    loaded, loaded_cfg, metadata = load_agent(folder)
    assert loaded_cfg == cfg
    assert metadata == {"epoch": 12, "env_steps": 900}
    assert not loaded.training
    _assert_same_weights(agent, loaded)
    assert {key.split(".")[0] for key in loaded.state_dict()} == {"denoiser", "reward_model", "actor_critic"}
    agent.eval()
    for a, b in zip(_outputs(agent, cfg), _outputs(loaded, cfg), strict=True):
        assert torch.equal(a, b)


def test_folder_holds_only_safetensors_and_strict_json(cfg: Config, exported: tuple[Agent, Path]) -> None:
    agent, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == [INFO_FILE, WEIGHTS_FILE]

    def reject_constant(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"), parse_constant=reject_constant)
    assert (info["format"], info["format_version"], info["game"], info["num_actions"]) == (
        "diffworld-agent",
        1,
        "Breakout",
        NUM_ACTIONS,
    )
    assert info["parameters"] == agent.parameter_counts()
    assert info["parameters"]["total"] == sum(p.numel() for p in agent.parameters())
    assert info["config"]["denoiser"]["kind"] == "edm"
    assert info["config"]["denoiser"]["sampler"]["s_tmax"] == "inf"

    # safetensors: an 8-byte little-endian header length, then a JSON header, then raw tensor bytes.
    data = (folder / WEIGHTS_FILE).read_bytes()
    assert not data.startswith((b"\x80", b"PK"))  # neither a pickle nor a torch.save zip
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    assert set(header) - {"__metadata__"} == set(agent.state_dict())


def test_ddpm_agent_round_trip(cfg: Config, tmp_path: Path) -> None:
    ddpm = build_config(["game=Breakout", "preset=smoke", "denoiser.kind=ddpm"])
    agent = _agent(ddpm)
    export_agent(agent, ddpm, NUM_ACTIONS, tmp_path / "ddpm")
    loaded, loaded_cfg, metadata = load_agent(tmp_path / "ddpm")
    assert loaded_cfg.denoiser.kind is DiffusionKind.ddpm and metadata == {}
    _assert_same_weights(agent, loaded)


def test_overwrite_protection(cfg: Config, exported: tuple[Agent, Path], tmp_path: Path) -> None:
    _, folder = exported
    other = _agent(cfg, seed=1)
    with pytest.raises(FileExistsError) as info:
        export_agent(other, cfg, NUM_ACTIONS, folder)
    assert str(folder) in str(info.value) and "overwrite=True" in str(info.value)

    export_agent(other, cfg, NUM_ACTIONS, folder, metadata={"epoch": 13}, overwrite=True)
    loaded, _, metadata = load_agent(folder)
    assert metadata == {"epoch": 13}
    _assert_same_weights(other, loaded)

    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "readme.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_agent(other, cfg, NUM_ACTIONS, unrelated)
    empty = tmp_path / "empty"
    empty.mkdir()
    export_agent(other, cfg, NUM_ACTIONS, empty)  # an existing empty folder is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        export_agent(other, cfg, NUM_ACTIONS, tmp_path / "file", overwrite=True)


def test_metadata_must_be_json_and_nothing_is_written_otherwise(cfg: Config, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON-serializable"):
        export_agent(_agent(cfg), cfg, NUM_ACTIONS, tmp_path / "agent", metadata={"when": object()})
    assert not (tmp_path / "agent").exists()


def _rewrite_json(folder: Path, change: Any) -> None:
    info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    change(info)
    (folder / INFO_FILE).write_text(json.dumps(info), encoding="utf-8")


def _rewrite_weights(folder: Path, change: Any) -> None:
    tensors = safetensors.torch.load_file(folder / WEIGHTS_FILE)
    change(tensors)
    safetensors.torch.save_file(tensors, folder / WEIGHTS_FILE)


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


BROKEN_FOLDERS = {
    "no_json": (lambda f: (f / INFO_FILE).unlink(), [INFO_FILE, "Missing"]),
    "no_weights": (lambda f: (f / WEIGHTS_FILE).unlink(), [WEIGHTS_FILE, "Missing"]),
    "truncated_weights": (
        lambda f: _truncate(f / WEIGHTS_FILE, 0.7),
        [WEIGHTS_FILE, "truncated or corrupted"],
    ),
    "garbage_weights": (
        lambda f: (f / WEIGHTS_FILE).write_bytes(b"\x80\x04garbage"),
        [WEIGHTS_FILE, "not a valid"],
    ),
    "bit_flip": (lambda f: _flip_last_byte(f / WEIGHTS_FILE), [WEIGHTS_FILE, "checksum"]),
    "truncated_json": (lambda f: _truncate(f / INFO_FILE, 0.5), [INFO_FILE, "not valid JSON"]),
    "not_agent_json": (lambda f: (f / INFO_FILE).write_text("[1, 2]"), [INFO_FILE, "does not describe"]),
    "future_version": (
        lambda f: _rewrite_json(f, lambda i: i.update(format_version=99)),
        [INFO_FILE, "format_version 99", "newer"],
    ),
    "no_num_actions": (lambda f: _rewrite_json(f, lambda i: i.pop("num_actions")), ["'num_actions'"]),
    "unknown_config_key": (
        lambda f: _rewrite_json(f, lambda i: i["config"]["denoiser"].update(chanels=[8])),
        [INFO_FILE, "chanels"],
    ),
    "bad_config_type": (
        lambda f: _rewrite_json(f, lambda i: i["config"]["env"].update(size="big")),
        [INFO_FILE, "size"],
    ),
    "invalid_config": (
        lambda f: _rewrite_json(f, lambda i: i["config"]["actor_critic"].update(gamma=2.0)),
        [INFO_FILE, "actor_critic.gamma"],
    ),
    "missing_tensor": (
        lambda f: _rewrite_weights(f, lambda t: t.pop("actor_critic.critic.bias")),
        [WEIGHTS_FILE, "missing tensors: actor_critic.critic.bias"],
    ),
    "unexpected_tensor": (
        lambda f: _rewrite_weights(f, lambda t: t.update({"actor_critic.extra": torch.zeros(1)})),
        [WEIGHTS_FILE, "unexpected tensors: actor_critic.extra"],
    ),
    "shape_mismatch": (
        lambda f: _rewrite_weights(f, lambda t: t.update({"actor_critic.critic.bias": torch.zeros(2)})),
        [WEIGHTS_FILE, "'actor_critic.critic.bias'", "(2,)", "(1,)"],
    ),
    "other_num_actions": (
        lambda f: _rewrite_json(f, lambda i: i.update(num_actions=NUM_ACTIONS + 1)),
        [WEIGHTS_FILE, f"number of actions {NUM_ACTIONS}, but", f"says {NUM_ACTIONS + 1}", "lies"],
    ),
    "other_num_actions_old_folder": (  # weights without the metadata: the shapes tell
        lambda f: (
            _rewrite_weights(f, lambda t: None),
            _rewrite_json(f, lambda i: i.update(num_actions=NUM_ACTIONS + 1)),
        ),
        [WEIGHTS_FILE, "shape"],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_FOLDERS))
def test_broken_folders_give_clear_errors(exported: tuple[Agent, Path], case: str) -> None:
    _, folder = exported
    breaker, expected = BROKEN_FOLDERS[case]
    breaker(folder)
    with pytest.raises(AgentFolderError) as info:
        load_agent(folder)
    for text in expected:
        assert text in str(info.value), (case, str(info.value))


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(AgentFolderError, match="No agent folder"):
        load_agent(tmp_path / "nowhere")


def test_agent_copies_load_into_an_agent(cfg: Config, tmp_path: Path) -> None:
    agent = _agent(cfg)
    path = save_agent_copy(agent.state_dict(), tmp_path, epoch=5)
    fresh = Agent.build(cfg, NUM_ACTIONS)
    load_agent_weights(fresh, path)
    _assert_same_weights(agent, fresh)
