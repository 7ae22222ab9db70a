"""Registry of thesis reproductions, shared by the CLI, the reproduction panel and the notebooks.

The CLI is ``workbench thesis repro``, the panel :mod:`workbench.ui.thesis_panel`.

A reproduction is a **compute function** (core: no plotly, returns plain data)
plus a **figure builder** (``workbench.viz.*``: data -> ``go.Figure``), linked
here by name::

    from workbench.thesis.registry import Param, register, run

    def my_compute(*, n_steps=1000, seed=0, progress=None) -> Outcome:
        ...                                  # progress(fraction, message) now and then
        return Outcome(data=df, measured="...", verdict="reproduced", verdict_reason="...", metrics={...})

    register("fig6.2", my_compute,
             claim="Loss stabilises while rank and l0 fall (Fig. 6.2).",
             params=[Param("n_steps", 100000, test=2000, help="SGD iterations"),
                     Param("seed", 0)],
             figure="workbench.viz.thesis_sgd:fig_6_2",   # "module:function" (imported lazily) or a callable
             title="Large-step SGD on diagonal nets", chapter=6)

    rep = run("fig6.2", size="test")         # Reproduction: data, figure, claim, measured, verdict
    rep.figure.show()

``size="test"`` uses every parameter's ``test`` value (the reduced size the
test-suite runs), ``size="full"`` the defaults; keyword overrides win over both.
The figure builder is called as ``builder(outcome.data)`` and must return a
``plotly.graph_objects.Figure``. Compute functions must accept ``progress``
(a callable ``(fraction in [0, 1], message) -> None`` or ``None``).

Part of the study layer: this module itself imports no plotly/ipywidgets (the
builder is imported only when a figure is requested).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["Param", "Outcome", "Reproduction", "Entry", "REGISTRY", "register", "run", "names", "get", "SIZES",
           "VERDICTS", "REPRODUCED", "PARTIAL", "NOT_REPRODUCED", "NOT_ATTEMPTED", "normalize_verdict"]

SIZES = ("full", "test")

REPRODUCED, PARTIAL, NOT_REPRODUCED, NOT_ATTEMPTED = "reproduced", "partial", "not reproduced", "not attempted"
#: The four verdicts, strongest first. ``partial``: the measured criterion holds but is weaker than the claim (a
#: weaker threshold, a part of the claim not measured, an identity instead of a measurement), or only part of a
#: multi-part claim holds; ``verdict_reason`` says which.
VERDICTS = (REPRODUCED, PARTIAL, NOT_REPRODUCED, NOT_ATTEMPTED)


def normalize_verdict(v) -> str:
    """One of :data:`VERDICTS` from a verdict string or a legacy ``True``/``False``/``None``.

    Raises:
        ValueError: anything else.
    """
    if v is True:
        return REPRODUCED
    if v is False:
        return NOT_REPRODUCED
    if v is None:
        return NOT_ATTEMPTED
    if isinstance(v, str) and v in VERDICTS:
        return v
    raise ValueError(f"verdict={v!r} is invalid: choose one of {', '.join(map(repr, VERDICTS))}")


@dataclass
class Param:
    """One parameter of a reproduction (becomes a widget in the panel, an option in the CLI).

    Attributes:
        name: keyword argument of the compute function.
        default: full-size value (int, float, bool, str, or a list of numbers).
        test: reduced-size value for the tests / headless notebooks (default: ``default``).
        choices: allowed values (a dropdown), if any.
        help: one-line description (units, source).
    """

    name: str
    default: Any
    test: Any = None
    choices: Sequence[Any] | None = None
    help: str = ""

    def value(self, size: str) -> Any:
        """The parameter's value for a run of ``size``: the default for ``"full"``, else the test value if any."""
        return self.default if size == "full" or self.test is None else self.test


@dataclass
class Outcome:
    """What a compute function returns.

    Attributes:
        data: the measured data (``pandas.DataFrame`` or a dict of DataFrames/arrays) for the figure builder.
        measured: one-paragraph human summary of the measured outcome with numbers.
        verdict: one of :data:`VERDICTS`: ``"reproduced"`` when the criterion holds and is as strong as the claim,
            ``"partial"`` when it holds only for a weaker criterion or part of the claim, ``"not reproduced"``,
            ``"not attempted"`` where no criterion applies. Legacy ``True``/``False``/``None`` are converted.
        verdict_reason: one sentence: why this verdict (for ``partial``: what is weaker than the claim).
        metrics: the key numbers (floats), used by tests and the CLI.
        settings: the settings actually used (for the record).
        notes: ambiguities / code-only defaults surfaced to the user.
    """

    data: Any
    measured: str
    verdict: str = NOT_ATTEMPTED
    metrics: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    verdict_reason: str = ""

    def __post_init__(self) -> None:
        self.verdict = normalize_verdict(self.verdict)


@dataclass
class Reproduction(Outcome):
    """An :class:`Outcome` plus its registry name, the thesis' claim, figure and run time."""

    name: str = ""
    claim: str = ""
    figure: Any = None
    seconds: float = 0.0

    def summary(self) -> str:
        """A few lines for a terminal: verdict, run time, the thesis' claim, the measured outcome and the notes."""
        v = self.verdict.upper() + (f" ({self.verdict_reason})" if self.verdict_reason else "")
        return (f"[{self.name}] {v} in {self.seconds:.1f} s\nThesis: {self.claim}\nMeasured: {self.measured}"
                + ("".join(f"\nNote: {n}" for n in self.notes)))


@dataclass
class Entry:
    """A registered reproduction (see :func:`register`)."""

    name: str
    fn: Callable[..., Outcome]
    claim: str
    params: list[Param]
    figure: str | Callable[[Any], Any] | None
    title: str = ""
    chapter: int | None = None
    description: str = ""

    def kwargs(self, size: str = "full", **overrides) -> dict[str, Any]:
        """Keyword arguments for ``fn`` at ``size`` with ``overrides`` applied.

        Raises:
            ValueError: unknown size or an override that is not a parameter.
        """
        if size not in SIZES:
            raise ValueError(f"size={size!r} is invalid: choose one of {SIZES}")
        known = {p.name for p in self.params}
        bad = set(overrides) - known
        if bad:
            raise ValueError(f"reproduction {self.name!r} has no parameter(s) {sorted(bad)}; it has {sorted(known)}")
        kw = {p.name: p.value(size) for p in self.params}
        kw.update(overrides)
        return kw

    def build_figure(self, data: Any):
        """Call the figure builder on ``data`` (None if the entry has no builder)."""
        if self.figure is None:
            return None
        builder = self.figure
        if isinstance(builder, str):
            mod, _, attr = builder.partition(":")
            builder = getattr(importlib.import_module(mod), attr)
        return builder(data)


#: name -> :class:`Entry`, in registration order.
REGISTRY: dict[str, Entry] = {}


def register(name: str, fn: Callable[..., Outcome], *, claim: str, params: Sequence[Param] = (),
             figure: str | Callable | None = None, title: str = "", chapter: int | None = None,
             description: str = "", replace: bool = False) -> Entry:
    """Register a reproduction under ``name`` (e.g. ``"fig5.6"``).

    Args:
        name: unique key (used by the CLI ``--figure`` and the panel dropdown).
        fn: compute function ``fn(**params, progress=None) -> Outcome``.
        claim: the thesis' claim, with figure number and thesis line.
        params: :class:`Param` list (widgets / CLI options).
        figure: builder ``"module:function"`` or a callable, ``builder(outcome.data) -> go.Figure``.
        title: short title for menus.
        chapter: thesis chapter.
        description: longer text (settings, what to look at).
        replace: allow re-registering an existing name (module reloads).

    Returns:
        The :class:`Entry`.

    Raises:
        ValueError: duplicate name (without ``replace``) or a non-callable ``fn``.
    """
    if not callable(fn):
        raise ValueError(f"fn for {name!r} must be callable")
    if name in REGISTRY and not replace and REGISTRY[name].fn is not fn:
        raise ValueError(f"reproduction {name!r} is already registered")
    entry = Entry(name, fn, claim, list(params), figure, title or name, chapter, description)
    REGISTRY[name] = entry
    return entry


def names(chapter: int | None = None) -> list[str]:
    """Registered names (optionally of one chapter), in registration order."""
    _load_builtin()
    return [n for n, e in REGISTRY.items() if chapter is None or e.chapter == chapter]


def get(name: str) -> Entry:
    """The :class:`Entry` for ``name``.

    Raises:
        ValueError: unknown name (lists the known ones).
    """
    _load_builtin()
    if name not in REGISTRY:
        raise ValueError(f"unknown reproduction {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def run(name: str, *, size: str = "full", progress: Callable[[float, str], None] | None = None,
        figure: bool = True, **overrides) -> Reproduction:
    """Run a registered reproduction and build its figure.

    Args:
        name: registry key.
        size: ``"full"`` (defaults) or ``"test"`` (reduced sizes).
        progress: ``(fraction, message) -> None`` callback.
        figure: build the figure (needs plotly).
        **overrides: parameter values.

    Returns:
        :class:`Reproduction`.
    """
    entry = get(name)
    kw = entry.kwargs(size, **overrides)
    t0 = time.perf_counter()
    out = entry.fn(progress=progress, **kw)
    secs = time.perf_counter() - t0
    fig = entry.build_figure(out.data) if figure else None
    return Reproduction(data=out.data, measured=out.measured, verdict=out.verdict, verdict_reason=out.verdict_reason,
                        metrics=dict(out.metrics),
                        settings={**kw, **out.settings}, notes=list(out.notes), name=name, claim=entry.claim,
                        figure=fig, seconds=secs)


#: Errors raised while importing reproduction modules (module -> message); shown by the panel.
LOAD_ERRORS: dict[str, str] = {}
_SKIP = ("registry", "cli", "sam_toy")


def _load_builtin() -> None:
    """Import every module of :mod:`workbench.thesis` (their import registers their reproductions).

    Modules named ``_*``, ``cli*``, ``registry`` and ``sam_toy`` are skipped. A module that fails to
    import is recorded in :data:`LOAD_ERRORS` with a warning instead of breaking the other chapters.
    """
    import pkgutil
    import warnings

    import workbench.thesis as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        mod = info.name
        if mod.startswith("_") or mod.startswith(_SKIP):
            continue
        full = f"{pkg.__name__}.{mod}"
        if full in LOAD_ERRORS:
            continue
        try:
            importlib.import_module(full)
        except Exception as e:  # noqa: BLE001 - another chapter's module must not break this one
            LOAD_ERRORS[full] = f"{type(e).__name__}: {e}"
            warnings.warn(f"thesis reproductions in {full} could not be loaded: {LOAD_ERRORS[full]}", stacklevel=1)
