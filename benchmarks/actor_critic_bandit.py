"""How fast the actor-critic learns a visual contextual bandit, through the real rollout loop and loss.

    python benchmarks/actor_critic_bandit.py [--updates 200] [--lr 1e-3] [--gamma 0.985] [--value-weight 1.0]

Each observation is a 64x64 frame with one bright vertical third (left, middle or right, drawn at random);
the action that names that third earns +1, the others -1; every step draws a new frame. The policy is the
paper's actor-critic at a small size (``channels`` 8, 8, 16, 16, LSTM 64), trained with
``agent.rollout.rollout`` and ``actor_critic_loss`` (lambda-returns, REINFORCE with the value baseline,
value loss, entropy) on batches of 16 trajectories of 10 steps. It prints the mean reward (random play: -1/3,
perfect play: 1) and the policy's entropy every 25 updates: a measure of how many updates the actor-critic
needs when the signal is as clear as it can be. A world model cannot make the actor learn faster than this.
"""

from __future__ import annotations

import argparse

import torch

from diffworld.agent.rollout import EnvStep, rollout
from diffworld.config.schema import ActorCriticConfig
from diffworld.models.actor_critic import ActorCritic, LSTMState, actor_critic_loss


class ThirdsBandit:
    """``PolicyEnv`` of ``batch_size`` independent bandits; reward +1 for naming the bright third."""

    def __init__(self, batch_size: int, generator: torch.Generator) -> None:
        self.batch_size = batch_size
        self._gen = generator
        self._side = torch.zeros(batch_size, dtype=torch.long)

    @property
    def generator(self) -> torch.Generator:
        return self._gen

    def _observe(self) -> torch.Tensor:
        self._side = torch.randint(3, (self.batch_size,), generator=self._gen)
        columns = torch.arange(64) // 22  # 0, 1 or 2 for each pixel column
        bright = columns[None, :] == self._side[:, None]  # (B, 64)
        return torch.where(bright[:, None, None, :], 1.0, -1.0).expand(-1, 3, 64, -1).contiguous()

    def start(self, actor_critic: ActorCritic) -> tuple[torch.Tensor, LSTMState]:
        return self._observe(), actor_critic.initial_state(self.batch_size)

    def step(self, act: torch.Tensor) -> EnvStep:
        rew = torch.where(act == self._side, 1.0, -1.0)
        obs = self._observe()
        never = torch.zeros(self.batch_size, dtype=torch.bool)
        return EnvStep(obs=obs, rew=rew, end=never, trunc=never, final_obs=obs)

    def restart(
        self, actor_critic: ActorCritic, state: LSTMState, s: EnvStep, rows: torch.Tensor
    ) -> LSTMState:
        return state

    def stop(self, state: LSTMState) -> None:
        pass


def train_bandit(
    updates: int, lr: float, gamma: float, value_weight: float, seed: int = 0, log_every: int = 0
) -> list[float]:
    """Train a fresh actor-critic for ``updates`` updates; the mean reward of every update's rollout."""
    torch.manual_seed(seed)
    cfg = ActorCriticConfig(channels=[8, 8, 16, 16], lstm_dim=64, gamma=gamma, value_loss_weight=value_weight)
    actor_critic = ActorCritic(cfg, 3)
    optimizer = torch.optim.AdamW(actor_critic.parameters(), lr=lr, weight_decay=0.0)
    env = ThirdsBandit(16, torch.Generator().manual_seed(seed))
    mean_rewards = []
    for update in range(updates):
        r = rollout(actor_critic, env, horizon=10)
        loss, metrics = actor_critic_loss(
            r.logits, r.values, r.actions, r.rew, r.end, r.trunc, r.next_values, cfg
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(actor_critic.parameters(), cfg.optimizer.max_grad_norm)
        optimizer.step()
        mean_rewards.append(r.rew.mean().item())
        if log_every and update % log_every == 0:
            print(
                f"update {update:4d}  mean reward {mean_rewards[-1]:+.3f}  "
                f"entropy {metrics['entropy'].item():.3f}  value loss {metrics['value_loss'].item():.2f}",
                flush=True,
            )
    return mean_rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gamma", type=float, default=0.985)
    parser.add_argument("--value-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train_bandit(args.updates + 1, args.lr, args.gamma, args.value_weight, args.seed, log_every=25)


if __name__ == "__main__":
    main()
