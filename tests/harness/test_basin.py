"""Tests of the basin-volume engine (harness.basin): closed forms, quadrature, hooks, the plain reference."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.special import gammainc, gammaln, ndtr

from harness.basin import (
    HookedPerturbation,
    estimate_basin,
    find_multipliers,
    gaussian_log_estimates,
    log_gaussian_integral,
    logmeanexp,
    per_example_basin,
    perturbed_weights,
    sample_directions,
    select_parameters,
)
from harness.basin.kl import CausalLMKL

torch.set_num_threads(1)


def _reference_module():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "basin_reference.py"
    spec = importlib.util.spec_from_file_location("basin_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_llama(seed: int = 0, tie: bool = False, hidden: int = 32, layers: int = 2, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=32, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=tie,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(config).to(dtype).eval()


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=32, n_embd=32, n_inner=64, n_layer=2, n_head=4, n_positions=16, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(config).eval()


def left_padded_batch(n: int, seq: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 32, (n, seq), generator=gen)
    lengths = torch.randint(seq // 2, seq + 1, (n,), generator=gen)
    mask = (torch.arange(seq) >= seq - lengths[:, None]).long()
    return ids.masked_fill(mask == 0, 0), mask


def state_copy(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model, saved) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), f"parameter {k} was left changed"


# ---------------------------------------------------------------------------------------------
# (1) root finder on a synthetic quadratic KL


def test_quadratic_kl_radius_matches_closed_form():
    gen = torch.Generator().manual_seed(0)
    dim, n_dirs, eps = 30, 9, 1e-2
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    hessian = a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64)
    dirs, _ = sample_directions(dim, n_dirs, seed=3, dtype=torch.float64)
    curv = torch.einsum("id,de,ie->i", dirs, hessian, dirs)

    def kl(scales):  # ½ δᵀHδ with δ = s u
        return 0.5 * curv * scales**2

    res = find_multipliers(kl, n_dirs, eps, rtol=1e-4)
    expected = torch.sqrt(2 * eps / curv)
    assert res.converged.all()
    assert torch.allclose(res.multipliers, expected, rtol=1e-3, atol=0)
    assert torch.allclose(res.kls, kl(res.multipliers))  # the KL belongs to the returned multiplier
    assert res.evaluations.max() <= 3  # log-log Newton with slope 2 is exact here


def test_search_nonquadratic_far_start_and_per_example_shape():
    gen = torch.Generator().manual_seed(1)
    k = torch.rand(4, 6, generator=gen, dtype=torch.float64) * 1e4 + 1e-3

    def kl(s):  # saturating, far from quadratic at large s; NaN entries stay NaN
        return 1 - torch.exp(-k * s**2 - 3 * k * s**4)

    res = find_multipliers(kl, (4, 6), 1e-2, init=1e3, rtol=1e-6)
    assert res.converged.all()
    assert torch.allclose(kl(res.multipliers), torch.full((4, 6), 1e-2, dtype=torch.float64), rtol=1e-6)
    assert res.evaluations.max() <= 20


def test_search_on_cliffs_and_dips_returns_evaluated_roots():
    # per-example KL curves of trained models: quadratic, then a dip, then a cliff (x100 within
    # a factor 1.3 in scale) that saturates; the root can sit on the cliff
    gen = torch.Generator().manual_seed(2)
    shape = (16, 64)
    k = 10 ** (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 6)  # 1e-6 .. 1e-4
    cliff = 10 ** (torch.rand(shape, generator=gen, dtype=torch.float64) + 1)  # 10 .. 100
    calls = []

    def kl(s):
        calls.append(int((~s.isnan()).sum()))
        dip = 1 - 0.8 * torch.exp(-((s / (0.6 * cliff)).log() ** 2) / 0.01)
        return k * s**2 * dip + 20 / (1 + torch.exp(-(s - cliff) / (0.03 * cliff)))

    res = find_multipliers(kl, shape, 1e-2, init=20.0, max_step_up=math.log(2))
    assert res.converged.all() and sum(calls) == int(res.evaluations.sum())
    got = kl(res.multipliers)
    assert ((got / 1e-2 - 1).abs() <= 1e-2).all()  # the returned multiplier is one that meets the test
    torch.testing.assert_close(res.kls, got)
    assert res.evaluations.float().mean() < 8


# ---------------------------------------------------------------------------------------------
# (2) the Gaussian integral


def _quad_log_integral(n, a, b, x1):
    f = lambda x: (n * math.log(x) if n > 0 else 0.0) - 0.5 * a * x * x + b * x  # noqa: E731
    xstar = (b + math.sqrt(b * b + 4 * a * n)) / (2 * a) if n > 0 else max(b / a, 0.0)
    xm = min(xstar, x1)
    fm = f(xm) if xm > 0 else 0.0
    val, _ = quad(lambda x: math.exp(f(x) - fm) if x > 0 else float(n == 0), 0.0, x1,
                  points=[xm] if 0 < xm < x1 else None, epsabs=0.0, epsrel=1e-12, limit=500)
    return fm + math.log(val)


@pytest.mark.parametrize("dim", [1, 2, 5, 20])
def test_log_integral_matches_quadrature(dim):
    for a in (1.0, 40.0):
        for b in (-3.0, 0.0, 2.5):
            for x1 in (0.02, 0.4, 3.0, 25.0):
                got = float(log_gaussian_integral(dim - 1, a, b, x1, c=-1.5))
                want = _quad_log_integral(dim - 1, a, b, x1) - 1.5
                assert got == pytest.approx(want, abs=1e-8), (dim, a, b, x1)


def test_log_integral_finite_and_exact_for_huge_dim():
    dim, sigma = 10**7, 0.02
    n, a = dim - 1, 1 / sigma**2
    mode = sigma * math.sqrt(n)
    x1 = np.array([1e-4, 1e-2, 0.9 * mode, 1.01 * mode, 10 * mode])
    got = log_gaussian_integral(n, a, 0.0, x1)
    assert np.isfinite(got).all()
    # b = 0 has a closed form: ½ (2/a)^((n+1)/2) γ((n+1)/2, a x1²/2)
    s = (n + 1) / 2
    for g, x in zip(got, x1):
        p = gammainc(s, a * x * x / 2)
        if p > 0:
            want = math.log(0.5) + s * math.log(2 / a) + gammaln(s) + math.log(p)
        else:  # regularised gamma underflows: x1 far below the mode, mpmath in high precision
            mpmath = pytest.importorskip("mpmath")
            mpmath.mp.dps = 30
            want = float(mpmath.log(0.5) + s * mpmath.log(2 / a) + mpmath.log(mpmath.gammainc(s, 0, a * x * x / 2)))
        assert g == pytest.approx(want, rel=1e-12, abs=1e-6)
    # many directions with b != 0 stay finite and increase with the radius
    b = np.linspace(-300, 300, 50)
    small, large = log_gaussian_integral(n, a, b, 0.01), log_gaussian_integral(n, a, b, 0.02)
    assert np.isfinite(small).all() and (large > small).all()


def test_one_dimensional_estimate_is_the_prior_mass_of_the_interval():
    theta, sigma, radius = 0.7, 0.5, 0.3
    # directions +1 and -1: estimates average to the prior mass of [θ - r, θ + r]
    _, est = gaussian_log_estimates(np.array([radius, radius]), np.ones(2), np.array([theta, -theta]),
                                    theta * theta, dim=1, sigma=sigma)
    want = math.log(ndtr((theta + radius) / sigma) - ndtr((theta - radius) / sigma))
    assert float(logmeanexp(est)) == pytest.approx(want, abs=1e-10)


def test_directions_are_seeded_unit_vectors_with_preconditioner():
    d1, p1 = sample_directions(50, 4, seed=7)
    d2, _ = sample_directions(50, 2, seed=7)
    assert torch.equal(d1[:2], d2) and torch.allclose(d1.norm(dim=1), torch.ones(4))
    assert torch.equal(p1, torch.ones(4, dtype=torch.float64))
    pre = torch.linspace(0.5, 2.0, 50)
    d3, p3 = sample_directions(50, 4, seed=7, preconditioner=pre)
    assert torch.allclose(d3, d1 * pre, atol=1e-6) and torch.allclose(p3, d3.double().norm(dim=1), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# (3) per-example hooked forward == explicit per-example weight perturbation


@pytest.mark.parametrize("arch", ["llama", "llama-tied", "gpt2"])
@pytest.mark.parametrize("layer", [None, 1])
def test_hooked_forward_matches_explicit_perturbation(arch, layer):
    model = tiny_gpt2() if arch == "gpt2" else tiny_llama(tie=arch == "llama-tied")
    saved = state_copy(model)
    subset = select_parameters(model, layer)
    dirs, _ = sample_directions(subset.dim, 3, seed=1)
    ids, mask = left_padded_batch(5, 7)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    dir_index, scales = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0.5, 1.0, 2.0, 0.0, 3.0])
    with torch.no_grad(), HookedPerturbation(model, subset, dirs) as hooks:
        hooks.set_rows(dir_index, scales)
        hooked = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    explicit = []
    for r in range(5):
        with torch.no_grad(), perturbed_weights(subset, dirs[dir_index[r]], float(scales[r])):
            explicit.append(model(input_ids=ids[r:r + 1], attention_mask=mask[r:r + 1], position_ids=pos[r:r + 1]).logits)
    explicit = torch.cat(explicit)
    real = mask.bool()
    assert torch.allclose(hooked[real], explicit[real], atol=2e-5, rtol=1e-4)
    assert (hooked[real] - model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[real]).abs().max() > 1e-3
    assert_same_state(model, saved)
    assert not any(m._forward_hooks for m in model.modules())


def test_select_parameters_layers_and_names():
    model = tiny_llama()
    assert select_parameters(model).dim == sum(p.numel() for p in model.parameters())
    layer1 = select_parameters(model, 1)
    assert layer1.names and all(n.startswith("model.layers.1.") for n in layer1.names)
    gpt_layer = select_parameters(tiny_gpt2(), 0)
    assert all(n.startswith("transformer.h.0.") for n in gpt_layer.names)
    names = ["model.norm.weight", "lm_head.weight"]
    assert select_parameters(model, names).names == names
    with pytest.raises(ValueError, match="unknown parameter"):
        select_parameters(model, ["nope"])
    with pytest.raises(IndexError):
        select_parameters(model, 5)


# ---------------------------------------------------------------------------------------------
# (4) agreement with the plain reference


def test_engine_agrees_with_plain_reference():
    ref = _reference_module()
    model = tiny_llama(hidden=16, layers=1, dtype=torch.float64)
    ids, mask = left_padded_batch(8, 6, seed=2)
    kwargs = dict(n_directions=4, eps=1e-2, seed=5)
    # default tolerance (tyche's rtol 1e-2): radii within 2%
    eng = estimate_basin(model, ids, mask, **kwargs)
    plain = ref.reference_basin(model, ids, mask, **kwargs)
    assert eng.converged.all() and plain.converged.all()
    np.testing.assert_allclose(eng.radii, plain.radii, rtol=0.02)
    assert eng.n_forward < plain.n_forward / 3
    # tight tolerance: log volume within 0.1 nats (its error is ~D times the radii's)
    eng = estimate_basin(model, ids, mask, rtol=1e-6, **kwargs)
    plain = ref.reference_basin(model, ids, mask, rtol=1e-6, **kwargs)
    np.testing.assert_allclose(eng.radii, plain.radii, rtol=1e-5)
    assert abs(eng.log_volume - plain.log_volume) < 0.1
    assert np.isfinite(eng.estimates).all() and eng.log_volume < 0
    # stacked evaluation of the directions gives the same radii
    stacked = estimate_basin(model, ids, mask, rtol=1e-6, mode="stacked", **kwargs)
    np.testing.assert_allclose(stacked.radii, eng.radii, rtol=1e-5)


# 3 examples: every problem starts at 1; 20 examples: from a pilot's median (see _pilot_start)
@pytest.mark.parametrize("n_examples, n_directions, data_seed, seed",
                         [(3, 2, 4, 1), pytest.param(20, 3, 7, 2, marks=pytest.mark.slow)])
def test_per_example_multipliers_agree_with_reference_loop(n_examples, n_directions, data_seed, seed):
    ref = _reference_module()
    model = tiny_llama(hidden=16, layers=1, dtype=torch.float64)
    ids, mask = left_padded_batch(n_examples, 6, seed=data_seed)
    kwargs = dict(n_directions=n_directions, eps=1e-2, seed=seed, rtol=1e-6)
    eng = per_example_basin(model, ids, mask, **kwargs)
    plain = ref.reference_per_example(model, ids, mask, **kwargs)
    assert eng.multipliers.shape == (n_directions, n_examples) and eng.log_volume.shape == (n_examples,)
    assert eng.converged.all()
    np.testing.assert_allclose(eng.multipliers, plain.multipliers, rtol=1e-5)
    np.testing.assert_allclose(eng.log_volume, plain.log_volume, atol=0.1)


def test_length_grouped_batches_give_the_padded_batch_kls():
    ref = _reference_module()
    model = tiny_llama(hidden=16, layers=2, dtype=torch.float64)
    ids, mask = left_padded_batch(90, 8, seed=8)
    mask[0, 2:5] = 0  # a row with a hole in its mask: batched with the mask, never maskless
    subset = select_parameters(model)
    dirs, _ = sample_directions(subset.dim, 3, seed=1, dtype=torch.float64)
    kl = CausalLMKL(model, ids, mask, subset, dirs, batch_size=32)
    rows = torch.arange(90).repeat(3)
    which = torch.arange(3).repeat_interleave(90)
    batches = kl._batches(rows, which)
    assert sorted(torch.cat(batches).tolist()) == list(range(270))
    assert all(len(b) <= 32 for b in batches)
    for b in batches:  # direction indices come in contiguous runs within a batch
        runs = torch.unique_consecutive(which[b])
        assert len(runs) == len(set(runs.tolist()))
    scales = torch.full((3, 90), 0.3, dtype=torch.float64)
    got = kl.per_example(scales)
    plain = ref.ReferenceKL(model, ids, mask, subset)
    for d in range(3):
        for r in (0, 1, 17, 44, 89):
            want = plain(dirs[d], 0.3, torch.tensor([r]))
            assert got[d, r].item() == pytest.approx(want, rel=1e-7, abs=1e-12)
    # the per-direction mean (sequential mode) agrees with the reference on all rows
    mean = kl.per_direction(torch.tensor([0.3, float("nan"), float("nan")], dtype=torch.float64))
    assert mean[0].item() == pytest.approx(plain(dirs[0], 0.3), rel=1e-7)


# ---------------------------------------------------------------------------------------------
# (5) the model is never left perturbed


def test_weights_restored_after_search_and_on_error():
    model = tiny_llama(tie=True)
    saved = state_copy(model)
    ids, mask = left_padded_batch(6, 5, seed=3)
    estimate_basin(model, ids, mask, n_directions=2, seed=0)
    estimate_basin(model, ids, mask, n_directions=2, seed=0, mode="stacked", layer=0)
    per_example_basin(model, ids, mask, n_directions=2, seed=0)
    assert_same_state(model, saved)
    subset = select_parameters(model)
    with pytest.raises(RuntimeError, match="boom"):
        with perturbed_weights(subset, torch.ones(subset.dim), 0.1):
            raise RuntimeError("boom")
    assert_same_state(model, saved)
    assert not any(m._forward_hooks for m in model.modules())


def test_kl_function_skips_nan_entries_and_counts_passes():
    model = tiny_llama()
    ids, mask = left_padded_batch(4, 5)
    subset = select_parameters(model, 0)
    dirs, _ = sample_directions(subset.dim, 3, seed=0)
    kl = CausalLMKL(model, ids, mask, subset, dirs)
    assert kl.n_forward == 1  # unperturbed log-probs once
    out = kl.per_example(torch.tensor([[0.1, float("nan"), 0.2, 0.3]] * 3, dtype=torch.float64))
    assert out[:, 1].isnan().all() and (out[:, [0, 2, 3]] > 0).all()
    assert kl.n_rows == 4 + 9
    zero = kl.per_direction(torch.tensor([0.0, float("nan"), 0.0], dtype=torch.float64))
    assert zero[1].isnan() and zero[[0, 2]].abs().max() < 1e-12


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_last_position_truncation_keeps_the_answer_logits(arch):
    from harness.basin.kl import _last_block_tails, last_position_only

    model = tiny_gpt2() if arch == "gpt2" else tiny_llama()
    ids, mask = left_padded_batch(6, 7, seed=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    subset = select_parameters(model)
    dirs, _ = sample_directions(subset.dim, 2, seed=0)
    kl = CausalLMKL(model, ids, mask, subset, dirs)
    assert kl._tails, "the truncation check should pass on a standard architecture"
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        with last_position_only(_last_block_tails(model)):
            cut = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
    torch.testing.assert_close(cut, full)
    torch.testing.assert_close(kl.base_logp, torch.log_softmax(full.double(), -1), rtol=1e-5, atol=1e-5)
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_probe_start_changes_only_the_cost():
    model = tiny_llama(hidden=16, layers=1, dtype=torch.float64)
    ids, mask = left_padded_batch(64, 6, seed=6)
    kwargs = dict(n_directions=6, eps=1e-2, seed=2, rtol=1e-6)
    plain = estimate_basin(model, ids, mask, probe_examples=0, **kwargs)
    probed = estimate_basin(model, ids, mask, probe_examples=8, **kwargs)
    assert plain.converged.all() and probed.converged.all()
    np.testing.assert_allclose(probed.radii, plain.radii, rtol=1e-5)


def test_fragile_probe_estimates_a_heavy_tailed_mean_kl_better_than_an_even_subset():
    """A trained model's mean KL is carried by a few fragile examples, the same ones in every
    direction; the stratified probe keeps them and stands the rest by an evenly spread few."""
    from harness.basin.search import _fragile_probe, _subset_rows

    gen = np.random.default_rng(0)
    n, size = 256, 64
    fragility = torch.tensor(gen.lognormal(0.0, 2.5, n))  # heavy-tailed, as on the MAD models

    class StubKL:
        n_examples, n_positions = n, torch.ones(n, dtype=torch.float64)

        def row_kls(self, direction, scale, rows=None):
            assert rows is None and direction == 0 and scale == 1.5
            return fragility.clone()

    rows, weights, bias = _fragile_probe(StubKL(), 0, 1.5, size)
    assert len(rows) == size and len(set(rows.tolist())) == size
    assert set(rows[:48].tolist()) == set(torch.argsort(fragility, descending=True)[:48].tolist())
    assert abs(float(weights.sum()) - n) < 1e-9  # the weights stand for every example
    estimate = float((weights * fragility[rows]).sum() / weights.sum())
    assert bias == pytest.approx(math.log(estimate / float(fragility.mean())))
    even = _subset_rows(n, size)
    stratified_err, even_err = [], []
    for _ in range(200):  # other directions: the same fragile examples, each KL off by a factor ~1.5
        kls = fragility * torch.tensor(gen.lognormal(0.0, 0.4, n))
        truth = float(kls.mean())
        stratified_err.append(abs(math.log(float((weights * kls[rows]).sum() / weights.sum()) / truth) - bias))
        even_err.append(abs(math.log(float(kls[even].mean()) / truth)))
    assert np.median(stratified_err) < 0.1 * np.median(even_err)  # measured: 0.008 against 0.80
    # no ranking to go by: no probe
    StubKL.row_kls = lambda self, direction, scale, rows=None: torch.zeros(n, dtype=torch.float64)
    assert _fragile_probe(StubKL(), 0, 1.5, size) is None


# ---------------------------------------------------------------------------------------------
# (6) seeded directions in bounded memory; bitwise restoration; the same numbers on every device


def test_directions_are_the_same_for_every_chunk_size_unit_norm_float32():
    from harness.basin.directions import RNG_BLOCK, SeededDirections

    dim = 2 * RNG_BLOCK + 12_345  # three RNG blocks, the last one short
    source = SeededDirections(dim, 3, seed=11)
    for i in (0, 2):
        full = source.vector(i)
        assert full.dtype == torch.float32 and full.shape == (dim,)
        assert abs(float(full.double().norm()) - 1.0) < 1e-6
        for chunk_size in (RNG_BLOCK, 300_007, dim):
            assert torch.equal(torch.cat([w for _, _, w in source.chunks(i, chunk_size)]), full)
        for lo, hi in ((0, 1), (RNG_BLOCK - 5, RNG_BLOCK + 5), (1234, 2 * RNG_BLOCK + 99), (dim - 3, dim)):
            assert torch.equal(source.slice(i, lo, hi), full[lo:hi])
    # direction i does not depend on how many are drawn, nor on where the drawing starts
    assert torch.equal(SeededDirections(dim, 1, seed=11).vector(0), source.vector(0))
    assert torch.equal(SeededDirections(dim, 1, seed=11, start=2).vector(0), source.vector(2))
    assert not torch.equal(SeededDirections(dim, 1, seed=12).vector(0), source.vector(0))
    dense, props = sample_directions(1000, 3, seed=11)
    assert torch.equal(dense[1], SeededDirections(1000, 3, seed=11).vector(1)) and torch.equal(props, torch.ones(3, dtype=torch.float64))


def test_subset_directions_match_the_flat_vector_and_the_prior_terms():
    from harness.basin.directions import SeededDirections, SubsetDirections, prior_terms

    model = tiny_llama(tie=True)
    subset, theta_sq, dirs, props, wt, sigma = prior_terms(model, None, 3, seed=4)
    source = SeededDirections(subset.dim, 3, seed=4)
    theta = subset.flat()
    assert theta_sq == pytest.approx(float(theta @ theta), rel=1e-12)
    assert sigma == pytest.approx(float(theta.pow(2).mean().sqrt()), rel=1e-12)
    for i in range(3):
        flat = source.vector(i)
        assert torch.equal(dirs.vector(i), flat)
        assert wt[i].item() == pytest.approx(float(flat.double() @ theta), rel=1e-5, abs=1e-9)
        uncached = SubsetDirections(subset, source, cache_bytes=0)  # one parameter's share at a time
        for k, (o, p) in enumerate(zip(subset.offsets, subset.params)):
            assert torch.equal(uncached.param(i, k), flat[o:o + p.numel()].view(p.shape))
        assert uncached.n_generated == 0
    pre = torch.linspace(0.5, 2.0, subset.dim)
    _, _, pdirs, pprops, pwt, _ = prior_terms(model, None, 2, seed=4, preconditioner=pre)
    for i in range(2):
        w = source.vector(i).double() * pre.double()
        assert pprops[i].item() == pytest.approx(float(w.norm()), rel=1e-6)
        assert pwt[i].item() == pytest.approx(float(w @ theta), rel=1e-5, abs=1e-9)
        torch.testing.assert_close(pdirs.vector(i), w.float())


def test_direction_cache_stays_within_its_budget_and_regenerates_the_same_values():
    from harness.basin.directions import SeededDirections, SubsetDirections

    model = tiny_llama()
    subset = select_parameters(model, 1)
    one = subset.dim * 4
    dirs = SubsetDirections(subset, SeededDirections(subset.dim, 5, seed=2), cache_bytes=2 * one)
    first = [dirs.vector(i).clone() for i in range(5)]
    assert len(dirs._cache) == 2 and dirs.n_generated == 5
    dirs.prefetch([0, 1, 2])  # three do not fit: left to per-parameter building
    assert len(dirs._cache) == 2
    assert all(torch.equal(dirs.vector(i), first[i]) for i in range(5))


def test_large_directions_are_not_cached_beyond_one():
    from harness.basin.directions import DEFAULT_CACHE_BYTES, LARGE_DIRECTION_BYTES, SeededDirections, SubsetDirections

    small = select_parameters(tiny_llama(), 1)
    dirs = SubsetDirections(small, SeededDirections(small.dim, 5, seed=2))
    assert dirs.capacity == DEFAULT_CACHE_BYTES // (small.dim * 4)  # small: every direction kept
    big_layer = torch.nn.Linear(2048, LARGE_DIRECTION_BYTES // (4 * 2048) + 1, bias=False)
    big = select_parameters(big_layer)
    assert big.dim * 4 > LARGE_DIRECTION_BYTES
    dirs = SubsetDirections(big, SeededDirections(big.dim, 5, seed=2))
    assert dirs.capacity == 1
    dirs.prefetch([0, 1, 2])  # a pass over three directions: built per parameter, none cached
    assert len(dirs._cache) == 0 and dirs.n_generated == 0


def test_direction_sampling_draws_bounded_chunks(monkeypatch):
    from harness.basin import directions as directions_module
    from harness.basin.directions import RNG_BLOCK, prior_terms
    from torch import nn

    sizes = []
    randn = torch.randn

    def recording_randn(*size, **kwargs):
        sizes.append(int(np.prod(size[0] if len(size) == 1 and not isinstance(size[0], int) else size)))
        return randn(*size, **kwargs)

    monkeypatch.setattr(directions_module.torch, "randn", recording_randn)
    model = nn.Linear(3 * RNG_BLOCK // 1024 + 1, 1024, bias=False)  # D a little over 3 RNG blocks
    subset, _, dirs, _, _, _ = prior_terms(model, None, 4, seed=0, cache_bytes=0)
    for i in range(4):
        with perturbed_weights(subset, dirs.params(i), 0.1):
            pass
    assert sizes and max(sizes) <= RNG_BLOCK
    assert sum(sizes) == 4 * 2 * subset.dim  # one statistics pass and one build per direction


_MEMORY_PROBE = """
import resource, sys, torch
from torch import nn
torch.set_num_threads(1)
from harness.basin.directions import prior_terms
from harness.basin.perturb import perturbed_weights
n_dirs = int(sys.argv[1])
prior_terms(nn.Linear(300, 3), None, 2, 0)  # warm-up: lazy initialisation is not the engine's memory
model = nn.Linear(2048, 2048, bias=False)
block = sum(p.numel() * p.element_size() for p in model.parameters())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
subset, _, dirs, _, _, _ = prior_terms(model, None, n_dirs, 0, cache_bytes=block)
for i in range(n_dirs):
    with perturbed_weights(subset, dirs.params(i), 0.1):
        pass
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(block, subset.dim, grown)
"""


def test_direction_memory_scales_with_the_block_not_with_the_number_of_directions():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, "8"], capture_output=True, text=True, check=True)
    block, dim, grown = map(int, out.stdout.split())
    dense = 8 * dim * 8  # the (n_dirs, D) float64 array the engine used to draw
    assert grown <= 3 * block + (64 << 20), f"peak grew by {grown / 2**20:.0f} MiB for a {block / 2**20:.0f} MiB block"
    assert 3 * block + (64 << 20) < dense / 2  # the bound would catch a dense draw


def _raise_on_call(model, module, after: int):
    calls = []

    def hook(mod, args, output):
        calls.append(1)
        if len(calls) > after:
            raise RuntimeError("boom")

    return module.register_forward_hook(hook)


@pytest.mark.parametrize("mode", ["sequential", "stacked", "per_example"])
def test_parameters_restored_bitwise_after_a_call_and_after_an_exception(mode):
    model = tiny_llama(tie=True)
    saved = state_copy(model)
    subset = select_parameters(model)
    ids, mask = left_padded_batch(6, 5, seed=3)
    dirs, _ = sample_directions(subset.dim, 2, seed=0)
    # subtracting the perturbation again would not restore these weights: the check below can fail
    s = 0.37
    p0, w0 = subset.params[0].detach(), subset.split(dirs[0])[0]
    assert not torch.equal((p0 + s * w0) - s * w0, p0)
    kl = CausalLMKL(model, ids, mask, subset, dirs, mode="stacked" if mode == "stacked" else "sequential")
    scales = torch.tensor([s, 2 * s], dtype=torch.float64)
    run = (lambda: kl.per_example(scales[:, None].expand(2, 6).clone())) if mode == "per_example" \
        else (lambda: kl.per_direction(scales))
    assert (run() > 0).all()
    assert_same_state(model, saved)
    # fails inside a perturbed pass (sequential: the second direction's, while the weights are moved)
    handle = _raise_on_call(model, model.model.layers[1].mlp, after=1 if mode == "sequential" else 0)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            run()
    finally:
        handle.remove()
    assert_same_state(model, saved)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    # and through the engine's entry points, which raise from the middle of a search
    for call in (lambda: estimate_basin(model, ids, mask, n_directions=2, mode=kl.mode),
                 lambda: per_example_basin(model, ids, mask, n_directions=2)):
        handle = _raise_on_call(model, model.model.layers[0].self_attn, after=4)
        try:
            with pytest.raises(RuntimeError, match="boom"):
                call()
        finally:
            handle.remove()
        assert_same_state(model, saved)
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_auto_mode_is_sequential_on_cpu():
    from harness.basin.kl import resolve_mode

    model = tiny_llama()
    assert resolve_mode("auto", model) == "sequential"
    with pytest.raises(ValueError, match="mode must be one of"):
        resolve_mode("parallel", model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; the CPU tests above run the same code")
def test_gpu_same_directions_stacked_rounds_and_exact_restoration():
    from harness.basin.directions import SeededDirections, SubsetDirections
    from harness.basin.kl import resolve_mode

    model = tiny_llama(hidden=16, layers=1, dtype=torch.float64)
    ids, mask = left_padded_batch(20, 6, seed=2)
    kwargs = dict(n_directions=3, eps=1e-2, seed=5, rtol=1e-6)
    cpu_model = estimate_basin(model, ids, mask, **kwargs)
    cpu_examples = per_example_basin(model, ids, mask, **kwargs)
    gpu = model.to("cuda")
    saved = state_copy(gpu)
    assert resolve_mode("auto", gpu) == "stacked"
    subset = select_parameters(gpu)
    on_gpu = SubsetDirections(subset, SeededDirections(subset.dim, 2, seed=5))
    assert on_gpu.vector(1).device.type == "cuda"
    assert torch.equal(on_gpu.vector(1).cpu(), SeededDirections(subset.dim, 2, seed=5).vector(1).double())
    stacked = estimate_basin(gpu, ids, mask, mode="auto", **kwargs)
    np.testing.assert_allclose(stacked.radii, cpu_model.radii, rtol=1e-5)
    examples = per_example_basin(gpu, ids, mask, **kwargs)
    np.testing.assert_allclose(examples.multipliers, cpu_examples.multipliers, rtol=1e-5)
    assert_same_state(gpu, saved)


# --- reusing the unperturbed blocks before the perturbed one ----------------------------------

def _per_example_both_ways(model, layer, ids, mask, n_directions=3):
    from harness.basin import prior_terms

    out = {}
    for reuse in (False, True):
        subset, _, dirs, *_ = prior_terms(model, layer, n_directions, 0, None, None)
        kl = CausalLMKL(model, ids, mask, subset, dirs, batch_size=16, reuse_prefix=reuse)
        scales = torch.linspace(0.05, 2.0, n_directions * ids.shape[0], dtype=torch.float64).view(n_directions, -1)
        out[reuse] = (kl.per_example(scales), kl)
    return out


@pytest.mark.parametrize("layer,expected_start", [(1, 1), (-1, 3), ("model.layers.2.mlp.down_proj", 2)])
def test_late_block_perturbations_reuse_the_earlier_blocks_and_give_the_same_kls(layer, expected_start):
    model = tiny_llama(hidden=32, layers=4, dtype=torch.float64)
    ids, mask = left_padded_batch(40, 10, seed=3)
    mask[0, 2:5] = 0  # a row with a hole in its mask
    out = _per_example_both_ways(model, layer, ids, mask)
    (plain, plain_kl), (reused, reused_kl) = out[False], out[True]
    assert plain_kl.prefix_block == 0 and reused_kl.prefix_block == expected_start
    assert plain.min() > 0
    torch.testing.assert_close(reused, plain, rtol=1e-9, atol=1e-15)
    assert reused_kl.n_forward == plain_kl.n_forward and reused_kl.n_rows == plain_kl.n_rows


@pytest.mark.parametrize("make,layer", [(lambda: tiny_llama(layers=2), None), (lambda: tiny_llama(layers=2), 0),
                                        (lambda: tiny_llama(layers=2, tie=True), ["model.embed_tokens.weight",
                                                                                  "model.layers.1.mlp.up_proj.weight"]),
                                        (tiny_gpt2, 1)])
def test_no_prefix_is_reused_where_it_would_not_be_the_same_model(make, layer):
    """Every weight, the first block, a parameter before the blocks, and GPT-2 (which adds
    position embeddings to inputs_embeds, so blocks 1.. run from a cached input would differ):
    full passes, the same KLs."""
    ids, mask = left_padded_batch(24, 8, seed=4)
    out = _per_example_both_ways(make(), layer, ids, mask, n_directions=2)
    assert out[True][1].prefix_block == 0
    torch.testing.assert_close(out[True][0], out[False][0], rtol=0, atol=0)


def test_per_example_basin_with_a_reused_prefix_matches_the_reference_loop():
    ref = _reference_module()
    model = tiny_llama(hidden=16, layers=2, dtype=torch.float64)
    ids, mask = left_padded_batch(6, 6, seed=5)
    # one block of a random model moves its near-uniform output little: a small cutoff
    kwargs = dict(n_directions=2, eps=1e-3, layer=1, seed=1, rtol=1e-6)
    eng = per_example_basin(model, ids, mask, **kwargs)
    plain = ref.reference_per_example(model, ids, mask, **kwargs)
    assert eng.converged.all() and eng.meta["layer"] == 1
    np.testing.assert_allclose(eng.multipliers, plain.multipliers, rtol=1e-5)


@pytest.mark.parametrize("mode", ["sequential", "stacked"])
def test_a_reused_prefix_gives_the_same_averaged_kls_in_place_and_hooked(mode):
    """per_direction perturbs the weights in place (sequential) or hooks them (stacked); with
    every evaluation position weighted, not only the last. Both ways reuse block 2's input."""
    from harness.basin import prior_terms

    model = tiny_llama(hidden=32, layers=3, dtype=torch.float64)
    ids, mask = left_padded_batch(20, 8, seed=6)
    positions = mask.bool() & (torch.arange(8) >= 4)
    out = {}
    for reuse in (False, True):
        subset, _, dirs, *_ = prior_terms(model, 2, 3, 0)
        kl = CausalLMKL(model, ids, mask, subset, dirs, position_mask=positions, mode=mode, reuse_prefix=reuse)
        out[reuse] = (kl.per_direction(torch.tensor([0.1, 0.5, 1.5], dtype=torch.float64)), kl.prefix_block)
    assert out[False][1] == 0 and out[True][1] == 2
    assert (out[False][0] > 0).all()
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-9, atol=1e-15)
