"""Feature bank, clutter queue and loss: against the original's trace, by hand, and laws."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from nemopose.train import bank as B


def _golden(fixture_data):
    return np.load(fixture_data / "golden" / "feature_bank_trace.npz")


def test_golden_trace_seven_steps(fixture_data):
    """Memories, similarities and losses of the original bank for all 7 steps."""
    d = _golden(fixture_data)
    nv, n, groups = int(d["n_vertices"]), int(d["num_noise"]), int(d["max_group"])
    bank = B.FeatureBank(nv, int(d["dim"]), n, groups, float(d["momentum"]))
    bank.memory.copy_(torch.from_numpy(d["memory0"]))
    # the golden file keeps the original names: T is the temperature, weight_noise the clutter prior
    kwargs = dict(temperature=float(d["T"]), distance_thr=float(d["distance_thr"]), clutter_prior=float(d["weight_noise"]))
    for s in range(int(d["steps"])):
        x, kp, w = (torch.from_numpy(d[f"{k}{s}"]) for k in ("x", "kp", "weights"))
        sim, noise_sim = bank.similarities(x)
        np.testing.assert_allclose(sim.numpy(), d[f"sim{s}"], atol=2e-7, rtol=0)
        np.testing.assert_allclose(noise_sim.numpy(), d[f"noise_sim{s}"], atol=2e-7, rtol=0)
        memory = bank.memory.clone()
        loss, _ = B.nemo_loss(x, memory, nv, kp, w, **kwargs)
        ref = B.reference_loss(x, memory, nv, kp, w, **kwargs)
        assert float(loss) == pytest.approx(float(d[f"loss{s}"]), abs=2e-6, rel=0)
        assert float(ref) == pytest.approx(float(d[f"loss{s}"]), abs=2e-6, rel=0)
        bank.update(x, w)
        np.testing.assert_allclose(bank.memory.numpy(), d[f"memory{s + 1}"], atol=1e-7, rtol=0)
        # 40 clutter rows, slots of 4 images x 5 = 20 rows: the pointer alternates 1, 0, 1, ...
        assert int(bank.queue_slots) == 2 and int(bank.queue_ptr) == (s + 1) % 2


def _unit(*v):
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def test_hand_computed_update_and_queue_cycle():
    bank = B.FeatureBank(num_vertices=2, dim=2, num_noise=1, max_group=2, momentum=0.9)
    bank.memory.copy_(torch.stack([_unit(1, 0), _unit(0, 1), _unit(0.6, 0.8), _unit(-1, 0)]))
    x = torch.stack([_unit(1, 0), _unit(0.6, 0.8), _unit(0, -1)]).unsqueeze(0)          # (1, 3, 2)
    bank.update(x, torch.tensor([[1.0, 0.5]]))
    # v0: 0.9 (1,0) + 0.1 (1,0) = (1,0); v1: 0.9 (0,1) + 0.1 * 0.5 (0.6,0.8) = (0.03, 0.94)
    v1 = torch.tensor([0.03, 0.94]) / math.hypot(0.03, 0.94)
    torch.testing.assert_close(bank.memory[0], torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bank.memory[1], v1, atol=1e-6, rtol=0)
    # queue: 2 rows, slots of 1 image x 1 clutter row -> 2 slots; slot 0 written first
    torch.testing.assert_close(bank.memory[2], torch.tensor([0.0, -1.0]))
    torch.testing.assert_close(bank.memory[3], torch.tensor([-1.0, 0.0]))
    assert int(bank.queue_slots) == 2 and int(bank.queue_ptr) == 1
    x2 = x.clone()
    x2[0, 2] = _unit(1, 1)
    bank.update(x2, torch.zeros(1, 2))
    torch.testing.assert_close(bank.memory[3], _unit(1, 1))
    assert int(bank.queue_ptr) == 0
    x3 = x.clone()
    x3[0, 2] = _unit(-1, 1)
    bank.update(x3, torch.zeros(1, 2))
    torch.testing.assert_close(bank.memory[2], _unit(-1, 1))           # cycled back to slot 0
    # zero weights: the batch-mean quirk shrinks the vertex rows, renormalisation restores them
    torch.testing.assert_close(bank.memory[1], v1, atol=1e-6, rtol=0)


def test_hand_computed_loss():
    memory = torch.stack([_unit(1, 0), _unit(0, 1), _unit(0.6, 0.8), _unit(-1, 0)])
    x = torch.stack([_unit(1, 0), _unit(0.6, 0.8), _unit(0, -1)]).unsqueeze(0)
    T, wn = 0.5, math.exp(-1.0)

    def lse(*v):
        return math.log(sum(math.exp(a) for a in v))

    # rows: sims / T, clutter columns + log(wn) = -1
    ce0 = lse(2.0, 0.0, 1.2 - 1, -2.0 - 1) - 2.0
    ce1 = lse(1.2, 1.6, 2.0 - 1, -1.2 - 1) - 1.6
    noise = 0.1 * (0.0 + -1.0) / 2
    far = torch.tensor([[[0.0, 0.0], [0.0, 100.0]]])
    loss, _ = B.nemo_loss(x, memory, 2, far, torch.tensor([[1.0, 0.5]]), temperature=T, clutter_prior=wn)
    assert float(loss) == pytest.approx((ce0 + ce1) / 2 + noise, abs=1e-6)
    # vertex 1 invisible: only row 0 counts
    loss, _ = B.nemo_loss(x, memory, 2, far, torch.tensor([[1.0, 0.0]]), temperature=T, clutter_prior=wn)
    assert float(loss) == pytest.approx(ce0 + noise, abs=1e-6)
    # vertices 10 px apart: each is masked out of the other's negatives (-1e5 logit)
    near = torch.tensor([[[0.0, 0.0], [0.0, 10.0]]])
    loss, _ = B.nemo_loss(x, memory, 2, near, torch.tensor([[1.0, 0.5]]), temperature=T, clutter_prior=wn)
    m0 = lse(2.0, 0.2, -3.0) - 2.0
    m1 = lse(1.6, 1.0, -2.2) - 1.6
    assert float(loss) == pytest.approx((m0 + m1) / 2 + noise, abs=1e-6)


def test_near_vertex_mask_threshold_and_self():
    kp = torch.tensor([[[0.0, 0.0], [0.0, 48.0], [0.0, 49.0], [0.0, 0.0]]])
    mask = B.near_vertex_mask(kp, 48)
    expected = torch.tensor([[False, True, False, True],     # 48 px is within (<=), 49 is not
                             [True, False, True, True],
                             [False, True, False, False],
                             [True, True, False, False]])   # a duplicate pixel is masked, self is not
    assert torch.equal(mask[0], expected)
    b, v = torch.tensor([0, 0]), torch.tensor([3, 1])
    assert torch.equal(B.near_vertex_mask(kp, 48, rows=(b, v)), expected[[3, 1]])


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(3, 12), st.integers(0, 4), st.integers(0, 10_000))
def test_fast_loss_equals_reference_with_gradients(batch, nv, n_noise, seed):
    gen = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(batch, nv + n_noise, 8, generator=gen), dim=2).requires_grad_(True)
    memory = F.normalize(torch.randn(nv + 6, 8, generator=gen), dim=1)
    kp = torch.randint(0, 80, (batch, nv, 2), generator=gen).float()
    w = torch.rand(batch, nv, generator=gen) * (torch.rand(batch, nv, generator=gen) > 0.3)
    w[0, 0] = 1.0
    fast, _ = B.nemo_loss(x, memory, nv, kp, w, temperature=0.07, distance_thr=30)
    (g_fast,) = torch.autograd.grad(fast, x)
    ref = B.reference_loss(x, memory, nv, kp, w, temperature=0.07, distance_thr=30)
    (g_ref,) = torch.autograd.grad(ref, x)
    assert float(fast.detach()) == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-5)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-6)


def test_global_normalisers_split_the_loss():
    """Two halves normalised by the global counts sum to the whole batch's loss (what DDP's
    gradient average relies on)."""
    gen = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(4, 12, 16, generator=gen), dim=2)
    memory = F.normalize(torch.randn(20, 16, generator=gen), dim=1)
    kp = torch.randint(0, 100, (4, 10, 2), generator=gen).float()
    w = (torch.rand(4, 10, generator=gen) > 0.4).float()
    whole, _ = B.nemo_loss(x, memory, 10, kp, w)
    rows = float((w > 0).sum()) / 2
    noise = 4 * 2 * 10 / 2
    parts = [B.nemo_loss(x[s], memory, 10, kp[s], w[s], ce_count=rows, noise_count=noise)[0]
             for s in (slice(0, 1), slice(1, 4))]
    assert float(sum(parts) / 2) == pytest.approx(float(whole), rel=1e-6)


def test_queue_slots_fixed_by_first_batch_and_overflow():
    bank = B.FeatureBank(3, 4, num_noise=2, max_group=6)             # 12 clutter rows
    x = F.normalize(torch.randn(2, 5, 4), dim=2)
    bank.update(x, torch.ones(2, 3))
    assert int(bank.queue_slots) == 3                                   # 12 // (2 * 2)
    with pytest.raises(AssertionError, match="queue overflow"):
        for _ in range(3):                                              # a larger batch overruns
            bank.update(F.normalize(torch.randn(3, 5, 4), dim=2), torch.ones(3, 3))
    big = B.FeatureBank(3, 4, num_noise=2, max_group=2)                # 4 rows < 2 * 3 clutter rows
    xb = F.normalize(torch.randn(3, 5, 4), dim=2)
    big.update(xb, torch.ones(3, 3))
    torch.testing.assert_close(big.clutter_memory, xb[:, 3:].reshape(-1, 4)[:4])
    assert int(big.queue_slots) == -1 and int(big.queue_ptr) == 0


def test_mean_over_visible_flag():
    torch.manual_seed(1)
    x = F.normalize(torch.randn(4, 3, 8), dim=2)
    w = torch.tensor([[1.0, 0.0, 0.0]] * 4)
    quirk = B.FeatureBank(3, 8, num_noise=0, max_group=0)
    fixed = B.FeatureBank(3, 8, num_noise=0, max_group=0, mean_over_visible=True)
    fixed.memory.copy_(quirk.memory)
    raw = quirk.memory.clone()
    start = F.normalize(raw, dim=1)
    quirk.update(x, w)
    fixed.update(x, w)
    torch.testing.assert_close(quirk.memory[0], F.normalize(raw[0] * 0.9 + 0.1 * x[:, 0].mean(0), dim=0),
                               atol=1e-6, rtol=0)
    # with all four images seeing vertex 0 both means agree; vertices 1, 2 keep their direction
    torch.testing.assert_close(fixed.memory[0], quirk.memory[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(fixed.memory[1:], start[1:], atol=1e-6, rtol=0)
    # vertex 0 seen by one image of four: the quirk moves it a quarter as far
    w2 = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    a, b = B.FeatureBank(3, 8, 0, 0), B.FeatureBank(3, 8, 0, 0, mean_over_visible=True)
    b.memory.copy_(a.memory)
    m0 = a.memory[0].clone()
    a.update(x, w2)
    b.update(x, w2)
    torch.testing.assert_close(a.memory[0], F.normalize(m0 * 0.9 + 0.1 * x[0, 0] / 4, dim=0), atol=1e-6, rtol=0)
    torch.testing.assert_close(b.memory[0], F.normalize(m0 * 0.9 + 0.1 * x[0, 0], dim=0), atol=1e-6, rtol=0)


def test_bank_state_round_trip_and_init_range():
    gen = torch.Generator().manual_seed(0)
    bank = B.FeatureBank(1000, 128, 5, 512, generator=gen)
    assert bank.memory.shape == (1000 + 2560, 128)
    s = 1 / math.sqrt(128 / 3)
    assert float(bank.memory.abs().max()) <= s and float(bank.memory.abs().max()) > 0.99 * s
    bank.update(F.normalize(torch.randn(2, 1005, 128), dim=2), torch.ones(2, 1000))
    state = bank.state_dict()
    assert set(state) == {"memory", "queue_ptr", "queue_slots"}
    other = B.FeatureBank(1000, 128, 5, 512)
    other.load_state_dict(state)
    assert torch.equal(other.memory, bank.memory) and int(other.queue_ptr) == 1 and int(other.queue_slots) == 256


def test_update_checks_shapes():
    bank = B.FeatureBank(3, 4, 1, 2)
    with pytest.raises(ValueError, match="features must be"):
        bank.update(torch.zeros(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(AssertionError, match="weights must be"):
        bank.update(torch.zeros(2, 4, 4), torch.ones(2, 4))
