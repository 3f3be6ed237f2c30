"""Reward and termination model: a conv encoder of frame pairs conditioned on the action, an LSTM, a reward
head (a classifier over sign(reward), or a regression of symlog(reward)) and a termination classifier
(docs/method.md §4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffworld.config.schema import RewardKind, RewardTerminationConfig
from diffworld.data.actions import ActionSpec, action_spec_of, is_index_spec
from diffworld.data.batch import Batch
from diffworld.models.action_encoder import ActionEncoder
from diffworld.models.actor_critic import LSTMState, init_lstm
from diffworld.models.blocks import Downsample, ResBlocks, channels_last, conv3x3

NUM_REWARD_CLASSES = 3
"""sign(r) in {-1, 0, +1} is class ``sign(r) + 1``."""
NUM_END_CLASSES = 2


def symlog(x: Tensor) -> Tensor:
    """``sign(x) * log(1 + |x|)``: the scale the ``value`` reward head regresses in (DreamerV3)."""
    return x.sign() * x.abs().log1p()


def symexp(x: Tensor) -> Tensor:
    """The inverse of ``symlog``: ``sign(x) * (exp(|x|) - 1)``."""
    return x.sign() * x.abs().expm1()


class RewardTerminationEncoder(nn.Module):
    """3x3 conv, then per level ``depths[i]`` action-conditioned residual blocks of ``channels[i]`` with a
    stride-2 downsampling between levels, then 2 blocks with self-attention. Their output goes to the LSTM
    as it is (no final norm or activation), as in the official code."""

    def __init__(
        self,
        in_channels: int,
        cond_channels: int,
        channels: list[int],
        depths: list[int],
        attn_depths: list[bool],
    ) -> None:
        super().__init__()
        if not len(channels) == len(depths) == len(attn_depths):
            raise ValueError("channels, depths and attn_depths must have the same length")
        self.conv_in = conv3x3(in_channels, channels[0])
        self.levels = nn.ModuleList(
            ResBlocks([c_in] + [c_out] * (n - 1), [c_out] * n, cond_channels, attn)
            for c_in, c_out, n, attn in zip(
                [channels[0], *channels[:-1]], channels, depths, attn_depths, strict=True
            )
        )
        self.downsamples = nn.ModuleList(Downsample(c) for c in channels[:-1])
        self.mid = ResBlocks([channels[-1]] * 2, [channels[-1]] * 2, cond_channels, attn=True)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """(N, in_channels, H, W), (N, cond_channels) -> (N, channels[-1], H / 2^(levels-1), ...)."""
        x = self.conv_in(channels_last(x))
        for i, level in enumerate(self.levels):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = level(x, cond)[-1]
        return self.mid(x, cond)[-1]


class RewardTerminationModel(nn.Module):
    """Predicts the reward and the termination of step t from (x_t, x_{t+1}, a_t) and the LSTM's memory.

    The encoder reads both frames concatenated along channels (6 channels); its adaptive group norms are
    driven by an embedding of a_t (``nn.Embedding`` of discrete actions; the ``ActionEncoder`` of action
    vectors for continuous ones, ``actions`` being then the action space). The flattened features (2,048 at
    the paper's settings) go through an ``nn.LSTM`` and one Linear-SiLU-Linear head whose outputs are split
    into the reward's and 2 termination logits. ``reward_model.reward_kind`` decides the reward's
    (``config.schema.RewardKind``): ``sign``, 3 logits over sign(r) (the official code's head, 5 outputs;
    5.90 M parameters at the paper's settings); ``value``, one output, the prediction of symlog(r) (3 outputs;
    the parameters keep their names, only the last layer has 2 rows fewer), and a buffer ``reward_bound``,
    the largest ``|symlog(r)|`` trained on, that bounds imagination's rewards (``sample_reward``).
    """

    reward_bound: Tensor

    def __init__(self, cfg: RewardTerminationConfig, actions: int | ActionSpec, img_size: int = 64) -> None:
        super().__init__()
        channels = list(cfg.channels)
        feat_size = img_size // 2 ** (len(channels) - 1)
        if feat_size * 2 ** (len(channels) - 1) != img_size:
            raise ValueError(f"img_size {img_size} is not divisible by 2^{len(channels) - 1}")
        # Discrete actions: the paper's nn.Embedding over indices; any other action space: the world model's
        # generic encoder of action vectors (for continuous actions a linear map of the vector), in its place.
        self.act_emb: nn.Module
        spec = action_spec_of(actions)
        if is_index_spec(spec):
            self.act_emb = nn.Embedding(spec.components[0].n, cfg.cond_channels)  # type: ignore[union-attr]
        else:
            self.act_emb = ActionEncoder(spec, cfg.cond_channels)
        self.encoder = RewardTerminationEncoder(
            6, cfg.cond_channels, channels, list(cfg.depths), list(cfg.attn_depths)
        )
        self.lstm = nn.LSTM(channels[-1] * feat_size**2, cfg.lstm_dim, batch_first=True)
        self.reward_kind = RewardKind(cfg.reward_kind)
        self.num_reward_outputs = NUM_REWARD_CLASSES if self.reward_kind is RewardKind.sign else 1
        self.head = nn.Sequential(
            nn.Linear(cfg.lstm_dim, cfg.lstm_dim),
            nn.SiLU(),
            nn.Linear(cfg.lstm_dim, self.num_reward_outputs + NUM_END_CLASSES, bias=False),
        )
        init_lstm(self.lstm)
        if self.reward_kind is RewardKind.value:
            # A buffer, saved with the parameters. The sign head is bounded by its classes: no buffer.
            self.register_buffer("reward_bound", torch.zeros(()))

    def predict(
        self,
        obs: Tensor,
        act: Tensor,
        next_obs: Tensor,
        state: LSTMState | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, LSTMState]:
        """Logits of T consecutive steps, carrying the LSTM state across calls.

        Args:
            obs, next_obs: (B, T, 3, H, W) frames x_t and x_{t+1} in [-1, 1].
            act: (B, T) int64 actions a_t, or (B, T, D) action vectors.
            state: ``(h, c)``, each (1, B, lstm_dim), as returned by an earlier call; None: zeros.
            mask: (B, T) bool, False for padding steps: these leave the LSTM state as it was (their logits
                are meaningless). None: every step is real. The frames are encoded in one batch. Where each
                row's real steps are one contiguous run (left padding, then real steps, then right
                padding: what ``SegmentSampler`` makes), the LSTM runs once on the packed real steps
                (``_packed_lstm``); any other mask falls back to running it step by step.

        Returns:
            ``logits_rew``, the reward head's outputs: (B, T, 3) logits over sign(r) + 1 (``reward_kind``
            ``sign``), or (B, T, 1) the prediction of symlog(r) (``value``; ``reward_of`` reads either);
            ``logits_end`` (B, T, 2); and the LSTM state after the last step.
        """
        b, t = act.shape[:2]
        pairs = torch.cat([obs, next_obs], dim=2).flatten(0, 1)
        x = self.encoder(pairs, self.act_emb(act.flatten(0, 1))).reshape(b, t, -1)
        if mask is None:
            out, state = self.lstm(x, state)
        else:
            out, state = self._masked_lstm(x, mask, state)
        # float32 outputs and state whatever the autocast (training.precision): losses and the carried state
        # keep full precision.
        logits = self.head(out).float()
        h, c = state
        n = self.num_reward_outputs
        return logits[..., :n], logits[..., n:], (h.float(), c.float())

    def sample_reward(self, logits_rew: Tensor, generator: torch.Generator | None) -> Tensor:
        """Imagination's reward from the reward head's outputs (..., 3) or (..., 1): ``sign``, a class drawn
        from the categorical, minus 1 (one ``torch.multinomial`` draw from ``generator``); ``value``, the
        predicted reward ``symexp(output)`` with the output clamped to ``[-reward_bound, reward_bound]``, the
        symlog rewards trained on (no draw): an imagined frame unlike the data cannot give a reward
        exponentially beyond any seen. Float, of the shape of ``logits_rew`` less its last dim."""
        if self.reward_kind is RewardKind.sign:
            flat = logits_rew.reshape(-1, NUM_REWARD_CLASSES)
            drawn = torch.multinomial(flat.softmax(dim=-1), 1, generator=generator).squeeze(-1)
            return (drawn - 1).float().reshape(logits_rew.shape[:-1])
        bound = self.reward_bound
        return symexp(torch.minimum(torch.maximum(logits_rew[..., 0], -bound), bound))

    def reward_of(self, logits_rew: Tensor) -> Tensor:
        """The most likely reward: ``sign``, the likeliest class minus 1 (int64 in {-1, 0, 1}); ``value``,
        ``symexp(output)`` (float)."""
        if self.reward_kind is RewardKind.sign:
            return logits_rew.argmax(dim=-1) - 1
        return symexp(logits_rew[..., 0])

    def _masked_lstm(self, x: Tensor, mask: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        """The LSTM over (B, T, F) features where padding steps (``mask`` False) leave the state alone."""
        runs = contiguous_runs(mask)
        if runs is None:
            return self._stepwise_lstm(x, mask, state)
        starts, lengths = runs
        if bool((starts == 0).all()) and bool((lengths == mask.size(1)).all()):
            return self.lstm(x, state)  # no padding at all
        return self._packed_lstm(x, starts, lengths, state)

    def _stepwise_lstm(self, x: Tensor, mask: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        """The reference: one LSTM step at a time, keeping the old state where a step is padding."""
        b, t = mask.shape
        h, c = state if state is not None else (x.new_zeros(1, b, self.lstm.hidden_size),) * 2
        outs = []
        for i in range(t):
            out_i, (new_h, new_c) = self.lstm(x[:, i : i + 1], (h, c))
            keep = mask[None, :, i, None]
            h, c = torch.where(keep, new_h, h), torch.where(keep, new_c, c)
            outs.append(out_i)
        return torch.cat(outs, dim=1), (h, c)

    def _packed_lstm(
        self, x: Tensor, starts: Tensor, lengths: Tensor, state: LSTMState | None
    ) -> tuple[Tensor, LSTMState]:
        """One LSTM call over each row's real steps ``[start, start + length)``, moved to the front and
        packed; the outputs go back to their places (0 on padding steps). A row without real steps keeps
        ``state``. Same result as ``_stepwise_lstm`` on real steps and for the final state.

        ``starts`` and ``lengths``: (B,) int64 on the CPU (packing needs the lengths there).
        """
        t = x.size(1)
        device = x.device
        steps = torch.arange(t, device=device)
        starts_d = starts.to(device, non_blocking=True)
        lengths_d = lengths.to(device, non_blocking=True)
        # Left-align: position k of row i takes step start_i + k (positions past the run are not read).
        src = (starts_d[:, None] + steps).clamp(max=t - 1)
        aligned = x.gather(1, src[:, :, None].expand_as(x))
        packed = nn.utils.rnn.pack_padded_sequence(
            aligned, lengths.clamp(min=1), batch_first=True, enforce_sorted=False
        )
        packed_out, (h, c) = self.lstm(packed, state)
        out, _ = nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=t)
        # Back in place: step j of row i is position j - start_i; padding steps get 0.
        dst = (steps - starts_d[:, None]).clamp(0, t - 1)
        out = out.gather(1, dst[:, :, None].expand_as(out))
        real = (steps >= starts_d[:, None]) & (steps < (starts_d + lengths_d)[:, None])
        out = torch.where(real[:, :, None], out, 0)
        if bool((lengths == 0).any()):
            empty = (lengths_d == 0)[None, :, None]
            h0, c0 = state if state is not None else (torch.zeros_like(h),) * 2
            h, c = torch.where(empty, h0, h), torch.where(empty, c0, c)
        return out, (h, c)

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The reward loss plus the cross-entropy of termination, each averaged over the real steps of
        ``batch``.

        The reward loss: ``sign``, the cross-entropy of sign(reward); ``value``, the squared error of the
        prediction against symlog(reward). Step t pairs frame t with frame t+1 (the true final frame where the
        episode ended at step t). Padding steps neither contribute to the loss nor touch the LSTM state.
        Returns ``loss_rew + loss_end`` and detached metrics: the two losses, the termination's accuracy
        ``acc_end``, and the reward's accuracy ``acc_rew`` (``sign``) or, for ``value``, its mean absolute
        error in reward units ``rew_abs_error`` (of ``symexp(output)``). In training mode a ``value`` model
        raises ``reward_bound`` to the largest ``|symlog(reward)|`` of the batch's real steps.
        """
        rew, end, _, mask = batch.step_targets()
        logits_rew, logits_end, _ = self.predict(batch.obs[:, :-1], batch.act, batch.obs[:, 1:], mask=mask)
        target_end = end.long()
        count = mask.sum().clamp(min=1)

        def masked_mean(x: Tensor) -> Tensor:
            return torch.where(mask, x, 0).sum() / count

        reward_metrics: dict[str, Tensor] = {}
        if self.reward_kind is RewardKind.sign:
            target_rew = rew.sign().long() + 1
            loss_rew = masked_mean(F.cross_entropy(logits_rew.transpose(1, 2), target_rew, reduction="none"))
            reward_metrics["acc_rew"] = masked_mean((logits_rew.argmax(-1) == target_rew).float())
        else:
            rew = rew.float()
            target = symlog(rew)
            if self.training:
                with torch.no_grad():
                    seen = torch.where(mask, target.abs(), 0).max()
                    self.reward_bound.copy_(torch.maximum(self.reward_bound, seen))
            loss_rew = masked_mean((logits_rew[..., 0] - target).pow(2))
            reward_metrics["rew_abs_error"] = masked_mean((self.reward_of(logits_rew.detach()) - rew).abs())
        loss_end = masked_mean(F.cross_entropy(logits_end.transpose(1, 2), target_end, reduction="none"))
        loss = loss_rew + loss_end
        metrics = {
            "loss": loss.detach(),
            "loss_rew": loss_rew.detach(),
            "loss_end": loss_end.detach(),
            **reward_metrics,
            "acc_end": masked_mean((logits_end.argmax(-1) == target_end).float()),
        }
        return loss, metrics


def contiguous_runs(mask: Tensor) -> tuple[Tensor, Tensor] | None:
    """(starts, lengths), each (B,) int64 on the CPU, when every row of the (B, T) bool ``mask`` is one
    contiguous run of True (or no True at all: start 0, length 0); None otherwise.

    Reads the mask on the host: one small device-to-host copy when it lives on a GPU.
    """
    m = mask.detach().to("cpu", torch.bool)
    lengths = m.sum(dim=1)
    starts = m.to(torch.uint8).argmax(dim=1)  # the first True (0 for a row without any)
    steps = torch.arange(m.size(1))
    run = (steps >= starts[:, None]) & (steps < (starts + lengths)[:, None])
    if not torch.equal(run, m):
        return None
    return starts.long(), lengths.long()
