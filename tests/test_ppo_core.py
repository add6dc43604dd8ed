"""rlhf_hf.ppo.core checked against values worked out by hand (written out in each test)."""

import io
import math

import pytest
import torch

from rlhf_hf.ppo.core import (
    AdaptiveKLController,
    FixedKLController,
    compute_rewards,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    masked_mean_var,
    masked_var,
    masked_whiten,
    policy_loss,
    shape_scores,
    value_loss,
)

F64 = torch.float64


def t(x):
    return torch.tensor(x, dtype=F64)


# The functions under test run in float32 on a handful of numbers; the hand values are exact. A few float32
# operations round to within ~8 eps (eps = 1.2e-7) relative: rel=1e-6; abs only for values that should be 0.
def approx(x, rel=1e-6, abs=1e-9):
    return pytest.approx(x, rel=rel, abs=abs)


# ---------------------------------------------------------------- logprobs / entropy


def test_logprobs_match_hand_log_softmax():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])  # 1 x 2 x 3
    labels = torch.tensor([[2, 0]])
    # log softmax of [1, 2, 3] at index 2: 3 - log(e + e^2 + e^3) = -0.40760596; uniform over 3: -log 3
    expected = [3 - math.log(math.e + math.e**2 + math.e**3), -math.log(3)]
    assert expected[0] == approx(-0.40760596)
    out = logprobs_from_logits(logits, labels)
    assert out.shape == (1, 2)
    assert out[0].tolist() == approx(expected)


def test_logprobs_temperature_divides_logits():
    labels = torch.tensor([[2]])
    # [2, 4, 6] / 2 = [1, 2, 3] -> same as the hand value above
    out = logprobs_from_logits(torch.tensor([[[2.0, 4.0, 6.0]]]), labels, temperature=2.0)
    assert out.item() == approx(-0.40760596)
    # at temperature 1: 6 - log(e^2 + e^4 + e^6) = -log(1 + e^-2 + e^-4) = -log(1.15365) = -0.14293146
    assert logprobs_from_logits(torch.tensor([[[2.0, 4.0, 6.0]]]), labels).item() == approx(-0.14293146)


def test_logprobs_bf16_input_returns_fp32_and_has_grad():
    logits = torch.zeros(2, 3, 4, dtype=torch.bfloat16, requires_grad=True)
    out = logprobs_from_logits(logits, torch.zeros(2, 3, dtype=torch.long))
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.full((2, 3), -math.log(4)))
    out.sum().backward()
    # d log p_0 / d logit_j = 1[j == 0] - 1/4
    assert logits.grad[0, 0].float().tolist() == approx([0.75, -0.25, -0.25, -0.25], rel=1e-2)


def test_entropy_uniform_is_log_v_and_two_point_by_hand():
    assert torch.allclose(entropy_from_logits(torch.zeros(2, 3, 5)), torch.full((2, 3), math.log(5)))
    # logits [0, log 3] -> p = [1/4, 3/4]: H = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.56233514
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, -math.inf]]])
    out = entropy_from_logits(logits)
    assert out[0].tolist() == approx([0.56233514, 0.0])  # the -inf logit gives 0, not NaN


# ---------------------------------------------------------------- masked statistics / whitening

X = [[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 100.0, 100.0]]
M = [[1, 1, 1, 0], [1, 1, 0, 0]]  # real values 1..5: mean 3, sum of squared deviations 4+1+0+1+4 = 10


def test_masked_mean_and_var_by_hand():
    x, mask = t(X), torch.tensor(M, dtype=torch.bool)
    assert masked_mean(x, mask).item() == approx(3.0)
    assert masked_mean(x, mask, dim=1).tolist() == approx([2.0, 4.5])
    assert masked_var(x, mask).item() == approx(10 / 4)
    assert masked_var(x, mask, unbiased=False).item() == approx(10 / 5)
    with pytest.raises(ValueError):
        masked_var(x, torch.zeros_like(mask))


def test_masked_whiten_mean0_var1():
    x, mask = t(X), t(M)
    w = masked_whiten(x, mask)
    assert masked_mean(w, mask).item() == approx(0.0, abs=1e-7)
    assert masked_var(w, mask).item() == approx(1.0, rel=1e-6)
    assert w[0, 0].item() == approx((1 - 3) / math.sqrt(2.5))  # -1.26491106
    assert masked_whiten(x, mask, shift_mean=False)[0, 0].item() == approx(-2 / math.sqrt(2.5) + 3)


# ---------------------------------------------------------------- KL estimators and rewards


def test_kl_k1_and_k3_by_hand():
    logp, ref = t([-1.0, -2.0, -0.5]), t([-1.5, -1.0, -0.5])
    assert kl_estimate(logp, ref, "k1").tolist() == approx([0.5, -1.0, 0.0])
    # log r = ref - logp = [-0.5, 1, 0]; k3 = (r - 1) - log r
    k3 = kl_estimate(logp, ref, "k3")
    assert k3.tolist() == approx([math.exp(-0.5) - 1 + 0.5, math.e - 1 - 1, 0.0])
    assert k3.tolist() == approx([0.10653066, 0.71828183, 0.0])
    assert (k3 >= 0).all() and k3[2] == 0
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k2")


def test_compute_rewards_score_on_last_real_token():
    mask = t([[1, 1, 1, 1], [1, 1, 0, 0]])
    logp = t([[-1.0, -1.0, -1.0, -1.0], [-2.0, -2.0, -9.0, -9.0]])
    ref = t([[-1.5, -1.0, -0.5, -1.0], [-1.0, -2.5, 0.0, 0.0]])
    # k1 = row0 [0.5, 0, -0.5, 0], row1 [-1, 0.5, (pad), (pad)]; penalty -0.1 * k1; scores 2 and -3
    rewards, kl = compute_rewards(t([2.0, -3.0]), logp, ref, mask, kl_coef=0.1)
    assert kl.tolist()[0] == approx([0.5, 0.0, -0.5, 0.0])
    assert kl.tolist()[1] == approx([-1.0, 0.5, 0.0, 0.0])
    assert rewards.tolist()[0] == approx([-0.05, 0.0, 0.05, 2.0])
    assert rewards.tolist()[1] == approx([0.1, -0.05 - 3.0, 0.0, 0.0])  # not on the first pad (index 2)


def test_compute_rewards_k3_and_empty_row():
    mask = t([[1, 1]])
    # log r = [0, 1] -> k3 = [0, e - 2]; penalty -0.5 * k3; score 1 on the last token
    rewards, _ = compute_rewards(t([1.0]), t([[-1.0, -2.0]]), t([[-1.0, -1.0]]), mask, 0.5, kl_kind="k3")
    assert rewards[0].tolist() == approx([0.0, -0.5 * (math.e - 2) + 1.0])
    with pytest.raises(ValueError):
        compute_rewards(t([1.0, 2.0]), t([[0.0, 0.0]] * 2), t([[0.0, 0.0]] * 2), t([[1, 0], [0, 0]]), 0.1)


# ---------------------------------------------------------------- GAE

REWARDS, VALUES = [0.0, 0.0, 1.0], [0.5, 0.6, 0.7]


def test_gae_gamma1_by_hand():
    adv, ret = gae(t([REWARDS]), t([VALUES]), t([[1, 1, 1]]), gamma=1.0, lam=0.95)
    # t=2: delta = 1 + 0 - 0.7 = 0.3, A2 = 0.3
    # t=1: delta = 0 + 0.7 - 0.6 = 0.1, A1 = 0.1 + 0.95 * 0.3 = 0.385
    # t=0: delta = 0 + 0.6 - 0.5 = 0.1, A0 = 0.1 + 0.95 * 0.385 = 0.46575
    assert adv[0].tolist() == approx([0.46575, 0.385, 0.3])
    assert ret[0].tolist() == approx([0.96575, 0.985, 1.0])


def test_gae_gamma09_by_hand():
    adv, ret = gae(t([REWARDS]), t([VALUES]), t([[1, 1, 1]]), gamma=0.9, lam=0.95)
    # gamma * lam = 0.855
    # t=2: delta = 1 - 0.7 = 0.3, A2 = 0.3
    # t=1: delta = 0.9 * 0.7 - 0.6 = 0.03, A1 = 0.03 + 0.855 * 0.3 = 0.2865
    # t=0: delta = 0.9 * 0.6 - 0.5 = 0.04, A0 = 0.04 + 0.855 * 0.2865 = 0.2849575
    assert adv[0].tolist() == approx([0.2849575, 0.2865, 0.3])
    assert ret[0].tolist() == approx([0.7849575, 0.8865, 1.0])


def test_gae_lambda1_is_monte_carlo():
    # gamma = lam = 1: returns are the undiscounted reward-to-go, 1 at every step
    _, ret = gae(t([REWARDS]), t([VALUES]), t([[1, 1, 1]]), gamma=1.0, lam=1.0)
    assert ret[0].tolist() == approx([1.0, 1.0, 1.0])


def test_gae_masked_tail_equals_truncated_row():
    rewards = t([REWARDS + [7.0, -4.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    values = t([VALUES + [5.0, -3.0], [0.1, 0.2, 0.3, 0.4, 0.5]])
    mask = t([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.95)
    short_adv, _ = gae(t([REWARDS]), t([VALUES]), t([[1, 1, 1]]), gamma=0.9, lam=0.95)
    assert adv[0, :3].tolist() == approx(short_adv[0].tolist())
    assert adv[0, :3].tolist() == approx([0.2849575, 0.2865, 0.3])  # the hand values above
    assert adv[0, 3:].tolist() == [0.0, 0.0]


def test_gae_has_no_grad():
    values = t([VALUES]).requires_grad_()
    adv, ret = gae(t([REWARDS]), values, t([[1, 1, 1]]), 1.0, 0.95)
    assert not adv.requires_grad and not ret.requires_grad


# ---------------------------------------------------------------- policy / value losses


def test_policy_loss_clip_edges_by_hand():
    eps = 0.2
    ratios = [1.2, 1.5, 1.5, 0.5, 0.5, 2.0]
    adv = t([[1.0, 1.0, -1.0, -2.0, 2.0, 100.0]])
    mask = t([[1, 1, 1, 1, 1, 0]])
    logp = t([[math.log(r) for r in ratios]]).requires_grad_()
    # per token max(-A r, -A clip(r, 0.8, 1.2)):
    #   r=1.2 (edge), A=+1: max(-1.2, -1.2) = -1.2   not clipped
    #   r=1.5,        A=+1: max(-1.5, -1.2) = -1.2   clipped
    #   r=1.5,        A=-1: max( 1.5,  1.2) =  1.5   not clipped (pessimistic side)
    #   r=0.5,        A=-2: max( 1.0,  1.6) =  1.6   clipped
    #   r=0.5,        A=+2: max(-1.0, -1.6) = -1.0   not clipped
    #   r=2.0 masked
    loss, stats = policy_loss(logp, torch.zeros_like(logp), adv, mask, eps)
    assert loss.item() == approx((-1.2 - 1.2 + 1.5 + 1.6 - 1.0) / 5)  # -0.06
    assert stats["clipfrac"].item() == approx(2 / 5)
    assert stats["ratio_mean"].item() == approx((1.2 + 1.5 + 1.5 + 0.5 + 0.5) / 5)
    logs = [math.log(r) for r in ratios[:5]]
    assert stats["approxkl"].item() == approx(0.5 * sum(x * x for x in logs) / 5)
    loss.backward()
    # d/dlogp of -A r / 5 is -A r / 5 on active unclipped tokens, 0 on clipped and masked ones
    g = logp.grad[0].tolist()
    assert [g[1], g[3], g[5]] == [0.0, 0.0, 0.0]
    assert [g[2], g[4]] == approx([1.5 / 5, -2 * 0.5 / 5])


def test_value_loss_clipped_and_unclipped():
    eps = 0.2
    values = t([[1.0, 1.0, 0.6, 10.0]])
    old = t([[0.5, 0.5, 0.5, 0.0]])
    returns = t([[1.0, 0.0, 2.0, -10.0]])
    mask = t([[1, 1, 1, 0]])
    # clip(v, old +/- 0.2) = [0.7, 0.7, 0.6]
    #   max((1-1)^2, (0.7-1)^2) = 0.09 clipped; max((1-0)^2, 0.7^2) = 1.0; max(1.4^2, 1.4^2) = 1.96
    loss, stats = value_loss(values, old, returns, mask, eps)
    assert loss.item() == approx(0.5 * (0.09 + 1.0 + 1.96) / 3)
    assert stats["vf_clipfrac"].item() == approx(1 / 3)
    # wide clip range: no clipping, plain 0.5 * MSE = 0.5 * (0 + 1 + 1.96) / 3
    loss, stats = value_loss(values, old, returns, mask, 10.0)
    assert loss.item() == approx(0.5 * (0.0 + 1.0 + 1.96) / 3)
    assert stats["vf_clipfrac"].item() == 0.0


def test_explained_variance():
    returns, mask = t([[1.0, 2.0, 3.0, 50.0]]), t([[1, 1, 1, 0]])
    assert float(explained_variance(returns.clone(), returns, mask)) == approx(1.0)
    assert float(explained_variance(torch.zeros_like(returns), returns, mask)) == approx(0.0)
    # residual [0, 0, 1]: unbiased var = ((1/3)^2 * 2 + (2/3)^2) / 2 = 1/3; Var(R) = 1 -> 1 - 1/3
    assert float(explained_variance(t([[1.0, 2.0, 2.0, 0.0]]), returns, mask)) == approx(2 / 3)


# ---------------------------------------------------------------- KL controllers


def test_fixed_kl_controller():
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=512)
    assert ctl.value == 0.05


def test_adaptive_kl_controller_by_hand():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=9.0, n_steps=256)  # 50% above target, error clipped to 0.2
    assert ctl.value == approx(0.1 * (1 + 0.2 * 256 / 10000))  # 0.100512
    ctl = AdaptiveKLController(0.1, 6.0, 10000)
    ctl.update(current_kl=3.0, n_steps=256)  # 50% below, clipped to -0.2
    assert ctl.value == approx(0.1 * (1 - 0.2 * 256 / 10000))
    ctl = AdaptiveKLController(0.1, 6.0, 10000)
    ctl.update(current_kl=6.6, n_steps=256)  # 10% above, inside the clip
    assert ctl.value == approx(0.1 * (1 + 0.1 * 256 / 10000))


def test_kl_controller_state_dict_round_trip():
    ctl = AdaptiveKLController(0.1, 6.0, 10000)
    for kl in (9.0, 7.0, 2.0):
        ctl.update(kl, 256)
    buf = io.BytesIO()
    torch.save(ctl.state_dict(), buf)
    buf.seek(0)
    resumed = AdaptiveKLController(0.1, 6.0, 10000)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.value == ctl.value != 0.1
    ctl.update(8.0, 256)
    resumed.update(8.0, 256)
    assert resumed.value == ctl.value
    fixed = FixedKLController(0.3)
    fixed.load_state_dict(FixedKLController(0.7).state_dict())
    assert fixed.value == 0.7


def test_statistics_through_a_reduce_match_the_local_ones():
    # One process: the reduce (a sum over processes) is the identity and the global path gives the local numbers;
    # 2 processes against 1 are compared end to end in test_distributed.
    x, mask = t([[1.0, 2.0, 9.0], [3.0, 4.0, 5.0]]), t([[1, 1, 0], [1, 1, 1]])
    mean, var = masked_mean_var(x, mask, reduce=lambda v: v)
    assert mean.item() == approx(3.0) and var.item() == approx(2.5)  # (4 + 1 + 0 + 1 + 4) / 4
    assert masked_whiten(x, mask, reduce=lambda v: v)[1].tolist() == approx(
        masked_whiten(x, mask)[1].tolist()
    )


def test_shape_scores_normalises_clips_and_penalises_unfinished_answers():
    raw, has_eos = t([3.0, 5.0, 100.0]), torch.tensor([True, False, True])
    stats = {"mean": 3.0, "std": 2.0}
    assert shape_scores(raw, has_eos).tolist() == approx([3.0, 5.0, 100.0])
    assert shape_scores(raw, has_eos, stats=stats).tolist() == approx([0.0, 1.0, 48.5])
    shaped = shape_scores(raw, has_eos, stats=stats, clip=2.0, missing_eos_penalty=0.5)
    assert shaped.tolist() == approx([0.0, 0.5, 2.0])
