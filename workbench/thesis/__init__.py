"""Reproductions of the PhD thesis [Andriushchenko 2024] (see ``docs/references.md``).

Every reproduction is a function registered in :mod:`workbench.thesis.registry`
that returns a :class:`~workbench.thesis.registry.Reproduction` (data,
figure, the thesis' claim, the measured outcome, a verdict).

Modules: ``sam_toy`` (full-batch / stochastic n-SAM, 1-SAM, ERM on diagonal
linear nets and 1-D ReLU nets), ``ch5`` (Figs. 5.6/5.7/5.13-5.16, 5.1),
``ch7`` (Figs. 7.1, 7.7, mini Ch. 7 study), ``registry``.
"""
from . import registry  # noqa: F401
