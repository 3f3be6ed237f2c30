"""The official DIAMOND code's names of the agent's tensors: the networks are the same as diffworld's, layer
for layer, only the names differ. The Atari importer maps whole agents with it; the CS:GO engine's importer
maps its denoisers, whose U-Net is the same."""

from __future__ import annotations

import re


def _resblock_names(name: str) -> str:
    """Residual-block parameter names, shared by the denoiser and the reward model's encoder."""
    name = re.sub(r"(\.resblocks\.\d+)\.skip\.", r"\1.proj.", name)
    return re.sub(r"\.attn\.norm\.(weight|bias)$", r".attn.norm.norm.\1", name)


def official_name(name: str, num_reward_levels: int) -> str:
    """The official name of diffworld's tensor ``name`` (a key of diffworld's ``Agent.state_dict()``).

    ``num_reward_levels``: ``len(reward_model.channels)``; the official reward encoder keeps its middle
    blocks as the block list's last entry and an identity as its first downsampling.
    """
    model, _, rest = name.partition(".")
    if model == "denoiser":
        rest = rest.removeprefix("net.")
        rest = {"act_emb.weight": "act_emb.0.weight"}.get(rest, rest)
        rest = re.sub(r"^norm_out\.(weight|bias)$", r"norm_out.norm.\1", rest)
        rest = rest.replace("unet.down_blocks.", "unet.d_blocks.").replace(
            "unet.up_blocks.", "unet.u_blocks."
        )
        return "denoiser.inner_model." + _resblock_names(rest)
    if model == "reward_model":
        rest = re.sub(r"^encoder\.levels\.(\d+)\.", r"encoder.blocks.\1.", rest)
        rest = re.sub(r"^encoder\.mid\.", f"encoder.blocks.{num_reward_levels}.", rest)
        rest = re.sub(
            r"^encoder\.downsamples\.(\d+)\.", lambda m: f"encoder.downsamples.{int(m[1]) + 1}.", rest
        )
        return "rew_end_model." + _resblock_names(rest)
    if model == "actor_critic":
        rest = re.sub(r"^encoder\.(\d+)\.norm\.", r"encoder.encoder.\1.f.0.norm.", rest)
        rest = re.sub(r"^encoder\.(\d+)\.conv\.", r"encoder.encoder.\1.f.2.", rest)
        rest = re.sub(r"^encoder\.(\d+)\.skip\.", r"encoder.encoder.\1.skip_projection.", rest)
        rest = re.sub(r"^encoder\.0\.", "encoder.encoder.0.", rest)
        rest = re.sub(r"^(actor|critic)\.", r"\1_linear.", rest)
        return "actor_critic." + rest
    raise ValueError(f"not a diffworld agent tensor: {name!r}")
