"""SAM, ASAM and m-SAM against hand-computed formulas; BatchNorm policies; schedules."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import OptimConfig, ScheduleConfig
from workbench.optim import SAM, bn_policy, build_optimizer, build_scheduler, lr_factor, sam_step


def tiny_model(bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(5, 7)]
    if bn:
        layers.append(nn.BatchNorm1d(7))
    layers += [nn.Tanh(), nn.Linear(7, 3)]
    return nn.Sequential(*layers).double()


def data(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def grads_at(model, params_values, x, y):
    """∇L(w) at the given parameter values, by torch.func (independent of the optimizer code)."""
    names = [n for n, _ in model.named_parameters()]

    def loss(*vals):
        out = torch.func.functional_call(model, dict(zip(names, vals)), (x,))
        return F.cross_entropy(out, y)

    return list(torch.func.grad(lambda vals: loss(*vals))([v.detach() for v in params_values]))


def flat_norm(ts):
    return torch.sqrt(sum((t ** 2).sum() for t in ts))


@pytest.mark.parametrize("adaptive, eta", [(False, 0.0), (True, 0.0), (True, 0.01)])
def test_sam_and_asam_update_equals_formula(adaptive, eta):
    model = tiny_model()
    x, y = data()
    lr, rho = 0.1, 0.3
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, eta=eta, lr=lr)
    sam_step(model, F.cross_entropy, x, y, opt)

    g = grads_at(model, w0, x, y)
    if adaptive:  # ε = ρ T² g / ‖T g‖, T = |w| + η
        t = [w.abs() + eta for w in w0]
        norm = flat_norm([ti * gi for ti, gi in zip(t, g)])
        eps = [rho * ti * ti * gi / norm for ti, gi in zip(t, g)]
    else:  # ε = ρ g / ‖g‖
        norm = flat_norm(g)
        eps = [rho * gi / norm for gi in g]
    g_sam = grads_at(model, [w + e for w, e in zip(w0, eps)], x, y)
    for p, w, gs in zip(model.parameters(), w0, g_sam):
        torch.testing.assert_close(p.detach(), w - lr * gs, atol=1e-6, rtol=0)
    # exposed g, g′ and their cosine
    dot = sum((a * b).sum() for a, b in zip(g, g_sam))
    cos = dot / (flat_norm(g) * flat_norm(g_sam))
    assert opt.last_cosine.item() == pytest.approx(cos.item(), abs=1e-9)
    assert opt.last_grad_norm.item() == pytest.approx(flat_norm(g).item(), abs=1e-9)
    assert opt.last_sam_grad_norm.item() == pytest.approx(flat_norm(g_sam).item(), abs=1e-9)
    assert opt.last_cosine.item() < 1 - 1e-6  # the perturbation actually moved the gradient


def test_rho_zero_is_plain_sgd():
    m1, m2 = tiny_model(), tiny_model()
    x, y = data()
    o1 = SAM(m1.parameters(), torch.optim.SGD, rho=0.0, lr=0.1, momentum=0.9)
    o2 = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        sam_step(m1, F.cross_entropy, x, y, o1)
        sam_step(m2, F.cross_entropy, x, y, o2)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_weights_restored_exactly_from_saved_copy():
    model = tiny_model()
    x, y = data()
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    F.cross_entropy(model(x), y).backward()
    opt.first_step(zero_grad=True)
    moved = max((p - w).abs().max().item() for p, w in zip(model.parameters(), w0))
    assert moved > 1e-3
    F.cross_entropy(model(x), y).backward()
    opt.restore()
    for p, w in zip(model.parameters(), w0):
        assert torch.equal(p.detach(), w)  # bitwise: copied back, not subtracted


def test_step_closure_equals_two_step_form():
    m1, m2 = tiny_model(), tiny_model()
    x, y = data()
    o1 = SAM(m1.parameters(), torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.9)
    o2 = SAM(m2.parameters(), torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.9)
    for _ in range(2):
        F.cross_entropy(m1(x), y).backward()
        o1.first_step(zero_grad=True)
        F.cross_entropy(m1(x), y).backward()
        o1.second_step(zero_grad=True)

        def closure():
            loss = F.cross_entropy(m2(x), y)
            loss.backward()
            return loss
        o2.zero_grad()
        o2.step(closure)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="closure"):
        o2.step()


def test_perturb_weight_decay_changes_direction():
    x, y = data()
    wd, rho, lr = 0.1, 0.3, 0.1
    model = tiny_model()
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr, weight_decay=wd, perturb_weight_decay=True)
    sam_step(model, F.cross_entropy, x, y, opt)
    g = [gi + wd * w for gi, w in zip(grads_at(model, w0, x, y), w0)]
    n = flat_norm(g)
    w_adv = [w + rho * gi / n for w, gi in zip(w0, g)]
    g_sam = grads_at(model, w_adv, x, y)
    for p, w, gs in zip(model.parameters(), w0, g_sam):  # SGD adds wd*w to g′ itself
        torch.testing.assert_close(p.detach(), w - lr * (gs + wd * w), atol=1e-6, rtol=0)


@pytest.mark.parametrize("m", [1, 4, 8])
def test_msam_is_average_of_per_chunk_sam_gradients(m):
    model = tiny_model()
    x, y = data(16)
    lr, rho = 0.1, 0.2
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr)
    sam_step(model, F.cross_entropy, x, y, opt, m=m)
    avg = [torch.zeros_like(w) for w in w0]
    chunks = range(0, 16, m)
    for i in chunks:
        xc, yc = x[i:i + m], y[i:i + m]
        g = grads_at(model, w0, xc, yc)
        n = flat_norm(g)
        gs = grads_at(model, [w + rho * gi / n for w, gi in zip(w0, g)], xc, yc)
        for a, gi in zip(avg, gs):
            a += gi / len(chunks)
    for p, w, a in zip(model.parameters(), w0, avg):
        torch.testing.assert_close(p.detach(), w - lr * a, atol=1e-6, rtol=0)
    if m < 16:  # differs from whole-batch SAM
        m2 = tiny_model()
        o2 = SAM(m2.parameters(), torch.optim.SGD, rho=rho, lr=lr)
        sam_step(m2, F.cross_entropy, x, y, o2)
        assert max((a - b).abs().max().item() for a, b in zip(model.parameters(), m2.parameters())) > 1e-6


def _bn_state(model):
    bn = [mod for mod in model.modules() if isinstance(mod, nn.BatchNorm1d)][0]
    return bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()


def test_second_pass_leaves_bn_running_stats_untouched_by_default():
    x, y = data(32)
    model = tiny_model(bn=True).train()
    ref = copy.deepcopy(model)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    sam_step(model, F.cross_entropy, x, y, opt)  # default bn="freeze"
    with torch.no_grad():
        ref(x)  # exactly one forward at w in train mode: the first pass
    for a, b in zip(_bn_state(model), _bn_state(ref)):
        assert torch.equal(a, b)


def test_bn_update_policy_updates_twice_and_eval_policy_uses_running_stats():
    x, y = data(32)
    model = tiny_model(bn=True).train()
    ref = copy.deepcopy(model)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    sam_step(model, F.cross_entropy, x, y, opt, bn="update")
    with torch.no_grad():
        ref(x)
    assert _bn_state(model)[2].item() == 2 and _bn_state(ref)[2].item() == 1
    assert not torch.equal(_bn_state(model)[0], _bn_state(ref)[0])

    model = tiny_model(bn=True).train()
    seen = {}
    bn = [mod for mod in model.modules() if isinstance(mod, nn.BatchNorm1d)][0]
    def record(mod, inp):
        seen[len(seen)] = mod.training

    hook = bn.register_forward_pre_hook(record)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    sam_step(model, F.cross_entropy, x, y, opt, bn="eval")
    hook.remove()
    assert seen == {0: True, 1: False} and bn.training  # second pass in eval mode, mode restored
    assert bn.num_batches_tracked.item() == 1


def test_bn_policy_rejects_unknown():
    with pytest.raises(ValueError, match="bn_policy"):
        with bn_policy(tiny_model(bn=True), "sometimes"):
            pass


def test_sam_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rho"):
        SAM(tiny_model().parameters(), torch.optim.SGD, rho=-1, lr=0.1)
    with pytest.raises(ValueError, match="base_optimizer"):
        SAM(tiny_model().parameters(), "sgd", rho=0.1, lr=0.1)


def test_build_optimizer_and_state_dict_round_trip():
    model = tiny_model()
    x, y = data()
    opt = build_optimizer(OptimConfig(name="asam", rho=1.0, lr=0.1), model.parameters())
    assert isinstance(opt, SAM) and opt.param_groups[0]["adaptive"]
    sam_step(model, F.cross_entropy, x, y, opt)
    sd = opt.state_dict()
    opt2 = build_optimizer(OptimConfig(name="asam", rho=1.0, lr=0.1), model.parameters())
    opt2.load_state_dict(sd)
    assert opt2.state_dict()["state"].keys() == sd["state"].keys()
    assert isinstance(build_optimizer(OptimConfig(name="adam", lr=1e-3), model.parameters()), torch.optim.Adam)


def test_schedules():
    ms = ScheduleConfig(name="multistep", milestones=[60, 120, 160], gamma=0.2)
    assert lr_factor(ms, 0, 200) == 1.0 and lr_factor(ms, 59.9, 200) == 1.0
    assert lr_factor(ms, 60, 200) == pytest.approx(0.2) and lr_factor(ms, 170, 200) == pytest.approx(0.008)
    fr = ScheduleConfig(name="multistep", milestone_fractions=[0.5, 0.75], gamma=0.1)
    assert lr_factor(fr, 49, 100) == 1.0 and lr_factor(fr, 50, 100) == pytest.approx(0.1)
    assert lr_factor(fr, 80, 100) == pytest.approx(0.01)
    cos = ScheduleConfig(name="cosine", min_lr_factor=0.1)
    assert lr_factor(cos, 0, 10) == pytest.approx(1.0) and lr_factor(cos, 10, 10) == pytest.approx(0.1)
    assert lr_factor(cos, 5, 10) == pytest.approx(0.55)
    wu = ScheduleConfig(name="constant", warmup_epochs=2)
    assert lr_factor(wu, 0, 10) == 0.0 and lr_factor(wu, 1, 10) == pytest.approx(0.5)
    assert lr_factor(wu, 3, 10) == 1.0
    # per-step scheduler on a SAM optimizer reaches the base optimizer's groups
    model = tiny_model()
    opt = build_optimizer(OptimConfig(name="sam", lr=0.1), model.parameters())
    sched = build_scheduler(opt, ScheduleConfig(name="multistep", milestones=[1]), total_epochs=2, steps_per_epoch=2)
    x, y = data()
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        sam_step(model, F.cross_entropy, x, y, opt)
        sched.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
