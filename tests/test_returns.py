"""Lambda-returns against a naive computation from the definition (mixture of n-step returns)."""

from __future__ import annotations

import pytest
import torch

from diffworld.models.returns import lambda_returns


def n_step_return(
    rew: list[float], end: list[bool], trunc: list[bool], val: list[float], t: int, n: int, gamma: float
) -> float:
    """G^(n)_t: n discounted rewards, stopped at a termination (no bootstrap) or a truncation (bootstrap)."""
    g = 0.0
    for k in range(n):
        g += gamma**k * rew[t + k]
        if end[t + k]:
            return g
        if trunc[t + k] or k == n - 1:
            return g + gamma ** (k + 1) * val[t + k]
    raise AssertionError("unreachable")


def naive_lambda_returns(
    rew: torch.Tensor, end: torch.Tensor, trunc: torch.Tensor, val: torch.Tensor, gamma: float, lambda_: float
) -> torch.Tensor:
    """G^lambda_t = (1 - lambda) sum_{n<N} lambda^(n-1) G^(n)_t + lambda^(N-1) G^(N)_t with N = H - t."""
    out = torch.zeros_like(val, dtype=torch.float64)
    horizon = rew.size(1)
    for b in range(rew.size(0)):
        r = rew[b].sign().tolist()
        e, tr, v = end[b].tolist(), trunc[b].tolist(), val[b].tolist()
        for t in range(horizon):
            big_n = horizon - t
            g = sum(
                (1 - lambda_) * lambda_ ** (n - 1) * n_step_return(r, e, tr, v, t, n, gamma)
                for n in range(1, big_n)
            )
            out[b, t] = g + lambda_ ** (big_n - 1) * n_step_return(r, e, tr, v, t, big_n, gamma)
    return out


def random_inputs(batch: int, horizon: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    rew = torch.randn(batch, horizon, generator=gen) * 3 * (torch.rand(batch, horizon, generator=gen) < 0.5)
    end = torch.rand(batch, horizon, generator=gen) < 0.15
    trunc = (torch.rand(batch, horizon, generator=gen) < 0.15) & ~end
    val = torch.randn(batch, horizon, generator=gen)
    return rew, end, trunc, val


@pytest.mark.parametrize("lambda_", [0.0, 0.5, 0.95, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_definition(lambda_: float, seed: int) -> None:
    rew, end, trunc, val = random_inputs(8, 15, seed)
    assert end.any() and trunc.any()
    got = lambda_returns(rew, end, trunc, val, 0.985, lambda_)
    expected = naive_lambda_returns(rew, end, trunc, val, 0.985, lambda_)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_float_flags_and_dtype() -> None:
    rew, end, trunc, val = random_inputs(4, 15, 3)
    got = lambda_returns(rew, end.float(), trunc.float(), val, 0.9, 0.8)
    torch.testing.assert_close(got, lambda_returns(rew, end, trunc, val, 0.9, 0.8))
    assert got.dtype == val.dtype and got.shape == val.shape


def test_lambda_zero_is_one_step_td() -> None:
    rew, end, trunc, val = random_inputs(4, 15, 4)
    got = lambda_returns(rew, end, trunc, val, 0.9, 0.0)
    torch.testing.assert_close(got, rew.sign() + 0.9 * (~end) * val)


def test_lambda_one_is_monte_carlo_with_bootstrap() -> None:
    gamma = 0.5
    rew = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, -3.0, 0.0, 5.0], [1.0, 0.0, 0.0, 1.0]])
    end = torch.tensor([[False, False, False, False], [False, True, False, False], [False] * 4])
    trunc = torch.tensor([[False] * 4, [False] * 4, [False, True, False, False]])
    val = torch.tensor([[10.0, 20.0, 30.0, 40.0], [7.0, 7.0, 8.0, 16.0], [4.0, 6.0, 8.0, 16.0]])
    got = lambda_returns(rew, end, trunc, val, gamma, 1.0)
    expected = torch.tensor(
        [
            # no ending: discounted rewards to the horizon, bootstrapped with the last next-value
            [
                1 + 0.5 + 0.25 + 0.125 + 0.0625 * 40,
                1 + 0.5 + 0.25 + 0.125 * 40,
                1 + 0.5 + 0.25 * 40,
                1 + 0.5 * 40,
            ],
            # termination at step 1: rewards up to it, nothing after (steps 2-3 start a new episode)
            [1 - 0.5, -1.0, 0 + 0.5 * (1 + 0.5 * 16), 1 + 0.5 * 16],
            # truncation at step 1: bootstrapped there with next_val[1]
            [1 + 0 + 0.25 * 6, 0 + 0.5 * 6, 0 + 0.5 * (1 + 0.5 * 16), 1 + 0.5 * 16],
        ]
    )
    torch.testing.assert_close(got, expected)


def test_hand_computed_tiny_example() -> None:
    # H = 3, gamma = 0.5, lambda = 0.5, rewards already sign-clipped
    rew = torch.tensor([[1.0, 0.0, 1.0]])
    val = torch.tensor([[2.0, 4.0, 8.0]])
    no = torch.zeros(1, 3, dtype=torch.bool)
    got = lambda_returns(rew, no, no, val, 0.5, 0.5)
    g2 = 1 + 0.5 * 8  # 5
    g1 = 0 + 0.5 * (0.5 * 4 + 0.5 * g2)  # 2.25
    g0 = 1 + 0.5 * (0.5 * 2 + 0.5 * g1)  # 2.0625
    torch.testing.assert_close(got, torch.tensor([[g0, g1, g2]]))
    assert got[0, 0].item() == pytest.approx(2.0625)


def test_no_gradient_and_shape_check() -> None:
    rew, end, trunc, val = random_inputs(2, 5, 5)
    val.requires_grad_(True)
    assert not lambda_returns(rew, end, trunc, val, 0.9, 0.9).requires_grad
    with pytest.raises(ValueError):
        lambda_returns(rew[:, :4], end, trunc, val, 0.9, 0.9)
