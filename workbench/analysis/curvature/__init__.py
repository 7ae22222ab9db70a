"""Hessian curvature: eigenvalues, trace and spectral density of the training loss.

The sharpness measures of [Murphy 2025, §2.2.1] ("Spectrum of
the Hessian") need the extreme eigenvalues of the Hessian of the loss, the ratio
λmax/λ5 ([Foret 2021], as used there) and the eigenvalue density. The Hessian is
never formed: every algorithm here only needs Hessian-vector products (HVPs).

Two layers:

* :class:`HessianOperator` — the Hessian of the **mean** loss over **all**
  examples of an :class:`~workbench.analysis.common.ExampleSet`, with respect to
  a chosen set of parameters, as a linear operator on flat vectors
  (``size``, ``matvec``, ``@``, :meth:`~HessianOperator.as_linear_operator`).
  BatchNorm and dropout are in eval mode during every product (the Hessian of
  the eval-mode loss, as PyHessian; a train-mode BatchNorm Hessian is a
  different, batch-coupled object), and the model is left exactly as it was.
* Free functions over any operator with ``size`` and ``matvec`` (the
  :class:`LinearOperatorLike` protocol; :class:`DenseOperator` wraps a dense
  symmetric matrix): :func:`lanczos`, :func:`eigsh_eigenvalues`,
  :func:`power_iteration`, :func:`smallest_eigenvalues`,
  :func:`hutchinson_trace`, :func:`hutchpp_trace`, :func:`spectral_density`.
  Each returns a frozen result record (:class:`EigenResult`,
  :class:`TraceResult`, :class:`DensityResult`) that
  :func:`~workbench.analysis.common.save_result` writes as JSON + NPZ.

Model-level helpers: :func:`layerwise` (one operator per layer),
:func:`pyhessian_eigenvalues` / :func:`pyhessian_trace` /
:func:`pyhessian_density` (the PyHessian package, for comparison), and
:class:`TopEigenvalueProbe` (λmax tracked during training by the
:class:`~workbench.training.trainer.Trainer`).

Cost on a CPU (measured by
``benchmarks/bench_hessian.py``): one HVP on the cached double-backward graph
costs about 1.5-2 gradient evaluations. Lanczos with full re-orthogonalisation
needs far fewer HVPs than PyHessian's deflated power iteration for the same
accuracy (top-5: ~30 against several hundred), because its error falls with
the Chebyshev rate in sqrt(gap) rather than the power-iteration rate in gap.

References:
    * B. Ghorbani, S. Krishnan, Y. Xiao, "An investigation into neural net
      optimization via Hessian eigenvalue density", ICML 2019 (Lanczos, SLQ).
    * Z. Yao, A. Gholami, K. Keutzer, M. Mahoney, "PyHessian: Neural networks
      through the lens of the Hessian", IEEE BigData 2020 (power iteration,
      Hutchinson trace, SLQ density).
    * R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal
      stochastic trace estimation", SOSA 2021.
    * M. F. Hutchinson, "A stochastic estimator of the trace of the influence
      matrix for Laplacian smoothing splines", 1990.
    * G. H. Golub, G. Meurant, "Matrices, Moments and Quadrature", 1994
      (Gauss quadrature from the Lanczos tridiagonal matrix).
    * P. Foret et al., "Sharpness-Aware Minimization", ICLR 2021 (λmax/λ5).

Modules (one concept each):

* :mod:`.operator` — :class:`HessianOperator`, :class:`DenseOperator`, :class:`LinearOperatorLike`;
* :mod:`.results` — the result records;
* :mod:`.eigen` — Lanczos, ARPACK, power iteration, smallest eigenvalues;
* :mod:`.trace` — Hutchinson / Hutch++ trace, SLQ spectral density, the eigenvalue ratio;
* :mod:`.layerwise`, :mod:`.pyhessian_backend`, :mod:`.probe`.

Everything public is importable from ``workbench.analysis.curvature`` as before.

No UI imports.
"""
from .eigen import eigsh_eigenvalues, lanczos, power_iteration, smallest_eigenvalues
from .layerwise import layerwise
from .operator import DenseOperator, HessianOperator, LinearOperatorLike
from .probe import TopEigenvalueProbe
from .pyhessian_backend import pyhessian_density, pyhessian_eigenvalues, pyhessian_trace
from .results import DensityResult, EigenResult, LayerwiseResult, TraceResult
from .trace import eigenvalue_ratio, hutchinson_trace, hutchpp_trace, spectral_density

__all__ = [
    "LinearOperatorLike", "HessianOperator", "DenseOperator",
    "EigenResult", "TraceResult", "DensityResult", "LayerwiseResult",
    "lanczos", "eigsh_eigenvalues", "power_iteration", "smallest_eigenvalues",
    "hutchinson_trace", "hutchpp_trace", "spectral_density", "eigenvalue_ratio", "layerwise",
    "pyhessian_eigenvalues", "pyhessian_trace", "pyhessian_density", "TopEigenvalueProbe",
]
