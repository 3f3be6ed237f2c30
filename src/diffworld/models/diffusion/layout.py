"""What a conditioned EDM world model is, apart from what users tune (docs/method.md §3; docs/engine.md,
"Models").

The Atari agent's world model and the engine's two models are one model: the network ``ConditionedUNet``
(``unet.py``) inside ``ConditionedEDM`` (``edm.py``). They differ in a few choices that their published
weights assume, the official DIAMOND Atari agent's and the official CS:GO model's, so these are fixed per
product, not configured: a ``WorldModelLayout``. What users tune is the configuration, of which the model
reads the fields of ``config.schema.WorldModelConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from diffworld.data.actions import ActionSpec, action_spec_of, discrete, is_index_spec


@dataclass(frozen=True)
class WorldModelLayout:
    """The choices of a world model that its weights assume; ``atari`` (and ``agent``, the Atari choices for
    any action space), ``engine_denoiser`` and ``engine_upsampler`` are those there are. The defaults are the
    official DIAMOND Atari agent's, EDM's as published; the official CS:GO models change them."""

    actions: ActionSpec | None
    """The action space the network is conditioned on: each of the L past steps has an embedding of
    cond_channels / L dims, concatenated. None: no actions (the upsampler)."""
    action_indices: bool
    """Actions come as (B, L) int64 indices of the spec's one ``discrete`` component, embedded by an
    ``nn.Embedding`` (state_dict key ``act_emb.weight``), and a padding step holds index 0, a real action: the
    official Atari code. False: (B, L, D) float action vectors (``ActionEncoder``), padding steps embedded to
    zero, as the official CS:GO code's all-zero action vector."""
    noise_level_input: bool = False
    """The network is also told the conditioning frames' noise level, c_noise_cond = log(sigma_cond) / 4, or
    0 when they are clean (Fourier features ``noise_cond_emb``, added to those of c_noise). As cos(0) = 1,
    level 0 is not the same as no such input."""
    extra_images: int = 0
    """Conditioning images stacked after the L past frames: the upsampler's low-resolution frame, upsampled
    by bicubic interpolation."""
    pad_to_multiple: bool = False
    """Frames of any size: the U-Net's input is zero-padded on the bottom and right to a multiple of
    2^(levels - 1) and its output cropped back, as the official CS:GO U-Net. False: the frame size must be
    such a multiple already (Atari's 64x64)."""
    churn_call_at_sigma: bool = False
    """A churned sampling step tells the denoiser the level before churn (``sample``'s
    ``churned_call_at_sigma``), as the official CS:GO sampler; the same as EDM's Algorithm 2 without churn."""
    estimate_padding_targets: bool = False
    """The autoregressive loss replaces padding targets too by the one-shot estimates that condition the later
    predictions (``autoregressive_loss``'s ``estimate_padding``), as the official CS:GO loss."""
    loss_key: str = "loss_denoising"
    """The training loss's name among the metrics (the agent's ``metrics.jsonl`` has ``loss_denoising``, the
    engine's ``loss``)."""

    @classmethod
    def atari(cls, num_actions: int) -> WorldModelLayout:
        """The Atari world model of the paper, the official DIAMOND agent's (EDM and the DDPM ablation)."""
        return cls(actions=ActionSpec.of(discrete("action", num_actions)), action_indices=True)

    @classmethod
    def agent(cls, actions: int | ActionSpec) -> WorldModelLayout:
        """The agent's world model: the Atari one (``atari``) for discrete actions (a count, or a spec of one
        discrete component); for any other action space the same choices with (B, L, D) action vectors
        through the generic ``ActionEncoder`` (continuous actions: a linear embedding of the vector). Padding
        steps hold the zero vector, which embeds to zero for components centred on 0 (the agent's
        ``[-1, 1]``)."""
        spec = action_spec_of(actions)
        if is_index_spec(spec):
            return cls.atari(spec.components[0].n)  # type: ignore[union-attr]
        return cls(actions=spec, action_indices=False)

    @classmethod
    def engine_denoiser(cls, spec: ActionSpec) -> WorldModelLayout:
        """The engine's next-frame model: the official CS:GO denoiser's, the upsampler's choices with the
        dataset's action space and no extra image."""
        return replace(cls.engine_upsampler(), actions=spec, extra_images=0)

    @classmethod
    def engine_upsampler(cls) -> WorldModelLayout:
        """The engine's upsampler: the official CS:GO upsampler's, no actions and the low-resolution frame."""
        return cls(
            actions=None,
            action_indices=False,
            noise_level_input=True,
            extra_images=1,
            pad_to_multiple=True,
            churn_call_at_sigma=True,
            estimate_padding_targets=True,
            loss_key="loss",
        )
