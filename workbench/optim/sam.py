"""Sharpness-Aware Minimization (SAM), adaptive SAM (ASAM) and m-SAM.

SAM [Foret 2021] replaces the gradient g = ∇L(w) by the gradient at an
ascent point,

    ε̂(w) = ρ · g / ‖g‖₂                     ([Murphy 2025, Eq. 2.7] with p = q = 2;
                                              Eq. 2.8 prints ρ|g|/‖g‖²₂, a typo for ρ g/‖g‖₂)
    g′   = ∇L(w + ε̂(w))                     ([Murphy 2025, §2.4], "SAM gradient")

and lets the base optimizer step from w with g′. ASAM [Kwon 2021] makes
the neighbourhood adaptive with the elementwise scale T_w = |w| + η:

    ε̂(w) = ρ · T_w² g / ‖T_w g‖₂

m-SAM ([Andriushchenko 2024, Eq. 5.4] and the m < batch-size protocol of
its Figs. 5.4/5.16) splits a batch of B examples into B/m chunks, gives each chunk
its own ascent point from its own gradient, and averages the B/m SAM gradients
for the single descent step.

Design (pitfalls of the public implementations google-research/sam and davda54/sam):

* weights are restored from a saved copy (``torch._foreach_copy_``), never by
  subtracting ε, so no floating-point drift accumulates;
* BatchNorm during the second pass follows an explicit policy (:func:`bn_policy`):
  ``freeze`` (default) normalises with batch statistics but leaves the running
  statistics exactly as the first pass left them (google-research/sam keeps only
  the first pass' state); ``update`` lets both passes update them (naive
  davda54/sam usage); ``eval`` runs the second pass with BatchNorm in eval mode;
* ``perturb_weight_decay`` chooses whether the L2 term enters the ascent
  direction (google-research/sam: yes, L2 is in the loss; davda54/sam: no);
* after each step the optimizer exposes the plain gradient g, the SAM gradient
  g′, their norms and their cosine ([Murphy 2025, Fig. 5.8]) as tensors
  (no device synchronisation until read).

This module is part of the core: no UI imports.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["SAM", "SAMStepResult", "sam_step", "optimizer_update", "bn_policy", "BN_POLICIES"]

BN_POLICIES = ("freeze", "update", "eval")
_EPS = 1e-12


class SAM(torch.optim.Optimizer):
    """SAM / ASAM wrapper around any base optimizer.

    Args:
        params: parameters or parameter groups (as for any torch optimizer).
        base_optimizer: a ``torch.optim.Optimizer`` subclass (e.g.
            ``torch.optim.SGD``); it is constructed on the same parameter groups
            with ``**base_kwargs``.
        rho: neighbourhood radius ρ >= 0 (in parameter-norm units; for ASAM in
            units of the T_w-scaled norm). ρ = 0 reproduces the base optimizer.
        adaptive: ASAM's elementwise scaling T_w = |w| + eta.
        eta: ASAM offset η >= 0.
        perturb_weight_decay: add ``weight_decay * w`` of each group to g before
            computing ε (the base optimizer applies weight decay to the update
            either way).
        **base_kwargs: passed to ``base_optimizer`` (lr, momentum, weight_decay, ...).

    Use either the two-step form::

        loss_fn(model(x), y).backward(); opt.first_step(zero_grad=True)
        loss_fn(model(x), y).backward(); opt.second_step(zero_grad=True)

    or ``opt.step(closure)`` where ``closure`` zeroes nothing, runs forward and
    backward and returns the loss; or :func:`sam_step` for m-SAM and the
    BatchNorm policy.

    After a step, ``last_grad_norm`` (‖g‖), ``last_sam_grad_norm`` (‖g′‖) and
    ``last_cosine`` (cos(g, g′)) are 0-d tensors; ``last_g``/``last_sam_g`` hold
    the per-parameter tensors of the last step.

    Raises:
        ValueError: negative ``rho`` or ``eta``.
    """

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, eta: float = 0.0, perturb_weight_decay: bool = False,
                 **base_kwargs):
        if rho < 0:
            raise ValueError(f"rho={rho!r} is invalid: must be >= 0")
        if eta < 0:
            raise ValueError(f"eta={eta!r} is invalid: must be >= 0")
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)):
            raise ValueError(f"base_optimizer must be a torch.optim.Optimizer subclass, got {base_optimizer!r}")
        defaults = dict(rho=rho, adaptive=adaptive, eta=eta, perturb_weight_decay=perturb_weight_decay,
                        **base_kwargs)
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self._perturbed: list[Tensor] = []
        self._backup: list[Tensor] = []
        self.last_g: list[Tensor] = []
        self.last_sam_g: list[Tensor] = []
        self.last_grad_norm: Tensor | None = None
        self.last_sam_grad_norm: Tensor | None = None
        self.last_cosine: Tensor | None = None

    # ------------------------------------------------------------------ steps
    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save w, record g, and move to w + ε̂(w) ([Murphy 2025, Eq. 2.7-2.8])."""
        self._perturbed, self._backup, self.last_g = [], [], []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["perturb_weight_decay"] and group.get("weight_decay", 0.0):
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            else:
                grads = [g.clone() for g in grads]
            self.last_g.extend(grads)
            self._perturbed.extend(params)
            self._backup.extend(p.detach().clone() for p in params)
        if not self._perturbed:
            return
        # ‖T_w g‖ is global over all groups; ρ and the adaptive scale are per group.
        scaled, per_group = [], []
        start = 0
        for group in self.param_groups:
            n = sum(1 for p in group["params"] if p.grad is not None)
            gs, ps = self.last_g[start:start + n], self._perturbed[start:start + n]
            start += n
            if n == 0:
                continue
            t = None
            if group["adaptive"]:
                t = torch._foreach_abs(ps)
                if group["eta"]:
                    torch._foreach_add_(t, group["eta"])
            scaled.extend(torch._foreach_mul(gs, t) if t is not None else gs)
            per_group.append((group["rho"], gs, ps, t))
        norm = _global_norm(scaled)
        for rho, gs, ps, t in per_group:
            e = torch._foreach_mul(gs, rho / (norm + _EPS))
            if t is not None:  # ASAM: ρ T_w² g / ‖T_w g‖
                torch._foreach_mul_(e, t)
                torch._foreach_mul_(e, t)
            torch._foreach_add_(ps, e)
        if zero_grad:
            self.zero_grad(set_to_none=False)

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the saved weights back (no base step) and record g′ and cos(g, g′)."""
        if not self._perturbed:
            return
        torch._foreach_copy_(self._perturbed, self._backup)
        sam_g = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._perturbed]
        self.last_sam_g = [g.clone() for g in sam_g]
        self._record_cosine()
        self._backup = []

    def _record_cosine(self) -> None:
        dot = torch.stack([t.sum() for t in torch._foreach_mul(self.last_g, self.last_sam_g)]).sum()
        gn = _global_norm(self.last_g)
        sn = _global_norm(self.last_sam_g)
        self.last_grad_norm = gn
        self.last_sam_grad_norm = sn
        self.last_cosine = dot / (gn * sn + _EPS)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w from the saved copy and let the base optimizer step with g′."""
        self.restore()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad(set_to_none=False)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One SAM step with ``closure`` (forward + backward, returns the loss).

        If no gradients are present yet, the closure is evaluated first to get g.
        Returns the loss at w (the first evaluation).

        Raises:
            ValueError: when called without a closure.
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that runs forward and backward and returns the loss; "
                             "or call first_step()/second_step(), or workbench.optim.sam_step()")
        closure = torch.enable_grad()(closure)
        loss = None
        if not any(p.grad is not None for g in self.param_groups for p in g["params"]):
            loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients (delegated to the base optimizer)."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        """The base optimizer's state (momentum buffers, ...); SAM itself keeps no state between steps."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        """Restore :meth:`state_dict`'s output into the base optimizer (and share its parameter groups)."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


# --------------------------------------------------------------------- BatchNorm
def _bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def bn_policy(model: nn.Module, policy: str) -> Iterator[None]:
    """Context manager applying a BatchNorm policy to a forward pass.

    Args:
        model: any module; models without BatchNorm are unaffected.
        policy: ``freeze`` — batch statistics normalise but running statistics
            (``running_mean``, ``running_var``, ``num_batches_tracked``) are
            restored exactly from a saved copy on exit; ``update`` — no change;
            ``eval`` — BatchNorm layers in eval mode (running statistics
            normalise and are not updated), restored to their mode on exit.

    Raises:
        ValueError: unknown policy.
    """
    if policy not in BN_POLICIES:
        raise ValueError(f"bn_policy={policy!r} is invalid: choose one of {BN_POLICIES}")
    bns = _bn_modules(model)
    if not bns or policy == "update":
        yield
        return
    if policy == "freeze":
        saved = [(m, [b.detach().clone() if b is not None else None
                      for b in (m.running_mean, m.running_var, m.num_batches_tracked)]) for m in bns]
        try:
            yield
        finally:
            with torch.no_grad():
                for m, (rm, rv, nbt) in saved:
                    if rm is not None:
                        m.running_mean.copy_(rm)
                    if rv is not None:
                        m.running_var.copy_(rv)
                    if nbt is not None:
                        m.num_batches_tracked.copy_(nbt)
    else:  # eval
        modes = [m.training for m in bns]
        for m in bns:
            m.eval()
        try:
            yield
        finally:
            for m, mode in zip(bns, modes):
                m.train(mode)


# ------------------------------------------------------------------ full step
@dataclass
class SAMStepResult:
    """What one (m-)SAM or plain step computed, as 0-d tensors (no sync).

    Attributes:
        loss: mean loss at w over the batch (first pass).
        correct: number of correctly classified examples at w (first pass).
        grad_norm: ‖g‖₂ of the (chunk-averaged) plain gradient.
        sam_grad_norm: ‖g′‖₂ of the averaged SAM gradient (None for plain steps).
        cosine: cos(g, g′) (None for plain steps).
    """

    loss: Tensor
    correct: Tensor
    grad_norm: Tensor
    sam_grad_norm: Tensor | None = None
    cosine: Tensor | None = None


def _chunks(n: int, m: int | None) -> list[slice]:
    if m is None or m >= n:
        return [slice(0, n)]
    return [slice(i, min(i + m, n)) for i in range(0, n, m)]


def sam_step(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
             optimizer: torch.optim.Optimizer, *, m: int | None = None, bn: str = "freeze",
             max_grad_norm: float | None = None, update: bool = True) -> SAMStepResult:
    """One training step: SAM/ASAM/m-SAM when ``optimizer`` is :class:`SAM`, else a plain step.

    Args:
        model: in train mode.
        loss_fn: ``loss_fn(logits, y) -> mean loss`` (0-d).
        x: inputs ``[B, ...]``.
        y: targets ``[B]``.
        optimizer: :class:`SAM` or any torch optimizer.
        m: m-SAM chunk size ([Andriushchenko 2024, Eq. 5.4]): the batch is split into
            consecutive chunks of ``m`` examples (the last may be smaller), each
            chunk gets its own ascent point ε̂_c from its own gradient g_c and its
            own SAM gradient g′_c = ∇L_c(w + ε̂_c); the descent uses
            Σ_c (|c|/B) g′_c. ``None`` = one chunk (standard SAM).
        bn: BatchNorm policy for the second pass (see :func:`bn_policy`).
        max_grad_norm: clip the final gradient to this global norm.
        update: take the optimizer step. ``False`` stops after the gradient is
            computed: the parameters are at w (restored) and their ``.grad`` holds
            the (SAM) gradient, so a caller can use it (e.g. to craft poisons
            against g′) and then call :func:`optimizer_update`.

    Returns:
        :class:`SAMStepResult` (tensors on the model's device).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    B = x.shape[0]
    if not isinstance(optimizer, SAM):
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        gn = _global_norm([p.grad for p in params if p.grad is not None])
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        if update:
            optimizer.step()
        return SAMStepResult(loss=loss.detach(), correct=(out.argmax(1) == y).sum(), grad_norm=gn)

    chunks = _chunks(B, m)
    if len(chunks) == 1:
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        optimizer.first_step(zero_grad=True)
        with bn_policy(model, bn):
            loss_fn(model(x), y).backward()
        optimizer.restore()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        if update:
            optimizer.base_optimizer.step()
        return SAMStepResult(loss=loss.detach(), correct=(out.argmax(1) == y).sum(),
                             grad_norm=optimizer.last_grad_norm, sam_grad_norm=optimizer.last_sam_grad_norm,
                             cosine=optimizer.last_cosine)

    # m-SAM: accumulate chunk-weighted g and g′.
    acc_g = [torch.zeros_like(p) for p in params]
    acc_sam = [torch.zeros_like(p) for p in params]
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for sl in chunks:
        xc, yc = x[sl], y[sl]
        w = xc.shape[0] / B
        optimizer.zero_grad(set_to_none=False)
        out = model(xc)
        loss = loss_fn(out, yc)
        loss.backward()
        loss_sum = loss_sum + loss.detach() * w
        correct = correct + (out.argmax(1) == yc).sum()
        optimizer.first_step(zero_grad=True)
        with bn_policy(model, bn):
            loss_fn(model(xc), yc).backward()
        optimizer.restore()
        with torch.no_grad():
            by_param = dict(zip(map(id, optimizer._perturbed), optimizer.last_g))
            for a, p in zip(acc_g, params):
                g = by_param.get(id(p))
                if g is not None:
                    a.add_(g, alpha=w)
            for a, p in zip(acc_sam, params):
                if p.grad is not None:
                    a.add_(p.grad, alpha=w)
    with torch.no_grad():
        for p, a in zip(params, acc_sam):
            if p.grad is None:
                p.grad = a
            else:
                p.grad.copy_(a)
        optimizer.last_g, optimizer.last_sam_g = acc_g, [a.clone() for a in acc_sam]
        optimizer._record_cosine()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if update:
        optimizer.base_optimizer.step()
    return SAMStepResult(loss=loss_sum, correct=correct, grad_norm=optimizer.last_grad_norm,
                         sam_grad_norm=optimizer.last_sam_grad_norm, cosine=optimizer.last_cosine)


def optimizer_update(optimizer: torch.optim.Optimizer) -> None:
    """The parameter update of a step computed with ``sam_step(..., update=False)``."""
    if isinstance(optimizer, SAM):
        optimizer.base_optimizer.step()
    else:
        optimizer.step()


def _global_norm(tensors: Sequence[Tensor]) -> Tensor:
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors))))
