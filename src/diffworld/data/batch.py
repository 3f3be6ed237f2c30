"""A batch of fixed-length segments, as torch tensors ready for the models: one type for the agent's run
datasets and the engine's datasets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch


def step_to_frame_mask(step_mask: torch.Tensor) -> torch.Tensor:
    """(B, T+1) bool from a (B, T) step mask: frame j is real iff step j (it precedes) or step j-1 is real."""
    no_step = torch.zeros_like(step_mask[:, :1])
    return torch.cat([step_mask, no_step], dim=1) | torch.cat([no_step, step_mask], dim=1)


class StepTargets(NamedTuple):
    """What a run dataset records of each step besides its action (``Batch.step_targets``)."""

    rew: torch.Tensor
    end: torch.Tensor
    trunc: torch.Tensor
    step_mask: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class Batch:
    """B segments of F frames and the actions between them; frames and steps outside their episode are
    padding. Built by keyword only (its fields are not those of the former ``Batch(obs, act, rew, end, trunc,
    mask_padding)``, whose positional call would otherwise build a wrong batch silently).

    A run dataset's segment (``EpisodeDataset.gather``, built with ``Batch.of_steps``) has T steps and
    F = T + 1 frames: frame j precedes step j, frame T follows the last step, and ``rew``, ``end``, ``trunc``
    and ``step_mask`` are filled. An engine dataset's segment (``EngineDataset.gather``) has F frames and the
    F actions taken after them (the world model reads the first F - 1); it has no step fields, and
    ``obs_full`` where the engine has an upsampler.

    Attributes:
        obs: (B, F, C, H, W) float32 in [-1, 1] (x / 127.5 - 1), at the engine's low resolution for an
            engine with an upsampler. Padding frames are exactly 0.0.
        act: (B, T) int64 actions (run datasets), (B, F, D) float32 action vectors (engine datasets,
            ``ActionSpec`` layout); 0 on padding steps.
        frame_mask: (B, F) bool, True for real frames.
        step_mask: (B, T) bool, True for real steps; None for engine datasets.
        rew: (B, T) float32 raw rewards; 0 on padding steps. None for engine datasets.
        end: (B, T) bool, True where the step terminated the episode; False on padding steps. None for
            engine datasets.
        trunc: (B, T) bool, True where the step truncated the episode; False on padding steps. None for
            engine datasets.
        obs_full: (B, F, 3, H, W) float32 in [-1, 1], an engine's frames at the dataset's resolution, for
            its upsampler; None when ``obs`` already is at that resolution or none was asked for.
    """

    obs: torch.Tensor
    act: torch.Tensor
    frame_mask: torch.Tensor
    step_mask: torch.Tensor | None = None
    rew: torch.Tensor | None = None
    end: torch.Tensor | None = None
    trunc: torch.Tensor | None = None
    obs_full: torch.Tensor | None = None

    @classmethod
    def of_steps(
        cls,
        obs: torch.Tensor,
        act: torch.Tensor,
        rew: torch.Tensor,
        end: torch.Tensor,
        trunc: torch.Tensor,
        step_mask: torch.Tensor,
    ) -> Batch:
        """A run dataset's segment of T steps, its frame mask derived from ``step_mask``."""
        return cls(
            obs=obs,
            act=act,
            frame_mask=step_to_frame_mask(step_mask),
            step_mask=step_mask,
            rew=rew,
            end=end,
            trunc=trunc,
        )

    def step_targets(self) -> StepTargets:
        """``rew``, ``end``, ``trunc`` and ``step_mask``, which a run dataset's batch has."""
        if self.rew is None or self.end is None or self.trunc is None or self.step_mask is None:
            raise ValueError("this batch has no rewards or terminations (segments of an engine dataset)")
        return StepTargets(self.rew, self.end, self.trunc, self.step_mask)

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        moved: dict[str, Any] = {
            field.name: None if getattr(self, field.name) is None else getattr(self, field.name).to(device)
            for field in dataclasses.fields(self)
        }
        return Batch(**moved)
