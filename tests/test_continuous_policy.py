"""The actor-critic's policy over continuous actions (a tanh-squashed Gaussian): its log-probability against
torch's TransformedDistribution, its entropy estimate against quadrature, its std bounds, its draws for
collection (bounds, epsilon, temperature, generator), and the actor loss's gradient on a toy case against the
REINFORCE and entropy gradients written out by hand. (The categorical loss is checked against its direct
computation in test_actor_critic.py; that the discrete path is bit-identical to the code before the
continuous actions is tools/bit_identity.py's to check.)"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal, TanhTransform, TransformedDistribution

from diffworld.config.schema import ActorCriticConfig, ContinuousPolicyConfig
from diffworld.data.actions import ActionSpec, box_spec, continuous, index_spec
from diffworld.errors import UserError
from diffworld.models.actor_critic import ActorCritic, actor_critic_loss_terms, make_policy
from diffworld.models.policy_distributions import PolicyDivergedError, SquashedNormalPolicy
from diffworld.models.squashed_normal import SquashedNormal

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
CFG = ContinuousPolicyConfig()


def raw_for(mean: torch.Tensor, std: torch.Tensor, cfg: ContinuousPolicyConfig = CFG) -> torch.Tensor:
    """The actor head's output that gives ``mean`` and ``std``: the inverse of the std's sigmoid bounds."""
    p = (std - cfg.min_std) / (cfg.max_std - cfg.min_std)
    return torch.cat([mean, torch.log(p / (1 - p)) - cfg.std_offset], dim=-1)


def test_zero_head_starts_broad_and_the_std_stays_within_its_bounds() -> None:
    policy = SquashedNormalPolicy(3, CFG)
    mean, std = policy.mean_std(torch.zeros(2, 6))
    expected = CFG.min_std + (CFG.max_std - CFG.min_std) / (1 + math.exp(-CFG.std_offset))
    assert torch.equal(mean, torch.zeros(2, 3))
    torch.testing.assert_close(std, torch.full((2, 3), expected))
    assert 0.89 < expected < 0.9
    _, std = SquashedNormalPolicy(1, CFG).mean_std(torch.tensor([[0.0, -1e4], [0.0, 1e4]]))
    torch.testing.assert_close(std, torch.tensor([[CFG.min_std], [CFG.max_std]]))
    mean, std = SquashedNormalPolicy(1, CFG).mean_std(raw_for(torch.tensor([[0.7]]), torch.tensor([[0.3]])))
    torch.testing.assert_close((mean, std), (torch.tensor([[0.7]]), torch.tensor([[0.3]])))


def test_log_prob_is_the_transformed_distribution_s() -> None:
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(50, 3, generator=gen, dtype=F64)
    std = 0.1 + 0.8 * torch.rand(50, 3, generator=gen, dtype=F64)
    policy = SquashedNormalPolicy(3, CFG)
    params = raw_for(mean, std)
    actions, taken = policy.sample(params, torch.Generator().manual_seed(1))
    log_prob, _ = policy.log_prob_and_entropy(params, taken)
    reference = TransformedDistribution(Independent(Normal(mean, std), 1), [TanhTransform()])
    torch.testing.assert_close(log_prob, reference.log_prob(actions), rtol=1e-7, atol=1e-7)
    assert torch.equal(actions, torch.tanh(taken))  # the env's action is tanh of what the loss keeps


def true_entropy(mean: float, std: float) -> float:
    """``-int p(a) log p(a) da`` over a in (-1, 1), with ``p(a) = N(atanh a; mean, std) / (1 - a^2)``, by the
    trapezoid rule on a fine grid of a (not of the pre-squash variable)."""
    a = torch.linspace(-1 + 1e-9, 1 - 1e-9, 2_000_001, dtype=F64)
    u = torch.atanh(a)
    log_p = Normal(torch.tensor(mean, dtype=F64), torch.tensor(std, dtype=F64)).log_prob(u) - torch.log1p(
        -a * a
    )
    return float(torch.trapezoid(-log_p.exp() * log_p, a))


@pytest.mark.parametrize(("mean", "std"), [(0.0, 0.5), (0.8, 0.9), (-1.5, 0.3)])
def test_entropy_estimate_is_unbiased_and_the_gaussian_entropy_alone_is_not(mean: float, std: float) -> None:
    truth = true_entropy(mean, std)
    n = 40_000
    policy = SquashedNormalPolicy(1, CFG)
    params = raw_for(torch.full((n, 1), mean, dtype=F64), torch.full((n, 1), std, dtype=F64))
    _, taken = policy.sample(params, torch.Generator().manual_seed(0))
    _, entropy = policy.log_prob_and_entropy(params, taken)
    stderr = float(entropy.std()) / math.sqrt(n)
    assert abs(float(entropy.mean()) - truth) < 4 * stderr + 1e-4
    gaussian = 0.5 * math.log(2 * math.pi * math.e * std**2)
    assert gaussian - truth > 20 * stderr  # the squashing's log-Jacobian is no rounding error


@pytest.mark.parametrize(("mean", "std"), [(0.0, 0.5), (0.8, 0.9), (-1.5, 0.3)])
def test_entropy_estimate_s_gradient_is_the_true_entropy_s(mean: float, std: float) -> None:
    """The mean over draws of the gradient of ``entropy_at`` with respect to the pre-squash mean and std is
    the gradient of the squashed distribution's entropy, by central finite differences of the quadrature
    (float64; the draws made without gradient, as a rollout makes them)."""
    n, h = 40_000, 1e-3
    means = torch.full((n, 1), mean, dtype=F64, requires_grad=True)
    stds = torch.full((n, 1), std, dtype=F64, requires_grad=True)
    dist = SquashedNormal(means, stds, validate_args=False)
    u = dist.rsample_pre_tanh((), torch.Generator().manual_seed(0)).detach()
    dist.entropy_at(u).sum().backward()  # each draw's own gradient, in its own row
    expected = {
        "mean": (true_entropy(mean + h, std) - true_entropy(mean - h, std)) / (2 * h),
        "std": (true_entropy(mean, std + h) - true_entropy(mean, std - h)) / (2 * h),
    }
    for name, leaf in (("mean", means), ("std", stds)):
        assert leaf.grad is not None
        grads = leaf.grad[:, 0]
        stderr = float(grads.std()) / math.sqrt(n)
        assert abs(float(grads.mean()) - expected[name]) < 4 * stderr + 1e-4, name
    # Not trivially satisfied: the Gaussian entropy's own gradient (0 in the mean, 1/std in the std) is off.
    assert abs(expected["mean"]) > 0.05 or abs(expected["std"] - 1 / std) > 0.05


def test_collection_draws_bounds_epsilon_temperature_and_generator() -> None:
    policy = SquashedNormalPolicy(2, CFG)
    params = raw_for(
        torch.tensor([[0.5, -3.0]]).expand(20_000, 2), torch.tensor([[0.4, 0.9]]).expand(20_000, 2)
    )
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = policy.act(params, 0.0, 1.0, torch.Generator().manual_seed(0))
    b = policy.act(params, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), before)
    assert a.shape == (20_000, 2) and bool((a.abs() <= 1).all())
    # Sampling: the mean of tanh(u), u ~ N(0.5, 0.4^2), against a sum over a grid of u.
    u = torch.linspace(0.5 - 8 * 0.4, 0.5 + 8 * 0.4, 100_001, dtype=F64)
    expected = float(torch.trapezoid(torch.tanh(u) * Normal(0.5, 0.4).log_prob(u).exp(), u))
    assert float(a[:, 0].mean()) == pytest.approx(expected, abs=4 * float(a[:, 0].std()) / math.sqrt(20_000))
    # Temperature scales the std: near 0, the deterministic tanh(mean).
    cold = policy.act(params[:3], 0.0, 1e-6, torch.Generator().manual_seed(0))
    torch.testing.assert_close(cold, torch.tanh(torch.tensor([[0.5, -3.0]])).expand(3, 2), atol=1e-5, rtol=0)
    # Epsilon 1: uniform in [-1, 1]^2 (mean 0, variance 1/3), whatever the policy says.
    uniform = policy.act(params, 1.0, 1.0, torch.Generator().manual_seed(0))
    assert bool((uniform.abs() <= 1).all())
    torch.testing.assert_close(uniform.mean(0), torch.zeros(2), atol=0.02, rtol=0)
    torch.testing.assert_close(uniform.var(0), torch.full((2,), 1 / 3), atol=0.01, rtol=0)
    with pytest.raises(ValueError, match="temperature"):
        policy.act(params, 0.0, 0.0, None)
    # A diverged actor: an internal error that says so, not a user's invalid action.
    diverged = params[:2].clone()
    diverged[1, 0] = float("nan")
    with pytest.raises(PolicyDivergedError, match="training diverged") as info:
        policy.act(diverged, 0.0, 1.0, None)
    assert not isinstance(info.value, UserError)


def test_actor_loss_gradient_on_a_toy_case_is_the_hand_written_one() -> None:
    """One step of one trajectory that terminates: G = sign(r), A = G - V. The loss's actor part is
    ``-log pi(a) * A - w * H_hat``; its gradient in (mean, x) is written out here from the Gaussian density
    and the log-Jacobian ``log(1 - tanh(u)^2)`` at the action's draw ``u = mean + std * eps``."""
    cfg = ActorCriticConfig(entropy_weight=0.3, value_loss_weight=1.0)
    c = cfg.continuous
    policy = SquashedNormalPolicy(1, c)
    params = torch.tensor([[[0.4, -0.7]]], dtype=F64, requires_grad=True)  # (B=1, H=1, 2D)
    values = torch.tensor([[0.25]], dtype=F64, requires_grad=True)
    _, taken = policy.sample(params.detach()[:, 0], torch.Generator().manual_seed(3))
    taken = taken[:, None]  # (1, 1, 1)
    rew = torch.tensor([[1.0]], dtype=F64)
    end = torch.tensor([[True]])
    trunc = torch.tensor([[False]])
    terms = actor_critic_loss_terms(
        params, values, taken, rew, end, trunc, torch.zeros(1, 1, dtype=F64), cfg, policy=policy
    )
    (terms.policy_loss - cfg.entropy_weight * terms.entropy).backward()
    assert params.grad is not None

    m, x, u = 0.4, -0.7, float(taken)
    sig = 1 / (1 + math.exp(-(x + c.std_offset)))
    s = c.min_std + (c.max_std - c.min_std) * sig
    ds_dx = (c.max_std - c.min_std) * sig * (1 - sig)
    advantage = 1.0 - 0.25
    eps = (u - m) / s
    # d(-log N(u; m, s))/dm = -(u - m) / s^2, d/ds = 1/s - (u - m)^2 / s^3; the squashing term is constant.
    d_m = -(u - m) / s**2 * advantage
    d_s = (1 / s - (u - m) ** 2 / s**3) * advantage
    # H_hat = log(s) + const + log(1 - tanh(m + s eps)^2): d/dm = -2 tanh(u), d/ds = 1/s - 2 tanh(u) eps.
    d_m -= cfg.entropy_weight * (-2 * math.tanh(u))
    d_s -= cfg.entropy_weight * (1 / s - 2 * math.tanh(u) * eps)
    expected = torch.tensor([[[d_m, d_s * ds_dx]]], dtype=F64)
    torch.testing.assert_close(params.grad, expected, rtol=1e-10, atol=1e-12)
    # The log-probability's value includes the squashing correction.
    log_n = Normal(torch.tensor(m, dtype=F64), torch.tensor(s, dtype=F64)).log_prob(
        torch.tensor(u, dtype=F64)
    )
    torch.testing.assert_close(
        terms.policy_loss, -(log_n - math.log(1 - math.tanh(u) ** 2)) * advantage, rtol=1e-10, atol=1e-12
    )


def test_the_actor_critic_takes_either_action_space() -> None:
    cfg = ActorCriticConfig(channels=[8, 8, 8, 8], lstm_dim=16)
    torch.manual_seed(0)
    by_count = ActorCritic(cfg, 6)
    torch.manual_seed(0)
    by_spec = ActorCritic(cfg, index_spec(6))
    assert list(by_count.state_dict()) == list(by_spec.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(by_count.state_dict().values(), by_spec.state_dict().values(), strict=True)
    )
    assert not by_count.policy.continuous and by_count.actor.weight.shape == (6, 16)
    cont = ActorCritic(cfg, box_spec(3))
    assert cont.policy.continuous and cont.num_actions == 3
    assert list(cont.state_dict()) == list(by_count.state_dict())  # same names, a head of 2 x 3 outputs
    assert cont.actor.weight.shape == (6, 16)
    actions, _ = cont.act(torch.zeros(4, 3, 64, 64), None, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert actions.shape == (4, 3) and actions.dtype == torch.float32 and bool((actions.abs() <= 1).all())
    with pytest.raises(ValueError, match="within"):
        make_policy(ActionSpec.of(continuous("a", 0.0, 2.0)), cfg)
