"""Neural Hamiltonian Flows: exactness of the flow, priors, bounds, targets, training."""

from __future__ import annotations

import importlib
import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import zuko
from torch.distributions import constraints

from hgn.flows import (
    FLOWS,
    NHF,
    NSF,
    EnergyMLP,
    FlowDistribution,
    FlowTrainConfig,
    NHFConfig,
    NSFConfig,
    RealNVP,
    RealNVPConfig,
    SoftUniform,
    build,
    load,
    n_parameters,
    save,
)
from hgn.flows.compare import matched, time_to_level
from hgn.flows.targets import (
    _GMM10_CENTRES,
    _GMM10_STD,
    FFJORD_TARGETS,
    TARGETS,
    data_source,
    load_array,
)
from hgn.flows.train import evaluate, train
from hgn.utils import UserError, derive_seed, load_checkpoint


def small_nhf(dim: int = 2, **kw) -> NHF:
    torch.manual_seed(0)
    config = {"flow_steps": 3, "leapfrog_steps": 2, "hidden": 16, "posterior_hidden": 16, **kw}
    return NHF(NHFConfig(dim, **config)).double()


def perturb(model: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    """Push the freshly initialised (nearly identity) flow into a strongly nonlinear one."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


@pytest.mark.parametrize("dim", [1, 2, 5])
@pytest.mark.parametrize("prior", ["normal", "soft-uniform"])
def test_inverse_undoes_transform(dim: int, prior: str) -> None:
    model = perturb(small_nhf(dim, prior=prior))
    q, p = torch.randn(64, dim, dtype=torch.float64), torch.randn(64, dim, dtype=torch.float64)
    q_t, p_t = model.transform(q, p)
    assert (q_t - q).abs().max() > 0.1  # the flow does move points
    q0, p0 = model.inverse(q_t, p_t)
    assert torch.allclose(q0, q, atol=1e-5) and torch.allclose(p0, p, atol=1e-5)
    q_back, p_back = model.transform(*model.inverse(q, p))
    assert torch.allclose(q_back, q, atol=1e-5) and torch.allclose(p_back, p, atol=1e-5)


def test_inverse_exact_in_float32_with_learned_step() -> None:
    model = perturb(small_nhf(2)).float()
    q, p = torch.randn(256, 2), torch.randn(256, 2)
    q0, p0 = model.inverse(*model.transform(q, p))
    assert (q0 - q).abs().max() < 1e-5 and (p0 - p).abs().max() < 1e-5


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_flow_jacobian_has_unit_determinant(dim: int) -> None:
    model = perturb(small_nhf(dim))

    def flow(s: torch.Tensor) -> torch.Tensor:
        return torch.cat(model.transform(s[:dim], s[dim:]))

    for _ in range(3):
        jac = torch.autograd.functional.jacobian(flow, torch.randn(2 * dim, dtype=torch.float64))
        assert not torch.allclose(jac, torch.eye(2 * dim).double(), atol=1e-2)  # a non-trivial map
        sign, logdet = torch.linalg.slogdet(jac)
        assert sign == 1 and abs(logdet.item()) < 1e-5


def test_energy_gradient_matches_autograd() -> None:
    net = EnergyMLP(3, 8, 3).double()
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(net(x).sum(), x)
    assert torch.allclose(net.grad(x), auto, atol=1e-12)
    assert net.grad(x[0]).shape == (3,)  # unbatched input keeps its shape


def test_fixed_step_size_is_not_a_parameter() -> None:
    learned, fixed = small_nhf(learn_dt=True), small_nhf(learn_dt=False)
    assert n_parameters(learned) == n_parameters(fixed) + 3
    assert torch.allclose(fixed.steps[0].dt, torch.tensor(0.5, dtype=torch.float64))


@pytest.mark.parametrize(("sigma", "beta"), [(2.0, 3.0), (4.0, 0.5), (0.1, 50.0)])
def test_soft_uniform_normalised_and_sampler_matches(sigma: float, beta: float) -> None:
    d = SoftUniform(
        torch.tensor(sigma, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64)
    )
    width = sigma / 2 + 40 / beta
    s = torch.linspace(-width, width, 400_001, dtype=torch.float64)
    density = d.log_prob(s).exp()
    assert torch.trapezoid(density, s).item() == pytest.approx(1.0, abs=1e-6)
    torch.manual_seed(0)
    x = d.sample((200_000,))
    assert x.var().item() == pytest.approx(d.variance.item(), rel=0.02)
    # Kolmogorov-Smirnov distance between the sampler and the density's CDF
    cdf = torch.cumulative_trapezoid(density, s)
    grid = np.interp(np.sort(x.numpy()), s[1:].numpy(), cdf.numpy())
    ks = np.abs(grid - np.arange(1, len(x) + 1) / len(x)).max()
    assert ks < 0.005


def test_soft_uniform_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        SoftUniform(-1.0, 2.0, validate_args=True)
    for bad in ({"sigma": 0.0}, {"beta": -1.0}, {"sigma": math.nan}):
        with pytest.raises(UserError, match="must be a finite number > 0"):
            NHFConfig(2, prior="soft-uniform", **bad)
    with pytest.raises(UserError, match="unknown prior"):
        NHFConfig(2, prior="cauchy")


def test_elbo_below_iwae_bound_which_rises_with_k() -> None:
    model = perturb(small_nhf(2), 0.3)
    x = TARGETS["8gaussians"].sample(16, torch.Generator().manual_seed(0)).double()
    torch.manual_seed(1)
    with torch.no_grad():
        w = model.log_weights(x, 2048)  # (2048, 16) importance log-weights
        elbo = w.mean(0)

        def bound(k: int) -> torch.Tensor:  # E[IWAE_k], averaged over 2048 / k repeats
            return (torch.logsumexp(w.reshape(-1, k, 16), 1) - math.log(k)).mean(0)

        bounds = [bound(k) for k in (1, 8, 64, 256)]
        api = model.log_prob(x, n_importance=256)
    assert torch.allclose(bounds[0], elbo)  # K = 1 is the ELBO itself
    for lower, higher in itertools.pairwise(bounds):
        assert (higher >= lower - 1e-9).all() and (higher - lower).mean() > 0.01
    assert (api > elbo).float().mean() > 0.9


def test_distribution_api_shapes_and_gradients() -> None:
    model = small_nhf(2)
    assert model.sample((3, 4)).shape == (3, 4, 2) and model.sample(5).shape == (5, 2)
    x = model.rsample(6)
    assert x.requires_grad
    lp = model.log_prob(torch.randn(2, 3, 2, dtype=torch.float64), n_importance=8)
    assert lp.shape == (2, 3)
    model.loss(torch.randn(8, 2, dtype=torch.float64)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_standardisation_shifts_log_prob_by_constant() -> None:
    model = small_nhf(2)
    x = torch.randn(16, 2, dtype=torch.float64)
    torch.manual_seed(3)
    base = model.log_prob(x, 8)
    model.set_standardisation(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5]))
    torch.manual_seed(3)
    shifted = model.log_prob(torch.tensor([1.0, -2.0]) + x * torch.tensor([2.0, 0.5]), 8)
    assert torch.allclose(shifted, base - math.log(2.0 * 0.5), atol=1e-6)


def test_logit_map_is_a_change_of_variables_with_its_jacobian() -> None:
    """With ``set_logit`` the density is still one on x in (0, 1)^d: log p(x) is the
    flow's density of z plus log |det ∂z/∂x| (here against autograd's Jacobian); samples
    come back in (0, 1); the map travels with the model's config."""
    torch.manual_seed(0)
    model = RealNVP(RealNVPConfig(3, transforms=2, hidden=16)).double()
    model.set_logit(0.05)
    model.set_standardisation(torch.tensor([0.1, -0.2, 0.3]), torch.tensor([1.5, 0.7, 2.0]))
    x = torch.rand(4, 3, dtype=torch.float64)

    def to_z(point: torch.Tensor) -> torch.Tensor:
        return model._to_model(point)[0]

    for row in x:
        jac = torch.autograd.functional.jacobian(to_z, row)
        z = to_z(row)
        expect = model.flow().log_prob(z) + torch.linalg.slogdet(jac)[1]
        torch.testing.assert_close(model.log_prob(row[None])[0], expect)
    torch.manual_seed(1)
    samples = model.sample(2000)
    assert samples.min() > -0.06 and samples.max() < 1.06  # (σ(u) - α)/(1 - 2α)
    torch.testing.assert_close(model.to_unbounded(torch.full((1,), 0.5)), torch.zeros(1))
    again = build(model.config())
    assert again.logit == 0.05 and "logit" not in RealNVP(RealNVPConfig(3)).config()
    with pytest.raises(UserError, match="--logit"):
        model.set_logit(0.5)


@pytest.mark.slow
def test_realnvp_wrapper_and_parameter_matching() -> None:
    model = RealNVP(RealNVPConfig(2, transforms=2, hidden=32))
    x = torch.randn(10, 2)
    assert model.log_prob(x).shape == (10,) and model.sample(7).shape == (7, 2)
    nhf = small_nhf(2)
    for kind in ("realnvp", "nsf"):
        twin = build(matched(kind, 3, n_parameters(nhf), 2))
        assert abs(n_parameters(twin) - n_parameters(nhf)) / n_parameters(nhf) < 0.1
    with pytest.raises(UserError, match="dimension 2 or more"):
        RealNVPConfig(1)


def test_save_and_load_roundtrip(tmp_path) -> None:
    model = perturb(small_nhf(2)).float()
    save(model, tmp_path / "m.pt")
    again = load(tmp_path / "m.pt")
    q, p = torch.randn(5, 2), torch.randn(5, 2)
    assert torch.equal(torch.cat(model.transform(q, p)), torch.cat(again.transform(q, p)))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        load(tmp_path / "junk.pt")


# --- targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TARGETS))
def test_targets_sample_finite_2d_and_reproducibly(name: str) -> None:
    target = TARGETS[name]
    a = target.sample(1000, torch.Generator().manual_seed(5))
    b = target.sample(1000, torch.Generator().manual_seed(5))
    assert a.shape == (1000, target.dim) and torch.isfinite(a).all() and torch.equal(a, b)
    assert 0.5 < a.std(0).min() < 5  # FFJORD's scale: a few units across


@pytest.mark.parametrize("name", [n for n, t in TARGETS.items() if t.log_density is not None])
def test_target_density_matches_its_sampler(name: str) -> None:
    """-E[log p(x)] over samples estimates the entropy: both must agree with the grid."""
    target = TARGETS[name]
    x = target.sample(20_000, torch.Generator().manual_seed(0)).double()
    lp = target.log_density(x)
    assert torch.isfinite(lp).all()  # every sample lies where the density is positive
    mc, se = -lp.mean().item(), lp.std().item() / math.sqrt(len(lp))
    assert abs(mc - target.entropy) < 4 * se + 1e-3


def test_known_entropies() -> None:
    assert TARGETS["checkerboard"].entropy == pytest.approx(math.log(32))
    # nearly separated modes: a little under log 8 + the entropy of one N(0, (0.5/1.414)² I)
    separated = math.log(8) + 1 + math.log(2 * math.pi) + 2 * math.log(0.5 / 1.414)
    assert 0 < separated - TARGETS["8gaussians"].entropy < 0.01
    assert set(FFJORD_TARGETS) <= set(TARGETS)


def test_test_set_fixed_and_distinct_from_training() -> None:
    src = data_source("moons")
    torch.manual_seed(0)
    train_x = src.sample_train(5000)
    assert torch.equal(src.test_set(), data_source("moons").test_set())
    assert torch.cdist(src.test_set()[:500], train_x).min() > 0


def test_npy_loading_and_split(tmp_path) -> None:
    data = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "d.npy", data)
    src = data_source(str(tmp_path / "d.npy"), seed=1)
    assert src.dim == 3 and len(src.test_set()) == 5
    rows = {tuple(r) for r in src.train.tolist()} | {tuple(r) for r in src.test_set().tolist()}
    assert len(rows) == 50  # a partition: nothing lost, nothing shared
    assert not torch.equal(src.test_set(), data_source(str(tmp_path / "d.npy"), seed=2).test_set())


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((0, 2)), "0 rows"),
        (np.zeros((1, 2)), "1 rows"),
        (np.zeros(5), r"points \(N, d\) or of images"),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, np.inf]]), "2 rows with NaN or Inf"),
        (np.array([["a", "b"], ["c", "d"]]), "real numbers"),
    ],
)
def test_bad_arrays_rejected(tmp_path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(UserError, match=message):
        load_array(tmp_path / "bad.npy")


def test_unknown_target_rejected() -> None:
    with pytest.raises(UserError, match=r"unknown target 'nope'.*8gaussians"):
        data_source("nope")


# --- training ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_maximises_elbo_and_resumes(tmp_path) -> None:
    config = {"kind": "nhf", "flow_steps": 2, "hidden": 16, "posterior_hidden": 16}
    cfg = FlowTrainConfig(steps=200, batch_size=128, lr=1e-2, seed=3, compile=False)
    x = data_source("gmm").test_set()[:500]

    def test_elbo(model: torch.nn.Module) -> float:
        torch.manual_seed(0)
        with torch.no_grad():
            return model.elbo(x, 8).mean().item()

    torch.manual_seed(derive_seed(3, "init"))  # the weights train() starts from
    before = test_elbo(build({**config, "dim": 2}))
    result = train("gmm", tmp_path / "run", config, cfg, tensorboard=False)
    model = load(tmp_path / "run")
    assert isinstance(model, NHF) and model.cfg.flow_steps == 2
    assert test_elbo(model) > before + 0.5  # the ELBO went up, on held-out points
    losses = [h["loss"] for h in result.history]
    assert np.mean(losses[-2:]) < losses[0]  # the training objective (-ELBO) went down

    # a run stopped by its time budget and resumed lands on exactly the same weights
    short = FlowTrainConfig(steps=20, batch_size=32, seed=3, compile=False)
    train("gmm", tmp_path / "a", config, short, tensorboard=False)
    stopped = FlowTrainConfig(steps=20, batch_size=32, seed=3, max_minutes=1e-6, compile=False)
    assert train("gmm", tmp_path / "b", config, stopped, tensorboard=False).step < 20
    # no budget given: what is left of the saved one (nothing) applies; one given on
    # resume counts from the resume (issue 9, defect 4)
    again = train("gmm", tmp_path / "b", config, short, resume=True, tensorboard=False)
    assert again.stopped_by == "time" and again.step == again.start
    longer = FlowTrainConfig(steps=20, batch_size=32, seed=3, max_minutes=10.0, compile=False)
    train("gmm", tmp_path / "b", config, longer, resume=True, tensorboard=False)
    a, b = load(tmp_path / "a").state_dict(), load(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="already holds a run"):
        train("gmm", tmp_path / "a", config, short, tensorboard=False)


@pytest.mark.slow
def test_time_budget_schedule_warms_up_and_ends_decayed(tmp_path, monkeypatch) -> None:
    """Without --steps the run is its time budget and the cosine follows the clock: the
    first step is the smallest rate, the warm-up counts from the end of the first
    (compiling) step, the rate ends near zero when the budget does, and a resumed run
    does not warm up again (its Adam moments are restored)."""
    cfg = FlowTrainConfig(lr=1e-2, warmup=0.1, compile=False)
    assert cfg.steps is None and cfg.max_minutes is None  # train() gives DEFAULT_MINUTES
    assert cfg.lr_at(0, 0.0, math.inf) == pytest.approx(1e-5)
    assert cfg.lr_at(1, 0.3, 0.3) == pytest.approx(1e-5 * 0.5 * (1 + math.cos(0.3 * math.pi)))
    assert cfg.lr_at(9, 0.35, 0.3) == pytest.approx(0.5e-2 * (1 + math.cos(0.35 * math.pi)) / 2)
    assert cfg.lr_at(99, 0.5, 0.3) == pytest.approx(0.5e-2)
    assert cfg.lr_at(99, 0.05, None) == pytest.approx(0.5e-2 * (1 + math.cos(0.05 * math.pi)))
    assert cfg.lr_at(99, 1.0, 0.3) == pytest.approx(0.0, abs=1e-12)

    config = {"kind": "nhf", "flow_steps": 1, "hidden": 8, "posterior_hidden": 8}
    timed = FlowTrainConfig(batch_size=16, max_minutes=0.05, warmup=0.5, compile=False)
    flow_train = importlib.import_module("hgn.flows.train")  # the package's `train` is the function

    every_step = flow_train._loop_config  # every step logged: a busy machine's few steps
    monkeypatch.setattr(  # still show the warm-up
        flow_train, "_loop_config", lambda *a: replace(every_step(*a), log_every=1)
    )
    result = train("gmm", tmp_path / "t", config, timed, tensorboard=False)
    lrs = [h["lr"] for h in result.history]
    assert result.stopped_by == "time" and result.step > 10
    assert lrs[0] < 0.5 * max(lrs) and lrs[-1] < 0.1 * max(lrs)  # warmed up, decayed
    saved = load_checkpoint(tmp_path / "t" / "checkpoint.pt")["config"]["train"]
    assert saved["steps"] is None and saved["max_minutes"] == 0.05


def test_evaluate_reports_nll_and_checks_dimensions(tmp_path) -> None:
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(40, 3)) * 10 + 5)
    config = {
        "kind": "nhf",
        "flow_steps": 1,
        "leapfrog_steps": 1,
        "hidden": 8,
        "posterior_hidden": 8,
    }
    train(
        str(tmp_path / "d.npy"),
        tmp_path / "run",
        config,
        FlowTrainConfig(steps=5, batch_size=16, compile=False),
        tensorboard=False,
    )
    model = load(tmp_path / "run")
    assert torch.allclose(model.loc, torch.full((3,), 5.0), atol=5)  # standardised user data
    result = evaluate(tmp_path / "run", n_importance=8)
    assert result["n_test"] == 4 and math.isfinite(result["nll"]) and result["entropy"] is None
    assert (tmp_path / "run" / "eval.json").exists()
    with pytest.raises(UserError, match=r"expects \(N, 3\)"):
        evaluate(tmp_path / "run", target="8gaussians")


# --- speed paths: closed-form backward, first-same-as-last ------------------------------------


@pytest.mark.parametrize("quadratic", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize(("dim", "hidden"), [(3, 7), (2, 20), (17, 18)])
def test_energy_gradient_backward_in_closed_form_is_exact(
    quadratic: bool, layers: int, dim: int, hidden: int
) -> None:
    """EnergyMLP.grad's hand-written backward against autograd's second derivatives, with
    every product narrow (transposed layout), the NHF mix (narrow input, wide hidden
    layers) and every product wide (plain layout): see hgn.nn._mm."""
    torch.manual_seed(layers)
    net = perturb(EnergyMLP(dim, hidden, layers, quadratic=quadratic).double())
    x = torch.randn(4, 5, dim, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(net.grad(x), net.grad_autograd(x), atol=1e-12)
    weights = torch.randn(4, 5, dim, dtype=torch.float64)
    inputs = [x, *net.parameters()]
    fast = torch.autograd.grad((net.grad(x) * weights).sum(), inputs)
    reference = torch.autograd.grad((net.grad_autograd(x) * weights).sum(), inputs)
    for a, b in zip(fast, reference, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    assert torch.autograd.gradcheck(lambda x_: net.grad(x_), (x[0],))


@pytest.mark.slow
def test_compiled_closed_form_backward_matches_eager() -> None:
    """``--compile`` traces _EnergyGrad's hand-written backward (in-place steps included):
    its gradients must be the eager ones."""
    torch.manual_seed(0)
    net = perturb(EnergyMLP(2, 20, 2, quadratic=True).double())
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(6, 2, dtype=torch.float64)
    inputs = [x, *net.parameters()]

    def loss(x_: torch.Tensor) -> torch.Tensor:
        return (net.grad(x_) * weights).sum()

    torch._dynamo.reset()
    compiled = torch.autograd.grad(torch.compile(loss, dynamic=False)(x), inputs)
    eager = torch.autograd.grad(loss(x), inputs)
    for a, b in zip(compiled, eager, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_failed_compilation_falls_back_to_eager(tmp_path, monkeypatch, capsys) -> None:
    """Compiling is the default, so a machine without a C++ compiler must still train: a
    compiler failure (raised lazily, at the first compiled call) costs one warning line
    and the run goes on eager, to the same weights as a --no-compile run."""

    def broken(fn, **kwargs):  # what inductor raises without a C++ compiler, in spirit
        def fail(*args, **kw):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    config = {"kind": "nhf", "flow_steps": 1, "hidden": 8, "posterior_hidden": 8}
    cfg = FlowTrainConfig(steps=3, batch_size=16, seed=1, compile=True)
    assert cfg.compiles
    # by default only runs long enough to repay a compilation compile (issue 24)
    assert not FlowTrainConfig(steps=3).compiles and FlowTrainConfig(steps=5000).compiles
    assert FlowTrainConfig().compiles and FlowTrainConfig(max_minutes=1.0).compiles
    assert train("gmm", tmp_path / "a", config, cfg, tensorboard=False).step == 3
    err = capsys.readouterr().err.strip().splitlines()
    warnings = [line for line in err if "torch.compile failed" in line]
    assert len(warnings) == 1 and "training eager" in warnings[0] and "more" not in warnings[0]
    train("gmm", tmp_path / "b", config, replace(cfg, compile=False), tensorboard=False)
    a, b = load(tmp_path / "a").state_dict(), load(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_gradient_computed_twice(monkeypatch) -> None:
    """A flow step of n leapfrog sub-steps evaluates ∇K n times and ∇V n + 1 times
    (first same as last), forward and backward alike."""
    model = small_nhf(2, flow_steps=3, leapfrog_steps=4)
    calls = {"kinetic": 0, "potential": 0}
    grad = EnergyMLP.grad

    def counted(self: EnergyMLP, x: torch.Tensor) -> torch.Tensor:
        calls["kinetic" if self.quadratic else "potential"] += 1
        return grad(self, x)

    monkeypatch.setattr(EnergyMLP, "grad", counted)
    q, p = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    model.inverse(*model.transform(q, p))
    assert calls == {"kinetic": 2 * 3 * 4, "potential": 2 * 3 * 5}


# --- configuration checks (issue 9, defect 3) ------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "nhf", "dim": 2, "hiden": 8}, "unknown config key nhf.hiden"),
        ({"kind": "nhf", "dim": 2, "hidden": 8.5}, "nhf.hidden must be int"),
        ({"kind": "nhf", "dim": 2, "dt": math.nan}, "--dt must be a finite number > 0"),
        ({"kind": "nhf", "dim": 2, "dt": -0.5}, "--dt must be"),
        ({"kind": "nhf", "dim": 2, "flow_steps": 0}, "--flow-steps must be an integer ≥ 1"),
        ({"kind": "nhf", "dim": 2, "leapfrog_steps": 1000}, "--leapfrog-steps"),
        ({"kind": "nhf", "dim": 2, "sigma": math.inf}, "--sigma must be a finite"),
        ({"kind": "nhf", "dim": 2, "learn_dt": "yes"}, "nhf.learn_dt must be bool"),
        ({"kind": "realnvp", "dim": 2, "bins": 8}, "unknown config key realnvp.bins"),
        ({"kind": "nsf", "dim": 2, "bins": 1}, "--bins must be an integer ≥ 2"),
        ({"kind": "glow", "dim": 2}, "unknown model kind 'glow'"),
    ],
)
def test_model_config_strict(config: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build(config)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": math.nan}, "--lr must be a finite number > 0"),
        ({"lr": 2.0}, "--lr must be"),
        ({"warmup": 1.0}, "--warmup must be"),
        ({"warmup": -0.1}, "--warmup must be"),
        ({"clip": 0.0}, "--clip must be"),
        ({"clip": math.inf}, "--clip must be a finite"),
        ({"steps": 0}, "--steps must be an integer ≥ 1"),
        ({"batch_size": 2.5}, "--batch-size must be an integer"),
        ({"n_samples": 0}, "--momentum-samples"),
        ({"seed": -1}, "--seed"),
        ({"max_minutes": math.nan}, "--minutes must be"),
        ({"max_minutes": -1.0}, "--minutes must be"),
    ],
)
def test_train_config_range_checked(values: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        FlowTrainConfig(**values)


def test_resumed_run_refuses_unknown_saved_keys(tmp_path) -> None:
    config = {"kind": "nhf", "flow_steps": 1, "hidden": 8, "posterior_hidden": 8}
    train(
        "gmm",
        tmp_path / "r",
        config,
        FlowTrainConfig(steps=2, batch_size=8, compile=False),
        tensorboard=False,
    )
    saved = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    saved["config"]["train"]["momentum"] = 0.9
    torch.save(saved, tmp_path / "r" / "checkpoint.pt")
    with pytest.raises(UserError, match=r"unknown config key train\.momentum"):
        train("gmm", tmp_path / "r", config, FlowTrainConfig(steps=4, compile=False), resume=True)


# --- models as distributions, NSF -------------------------------------------------------------


def test_models_are_torch_distributions_like_zuko() -> None:
    for model in (small_nhf(2).float(), RealNVP(RealNVPConfig(2)), NSF(NSFConfig(3))):
        dist = model(n_importance=4)
        assert isinstance(dist, torch.distributions.Distribution | FlowDistribution)
        assert dist.event_shape == (model.dim,) and dist.batch_shape == ()
        x = dist.sample((5,))
        assert x.shape == (5, model.dim) and not x.requires_grad
        assert dist.rsample((2, 3)).shape == (2, 3, model.dim)
        assert dist.log_prob(x).shape == (5,)


_SMALL = {
    "nhf": {"flow_steps": 2, "hidden": 8, "posterior_hidden": 8},
    "realnvp": {"transforms": 2, "hidden": 8},
    "nsf": {"transforms": 2, "hidden": 8, "bins": 4},
}


@pytest.mark.parametrize("kind", list(FLOWS))
def test_every_flow_is_a_zuko_lazy_distribution(kind: str) -> None:
    """As zuko's flows: an ``nn.Module`` that is a ``zuko.lazy.LazyDistribution`` and,
    called with no context, returns a ``torch.distributions.Distribution`` whose
    ``log_prob`` is the model's own (the same bound, same K, for NHF)."""
    torch.manual_seed(0)
    model = build({"kind": kind, "dim": 3, **_SMALL[kind]})
    assert isinstance(model, zuko.lazy.LazyDistribution) and isinstance(model, FLOWS[kind].model)
    dist = model()
    assert isinstance(dist, torch.distributions.Distribution)
    assert dist.arg_constraints == {} and dist.has_rsample
    x = torch.randn(7, 3)
    with torch.no_grad():
        torch.manual_seed(1)
        own = model.log_prob(x, n_importance=8)
        torch.manual_seed(1)
        through = model(n_importance=8).log_prob(x)
    torch.testing.assert_close(through, own, rtol=0, atol=0)
    with pytest.raises(TypeError, match="unconditional"):
        model(torch.zeros(3))


@pytest.mark.parametrize("kind", list(FLOWS))
def test_support_is_the_real_line_or_the_box_the_logit_map_opens(kind: str) -> None:
    """R^d without the logit map; with it, the box logit(α + (1 - 2α) x) takes onto R^d:
    it holds every point of [0, 1]^d and every sample, and nothing far outside."""
    torch.manual_seed(0)
    model = build({"kind": kind, "dim": 3, **_SMALL[kind]})
    assert model().support is constraints.real_vector
    assert bool(model().support.check(torch.full((2, 3), 50.0)).all())
    model.set_logit(0.05)
    support = model().support
    assert isinstance(support, constraints.independent) and support.event_dim == 1
    assert isinstance(support.base_constraint, constraints.interval)
    margin = 0.05 / 0.9  # α / (1 - 2α): the sigmoid's (0, 1) mapped back to x
    assert support.base_constraint.lower_bound == pytest.approx(-margin)
    assert support.base_constraint.upper_bound == pytest.approx(1 + margin)
    unit = torch.cat([torch.rand(20, 3), torch.zeros(1, 3), torch.ones(1, 3)])
    assert support.check(unit).shape == (22,) and bool(support.check(unit).all())
    outside = torch.tensor([[0.5, 1.2, 0.5], [-0.1, 0.5, 0.5]])
    assert not bool(support.check(outside).any())
    with torch.no_grad():
        assert bool(support.check(model().sample((64,))).all())
    assert torch.isfinite(model.log_prob(unit[:4], n_importance=2)).all()


def test_flows_are_one_registry_with_one_line_errors() -> None:
    assert list(FLOWS) == ["nhf", "realnvp", "nsf"]
    for kind, entry in FLOWS.items():
        assert entry.model.kind == kind and "\n" not in entry.help and entry.help
        assert isinstance(entry.config(dim=2), entry.config)
    with pytest.raises(UserError, match=r"^unknown model kind 'nfs' \(did you mean 'nsf'\?\)"):
        FLOWS.lookup("nfs")
    with pytest.raises(TypeError):
        FLOWS["glow"] = FLOWS["nhf"]  # type: ignore[index]


def test_saved_model_is_a_run_checkpoint(tmp_path) -> None:
    """hgn.flows.save writes the run checkpoint's keys (defect 5): evaluate reads it."""
    model = small_nhf(2).float()
    save(model, tmp_path / "m.pt", target="gmm")
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert {"step", "seconds", "config", "state"} <= set(saved)
    assert saved["config"]["target"] == "gmm" and saved["config"]["train"]["seed"] == 0
    result = evaluate(tmp_path / "m.pt", n_importance=2, n_test=20, progress=False)
    assert result["target"] == "gmm" and result["written"] is None
    save(model, tmp_path / "bare.pt")
    with pytest.raises(UserError, match="records no target; pass --target"):
        evaluate(tmp_path / "bare.pt", n_importance=2)
    assert evaluate(tmp_path / "bare.pt", "moons", 2, 20, progress=False)["n_test"] == 20


# --- targets beyond two dimensions --------------------------------------------------------


def test_gmm10_entropy_known() -> None:
    """Separated components: log 8 + mean_k (d/2) log(2πe σ_k²), less a tiny H(J | X)."""
    separated = math.log(8) + float(
        (5 * torch.log(2 * math.pi * math.e * _GMM10_STD.double() ** 2)).mean()
    )
    entropy = TARGETS["gmm10"].entropy
    assert 0 <= separated - entropy < 1e-4
    assert torch.cdist(_GMM10_CENTRES, _GMM10_CENTRES + 100 * torch.eye(8, 10)).min() > 6


def test_digits_dequantised_and_split() -> None:
    pytest.importorskip("sklearn")
    src = data_source("digits")
    test = src.test_set()
    assert src.dim == 64 and src.image_shape == (8, 8) and test.shape == (360, 64)
    assert torch.equal(test, data_source("digits", seed=5).test_set())  # one fixed split
    assert test.min() >= 0 and test.max() < 1
    levels = torch.floor(test * 17)  # the integer grey levels come back exactly
    assert torch.equal(levels, src.test_images) and levels.max() == 16
    torch.manual_seed(0)
    batch = src.sample_train(2000)
    assert batch.shape == (2000, 64) and not torch.equal(batch, src.sample_train(2000))
    train_rows = {tuple(r) for r in src.train_images.tolist()}
    assert len(src.train_images) == 1437 and len(train_rows) > 1400


def test_image_arrays_are_flattened_with_their_shape(tmp_path) -> None:
    np.save(tmp_path / "img.npy", np.random.default_rng(0).random((30, 4, 5)))
    src = data_source(str(tmp_path / "img.npy"))
    assert src.dim == 20 and src.image_shape == (4, 5) and src.test_set().shape == (3, 20)
    data, shape = load_array(tmp_path / "img.npy")
    assert data.shape == (30, 20) and shape == (4, 5)


def test_time_to_level() -> None:
    rows = [
        {"model": "A", "nll": 3.0, "curve": [[10, 5, 3.5], [20, 10, 3.0]]},
        {"model": "B", "nll": 2.9, "curve": [[5, 50, 3.4], [8, 80, 2.95], [12, 120, 2.9]]},
        {"model": "C", "nll": 3.2, "curve": [[9, 1, 3.2]]},
    ]
    summary = time_to_level(rows, "A")
    assert summary == {"level": 3.0, "level_of": "A", "first": "B"}
    assert [r["time_to_level"] for r in rows] == [20, 8, None]
    assert time_to_level(rows, "missing")["level_of"] == "C"  # the worst final NLL
