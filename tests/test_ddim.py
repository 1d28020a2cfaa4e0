"""Schedules, prediction targets and the DDIM step."""
import pytest
import torch

from aa.sampling import ddim


@pytest.mark.parametrize("schedule, last", [("scaled_linear", 0.0046601), ("linear", 0.0015790)])
def test_sd_schedule_end_values(schedule, last):
    """alpha_bar_0 = 1 - 0.00085 and SD's alpha_bar_999 for both beta schedules."""
    ab = ddim.alphas_cumprod(schedule)
    assert ab.shape == (1000,)
    assert float(ab[0]) == pytest.approx(0.99915, abs=1e-7)
    assert float(ab[-1]) == pytest.approx(last, abs=5e-8)


@pytest.mark.parametrize("schedule", ["scaled_linear", "linear"])
def test_zero_terminal_snr_is_exactly_zero_at_the_end_and_keeps_t0(schedule):
    """Zero-SNR rescale: alpha_bar_999 == 0 exactly, alpha_bar_0 unchanged, still decreasing."""
    plain, zero = ddim.alphas_cumprod(schedule), ddim.alphas_cumprod(schedule, zero_snr=True)
    assert float(zero[-1]) == 0.0
    assert float(zero[0]) == pytest.approx(float(plain[0]), abs=1e-12)
    assert bool((zero[1:] < zero[:-1]).all())


def test_timestep_spacings_match_diffusers_conventions():
    """trailing ends at 999 and steps by 1000/n; leading starts at steps_offset; t_prev = t - 1000 // n."""
    trailing = ddim.timesteps(25, spacing="trailing")
    assert [t for t, _ in trailing[:3]] == [999, 959, 919] and trailing[-1] == (39, -1)
    leading = ddim.timesteps(50, spacing="leading", steps_offset=1)
    assert leading[0] == (981, 961) and leading[-1] == (1, -19)
    assert [t for t, _ in ddim.timesteps(4, spacing="linspace")] == [999, 666, 333, 0]
    with pytest.raises(ValueError, match="spacing"):
        ddim.timesteps(10, spacing="bogus")


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_one_ddim_step_with_the_true_noise_lands_on_the_closed_form(prediction):
    """If the model predicts the true noise (or v), a deterministic DDIM step from x_t gives exactly
    x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps, the forward process at t_prev. (eps prediction can't recover
    x0 at SNR 0, so it runs on the plain schedule; v runs on the zero-SNR one.)"""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    ab = ddim.alphas_cumprod("scaled_linear", zero_snr=prediction == "v")
    for t, t_prev in [(999, 959), (500, 460), (39, -1)]:
        ab_t, ab_prev = ddim.alpha_bar(ab, t), ddim.alpha_bar(ab, t_prev)
        x_t = ddim.add_noise(x0, eps, ab_t)
        pred = ddim.training_target(x0, eps, ab_t, prediction)
        x_prev = ddim.ddim_step(x_t, pred, ab_t, ab_prev, prediction)
        torch.testing.assert_close(x_prev, ddim.add_noise(x0, eps, ab_prev), atol=1e-10, rtol=1e-10)


def test_v_eps_x0_round_trips():
    """eps -> x_t, v -> (x0, eps) recovers both; an eps prediction recovers x0."""
    x0, eps = torch.randn(3, 4, 5, 5, dtype=torch.float64), torch.randn(3, 4, 5, 5, dtype=torch.float64)
    ab = torch.tensor([0.9, 0.3, 0.01], dtype=torch.float64)
    x_t = ddim.add_noise(x0, eps, ab)
    for prediction in ("eps", "v"):
        x0_hat, eps_hat = ddim.to_x0_eps(ddim.training_target(x0, eps, ab, prediction), x_t, ab, prediction)
        torch.testing.assert_close(x0_hat, x0)
        torch.testing.assert_close(eps_hat, eps)


def test_v_prediction_is_defined_at_zero_snr():
    """At ab = 0, x_t is pure noise and v = -x0: x0_hat = -v, eps_hat = x_t."""
    x_t, v = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    x0, eps = ddim.to_x0_eps(v, x_t, 0.0, "v")
    torch.testing.assert_close(x0, -v)
    torch.testing.assert_close(eps, x_t)


def test_eta_noise_comes_from_the_generator():
    """With eta > 0 the step is stochastic, reproducible from an explicit generator; the inputs are untouched."""
    x, pred = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    x_copy = x.clone()
    a = ddim.ddim_step(x, pred, 0.5, 0.6, eta=1.0, generator=torch.Generator().manual_seed(3))
    b = ddim.ddim_step(x, pred, 0.5, 0.6, eta=1.0, generator=torch.Generator().manual_seed(3))
    c = ddim.ddim_step(x, pred, 0.5, 0.6, eta=0.0)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(x, x_copy)


def test_min_snr_gamma_weights():
    """eps: min(SNR, g) / SNR (1 where SNR <= g, including SNR 0) in both variants; v 'released' (Moore's training
    scripts): min(SNR + 1, g) / (SNR + 1); v 'hang': min(SNR, g) / (SNR + 1). With g = 5 and SNR 0, 1, 4, 9, 999:
    released 1, 1, 1, 5/10, 5/1000; hang 0, 1/2, 4/5, 5/10, 5/1000 (they agree once SNR >= g)."""
    ab = torch.tensor([0.0, 0.5, 0.8, 0.9, 0.999], dtype=torch.float64)  # SNR = ab / (1 - ab) = 0, 1, 4, 9, 999
    for weighting in ddim.SNR_WEIGHTINGS:
        torch.testing.assert_close(ddim.min_snr_weight(ab, 5.0, "eps", weighting),
                                   torch.tensor([1.0, 1.0, 1.0, 5 / 9, 5 / 999], dtype=torch.float64))
    torch.testing.assert_close(ddim.min_snr_weight(ab, 5.0, "v"),  # the default is the released weighting
                               torch.tensor([1.0, 1.0, 1.0, 0.5, 5 / 1000], dtype=torch.float64))
    torch.testing.assert_close(ddim.min_snr_weight(ab, 5.0, "v", "hang"),
                               torch.tensor([0.0, 0.5, 0.8, 0.5, 5 / 1000], dtype=torch.float64))
    with pytest.raises(ValueError, match="weighting"):
        ddim.min_snr_weight(ab, 5.0, "v", "paper")


def test_min_snr_v_weights_on_the_training_schedule():
    """On the training schedule (scaled_linear, zero SNR), g = 5, worked by hand from alpha_bar:
    t = 999: ab = 0, SNR 0 -> released min(1, 5) / 1 = 1, hang 0 / 1 = 0 (no weight at all: hang's flaw);
    t = 500: ab = 0.241019, SNR = ab / (1 - ab) = 0.317556 -> released min(1.3176, 5) / 1.3176 = 1,
             hang 0.317556 / 1.317556 = ab = 0.241019;
    t = 100: ab = 0.886761, SNR = 7.830902 -> both 5 / 8.830902 = 0.566193."""
    ab = ddim.alphas_cumprod("scaled_linear", zero_snr=True)[[999, 500, 100]]
    torch.testing.assert_close(ab, torch.tensor([0.0, 0.241019, 0.886761], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(ddim.min_snr_weight(ab, 5.0, "v", "released"),
                               torch.tensor([1.0, 1.0, 0.566193], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(ddim.min_snr_weight(ab, 5.0, "v", "hang"),
                               torch.tensor([0.0, 0.241019, 0.566193], dtype=torch.float64), atol=1e-6, rtol=0)
