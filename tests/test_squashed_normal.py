"""The tanh-squashed Gaussian: every formula against an independent computation (torch's transformed
distribution, quadrature, finite differences), the bounds, the entropy estimate, the gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import AffineTransform, Independent, Normal, TanhTransform, TransformedDistribution

from diffworld.models.squashed_normal import SquashedNormal, log_one_minus_tanh_sq

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


def reference(mean: torch.Tensor, std: torch.Tensor, low: torch.Tensor, high: torch.Tensor):
    """torch's own construction of the same distribution."""
    return TransformedDistribution(
        Independent(Normal(mean, std), 1),
        [TanhTransform(), AffineTransform((high + low) / 2, (high - low) / 2, event_dim=1)],
    )


def trapezoid(y: torch.Tensor, x: torch.Tensor) -> float:
    return float(torch.trapezoid(y, x))


def one_d(mean: float, std: float, low: float, high: float) -> SquashedNormal:
    t = lambda v: torch.tensor([v], dtype=F64)  # noqa: E731
    return SquashedNormal(t(mean), t(std), t(low), t(high))


def true_entropy_1d(mean: float, std: float, low: float, high: float) -> float:
    """``-E[log p(a)]`` by quadrature over the pre-squash variable, with the density written out here:
    ``p(a) = N(u; mean, std) / (scale * sech(u)^2)``, ``log sech(u) = log 2 - |u| - log(1 + exp(-2|u|))``
    (``1 - tanh(u)^2`` rounds to 0 in the tails)."""
    u = torch.linspace(mean - 12 * std, mean + 12 * std, 200_001, dtype=F64)
    gauss = Normal(torch.tensor(mean, dtype=F64), torch.tensor(std, dtype=F64)).log_prob(u)
    scale = (high - low) / 2
    log_sech = math.log(2) - u.abs() - torch.log1p(torch.exp(-2 * u.abs()))
    log_p = gauss - math.log(scale) - 2 * log_sech
    return trapezoid(-gauss.exp() * log_p, u)


def test_log_one_minus_tanh_sq_matches_the_direct_form_and_stays_finite() -> None:
    u = torch.linspace(-6, 6, 1001, dtype=F64)
    torch.testing.assert_close(
        log_one_minus_tanh_sq(u), torch.log(1 - torch.tanh(u) ** 2), rtol=1e-10, atol=1e-10
    )
    big = torch.tensor([-1e4, -50.0, 50.0, 1e4], dtype=torch.float32)
    assert torch.isinf(torch.log(1 - torch.tanh(big) ** 2)).all()  # what the stable form avoids
    torch.testing.assert_close(log_one_minus_tanh_sq(big), -2 * big.abs() + 2 * math.log(2))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_log_prob_matches_torch_transformed_distribution(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(6, 4, generator=gen, dtype=dtype)
    std = torch.rand(6, 4, generator=gen, dtype=dtype) + 0.1
    low = torch.tensor([-1.0, 0.0, -2.0, -0.8], dtype=dtype)
    high = torch.tensor([1.0, 3.0, -1.5, 0.8], dtype=dtype)
    dist = SquashedNormal(mean, std, low, high)
    torch.manual_seed(1)
    actions, log_prob = dist.rsample_with_log_prob((5,))
    assert actions.shape == (5, 6, 4) and log_prob.shape == (5, 6)
    expected = reference(mean, std, low, high).log_prob(actions)
    tol = {"rtol": 1e-9, "atol": 1e-9} if dtype == F64 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(log_prob, expected, **tol)
    torch.testing.assert_close(dist.log_prob(actions), expected, **tol)


def test_density_integrates_to_one_and_its_cdf_is_the_gaussian_one_in_1d() -> None:
    mean, std, low, high = 0.3, 0.7, -2.0, 1.0
    dist = one_d(mean, std, low, high)
    a = torch.linspace(low, high, 400_001, dtype=F64)[1:-1].unsqueeze(-1)
    density = dist.log_prob(a).exp()
    assert trapezoid(density, a[:, 0]) == pytest.approx(1.0, abs=1e-6)
    # P(a <= a0) = Phi((atanh(y0) - mean) / std), y0 the action rescaled to (-1, 1).
    for a0 in (-1.5, -0.2, 0.6):
        inside = a[:, 0] <= a0
        y0 = torch.tensor((2 * (a0 - low) / (high - low)) - 1, dtype=F64)
        cdf = Normal(torch.tensor(mean, dtype=F64), torch.tensor(std, dtype=F64)).cdf(torch.atanh(y0))
        assert trapezoid(density[inside], a[inside, 0]) == pytest.approx(float(cdf), abs=1e-5)


def test_log_prob_is_the_gaussian_one_minus_the_finite_difference_log_jacobian_in_1d() -> None:
    mean, std, low, high = -0.4, 1.3, 0.5, 2.5
    dist = one_d(mean, std, low, high)
    u = torch.linspace(-4, 4, 101, dtype=F64).unsqueeze(-1)
    h = 1e-6
    da_du = (dist.squash(u + h) - dist.squash(u - h)) / (2 * h)
    expected = Normal(torch.tensor(mean, dtype=F64), torch.tensor(std, dtype=F64)).log_prob(u) - da_du.log()
    # The central difference's rounding error, about 1e-16 / h relative to d a / d u (down to 1e-3 here).
    torch.testing.assert_close(dist.log_prob_pre_tanh(u), expected[:, 0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("mean", "std", "low", "high"), [(0.0, 0.5, -1.0, 1.0), (1.2, 2.0, -2.0, 3.0)])
def test_entropy_estimate_is_unbiased_against_quadrature(
    mean: float, std: float, low: float, high: float
) -> None:
    truth = true_entropy_1d(mean, std, low, high)
    dist = one_d(mean, std, low, high)
    torch.manual_seed(0)
    # 20,000 single-sample estimates at once: the distribution repeated along a batch dimension.
    many = SquashedNormal(dist.mean.expand(20_000, 1), dist.std.expand(20_000, 1), dist.low[0], dist.high[0])
    estimates = many.entropy(num_samples=1)
    stderr = float(estimates.std()) / math.sqrt(len(estimates))
    assert abs(float(estimates.mean()) - truth) < 4 * stderr + 1e-4
    # SAC's estimate, -log p(a) of the policy's own samples, has the same mean.
    _, log_prob = dist.rsample_with_log_prob((20_000,))
    sac = -log_prob
    assert abs(float(sac.mean()) - truth) < 4 * float(sac.std()) / math.sqrt(len(sac)) + 1e-4
    # Neither has the lower variance everywhere: the Gaussian and Jacobian terms cancel near saturation.
    assert (float(sac.std()) > float(estimates.std())) == (mean == 0.0)
    # Many samples in one call: the same mean, close to the truth.
    assert float(dist.entropy(num_samples=200_000)) == pytest.approx(truth, abs=0.01)


def test_entropy_of_independent_components_is_the_sum_of_their_entropies() -> None:
    params = [(0.0, 0.5, -1.0, 1.0), (1.2, 2.0, -2.0, 3.0), (-0.5, 0.1, 0.0, 1.0)]
    mean, std, low, high = (torch.tensor(column, dtype=F64) for column in zip(*params, strict=True))
    torch.manual_seed(0)
    estimate = float(SquashedNormal(mean, std, low, high).entropy(num_samples=200_000))
    assert estimate == pytest.approx(sum(true_entropy_1d(*p) for p in params), abs=0.02)


def test_small_std_entropy_is_the_gaussian_one_plus_the_log_jacobian_at_the_mean() -> None:
    dist = one_d(0.4, 1e-3, -1.0, 3.0)
    expected = dist.gaussian_entropy() + dist.log_abs_det_jacobian(dist.mean)
    torch.manual_seed(0)
    torch.testing.assert_close(dist.entropy(num_samples=100), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_samples_and_mode_stay_within_the_bounds_even_saturated(dtype: torch.dtype) -> None:
    mean = torch.tensor([[-100.0, 0.0, 100.0], [30.0, -30.0, 0.0]], dtype=dtype)
    std = torch.tensor([[1e-3, 50.0, 1.0], [5.0, 5.0, 1e-6]], dtype=dtype)
    low = torch.tensor([-1.0, -0.3, 2.0], dtype=dtype)
    high = torch.tensor([1.0, 0.7, 2.5], dtype=dtype)
    dist = SquashedNormal(mean, std, low, high)
    torch.manual_seed(0)
    actions, log_prob = dist.rsample_with_log_prob((1000,))
    assert ((actions >= low) & (actions <= high)).all()
    assert (actions == low).any() and (actions == high).any()  # saturated in floating point
    assert torch.isfinite(log_prob).all()
    assert torch.isfinite(dist.log_prob(actions)).all()
    sample = dist.sample((10,))
    assert not sample.requires_grad and ((sample >= low) & (sample <= high)).all()
    assert ((dist.mode >= low) & (dist.mode <= high)).all()


def test_mode_is_the_squashed_mean_and_the_centre_of_a_narrow_distribution() -> None:
    mean = torch.tensor([[-0.5, 0.2]], dtype=F64)
    low, high = torch.tensor([0.0, -3.0], dtype=F64), torch.tensor([2.0, 1.0], dtype=F64)
    dist = SquashedNormal(mean, torch.full_like(mean, 1e-3), low, high)
    torch.testing.assert_close(dist.mode, low + (high - low) * (torch.tanh(mean) + 1) / 2)
    torch.manual_seed(0)
    torch.testing.assert_close(dist.rsample((2000,)).mean(0), dist.mode, rtol=0, atol=1e-4)


def test_gradients_flow_through_rsample_log_prob_and_entropy() -> None:
    low, high = torch.tensor([-1.0, 0.0], dtype=F64), torch.tensor([1.0, 4.0], dtype=F64)
    mean = torch.tensor([[0.3, -1.0], [2.0, 0.5]], dtype=F64, requires_grad=True)
    std = torch.tensor([[0.5, 1.5], [0.2, 1.0]], dtype=F64, requires_grad=True)

    def sample(m: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)  # the same noise on every call of gradcheck
        dist = SquashedNormal(m, s, low, high)
        actions, log_prob = dist.rsample_with_log_prob((3,))
        torch.manual_seed(1)
        return actions, log_prob, dist.entropy(num_samples=4)

    assert torch.autograd.gradcheck(sample, (mean, std))
    actions, log_prob, entropy = sample(mean, std)
    (actions.sum() + log_prob.sum() + entropy.sum()).backward()
    for grad in (mean.grad, std.grad):
        assert grad is not None and torch.isfinite(grad).all() and (grad != 0).all()
    # d a / d mean = scale * (1 - tanh(u)^2), the reparameterization's path derivative.
    mean.grad = None
    torch.manual_seed(0)
    u = SquashedNormal(mean, std, low, high).rsample_pre_tanh()
    SquashedNormal(mean, std, low, high).squash(u).sum().backward()
    torch.testing.assert_close(mean.grad, (high - low) / 2 * (1 - torch.tanh(u.detach()) ** 2))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="std must be positive"):
        SquashedNormal(torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="high must be above its low"):
        SquashedNormal(torch.zeros(2), torch.ones(2), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="action dimension"):
        SquashedNormal(torch.tensor(0.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="num_samples"):
        SquashedNormal(torch.zeros(2), torch.ones(2)).entropy(num_samples=0)


def test_a_generator_makes_the_draws_and_leaves_the_global_one_alone() -> None:
    dist = SquashedNormal(torch.zeros(3, 2), torch.ones(3, 2))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    draws = [
        dist.rsample_pre_tanh((5,), torch.Generator().manual_seed(7)),
        dist.rsample((5,), torch.Generator().manual_seed(7)),
        dist.sample((5,), torch.Generator().manual_seed(7)),
        dist.rsample_with_log_prob((5,), torch.Generator().manual_seed(7))[0],
    ]
    assert torch.equal(torch.get_rng_state(), before)  # nothing drawn from torch's global generator
    # The same generator state, the same draws: u, then the squashed actions from the same u.
    expected_u = torch.randn(5, 3, 2, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(draws[0], expected_u, rtol=0, atol=0)
    for actions in draws[1:]:
        torch.testing.assert_close(actions, torch.tanh(expected_u), rtol=0, atol=0)
    e1 = dist.entropy(4, torch.Generator().manual_seed(3))
    e2 = dist.entropy(4, torch.Generator().manual_seed(3))
    assert torch.equal(e1, e2) and torch.equal(torch.get_rng_state(), before)


def test_entropy_at_a_draw_is_the_one_sample_estimate_with_its_reparameterized_gradient() -> None:
    low, high = torch.tensor([-1.0, 0.0], dtype=F64), torch.tensor([1.0, 4.0], dtype=F64)
    mean = torch.tensor([[0.3, -1.0], [2.0, 0.5]], dtype=F64, requires_grad=True)
    std = torch.tensor([[0.5, 1.5], [0.2, 1.0]], dtype=F64, requires_grad=True)
    dist = SquashedNormal(mean, std, low, high)
    gen = torch.Generator().manual_seed(0)
    u = dist.rsample_pre_tanh((), gen)  # reparameterized draw, graph to mean and std
    at_draw = dist.entropy_at(u.detach())  # the same draw, given as a plain value
    direct = dist.gaussian_entropy() + dist.log_abs_det_jacobian(u)
    torch.testing.assert_close(at_draw, direct)
    g_at = torch.autograd.grad(at_draw.sum(), (mean, std), retain_graph=True)
    g_direct = torch.autograd.grad(direct.sum(), (mean, std))
    for a, b in zip(g_at, g_direct, strict=True):
        torch.testing.assert_close(a, b)
    # Its mean over many draws of the distribution is the entropy (quadrature, 1-D).
    truth = true_entropy_1d(1.2, 2.0, -2.0, 3.0)
    many = SquashedNormal(
        torch.full((50_000, 1), 1.2, dtype=F64), torch.full((50_000, 1), 2.0, dtype=F64), -2.0, 3.0
    )
    estimates = many.entropy_at(many.rsample_pre_tanh((), torch.Generator().manual_seed(1)).detach())
    stderr = float(estimates.std()) / math.sqrt(len(estimates))
    assert abs(float(estimates.mean()) - truth) < 4 * stderr + 1e-4
