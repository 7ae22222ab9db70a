"""Dataclass configurations for runs, validated on construction.

Over 700 lines, kept whole: every config section and its validation in one place, so that type checks and
error messages are uniform across run configs, study files and ``--set`` overrides.

A :class:`RunConfig` bundles five sections:

* :class:`DataConfig`      which dataset, which classes, how it is split;
* :class:`ModelConfig`     which architecture and its size parameters;
* :class:`OptimConfig`     SGD / SAM / ASAM / Adam and their hyperparameters;
* :class:`ScheduleConfig`  learning-rate schedule;
* :class:`TrainConfig`     epochs, batch size, seed, device, logging.

Every section validates itself in ``__post_init__``: a bad value raises
``ValueError`` naming the field (dotted, e.g. ``optim.rho``), the value and the
allowed range or choices, before any work starts. Configs round-trip through
plain dicts, JSON and YAML, and accept dotted overrides such as
``optim.rho=0.05`` (values parsed as YAML scalars, so ``0.05`` is a float,
``[60,120]`` a list and ``null`` is ``None``).

Types are checked, never coerced: every field's value must match its annotation
(:func:`check_field_types`; ``'false'`` is not a boolean, ``'3'`` or ``true`` not an
integer; an integer is accepted where a float is expected), and the message names
the field, the value and the expected type. Config and study files are read by
:func:`load_yaml_file` with a safe loader (no ``!!python/...`` tags or any other
object construction), that refuses duplicate keys, documents whose aliases expand
them by more than :data:`YAML_MAX_ALIAS_EXPANSION` values ("billion laughs"),
recursive aliases and nesting deeper than :data:`YAML_MAX_DEPTH`; an empty or
comment-only file is an error. Every error is a :class:`ConfigError` (a
``ValueError``) with a one-line message naming the file or the field.

This module is part of the core: it imports neither ``ipywidgets`` nor
``plotly``.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

# Names accepted by the registries.  ``workbench.data`` and ``workbench.models``
# register exactly these (a test keeps them in sync).
DATASET_CHOICES = ("digits", "mnist", "mnist-10k", "fashion-mnist", "cifar10", "cifar100", "gaussians-2d", "moons")
MODEL_CHOICES = ("lenet5", "mlp", "resnet18", "wide_resnet", "densenet", "logistic_regression")
OPTIMIZER_CHOICES = ("sgd", "sam", "asam", "adam")
BASE_OPTIMIZER_CHOICES = ("sgd", "adam")
SCHEDULE_CHOICES = ("constant", "multistep", "cosine")
#: SAM's default radius; ASAM's radius and offset of T_w = |w| + eta ([Kwon 2021]).
SAM_DEFAULT_RHO = 0.05
ASAM_DEFAULTS = {"rho": 0.5, "eta": 0.01}
BN_POLICY_CHOICES = ("freeze", "update", "eval")
SPLIT_CHOICES = ("official", "pooled")
DEVICE_PREFIXES = ("auto", "cpu", "cuda", "mps")
_DEVICE_RE = re.compile(r"^(?:auto|cpu|mps|cuda(?::[0-9]+)?)$")


#: A YAML document may grow by at most this many values through aliases (``*name``): a "billion laughs" file of
#: a few hundred bytes would otherwise expand to millions of values (and a run folder's config.json with them).
YAML_MAX_ALIAS_EXPANSION = 10_000
#: Deepest nesting of lists/mappings accepted in a YAML or JSON config (a run config needs 3 levels).
YAML_MAX_DEPTH = 64
#: Largest config or study file read (bytes).
CONFIG_MAX_BYTES = 10_000_000


class ConfigError(ValueError):
    """An invalid config or study: a bad value, a bad type, or a file that cannot be read or parsed.

    The message is one line and names the field (``optim.lr=-1 is invalid: ...``) or the file.
    """


class YAMLLimitError(yaml.YAMLError):
    """A YAML document refused for its shape: alias expansion, recursive aliases or nesting depth."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` (no dot) as a float, as people write it.

    It also refuses duplicate keys and bounds alias expansion and nesting (see :data:`YAML_MAX_ALIAS_EXPANSION`,
    :data:`YAML_MAX_DEPTH`).
    """

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_node_graph(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _check_node_graph(root) -> None:
    """Refuse a composed YAML node graph that is too large, recursive or too deep.

    Refused: aliases that expand it by more than :data:`YAML_MAX_ALIAS_EXPANSION` values, a graph that contains
    itself (a recursive alias), or one that nests deeper than :data:`YAML_MAX_DEPTH`.
    """
    sizes: dict[int, int] = {}     # expanded size of each node, memoized (a node reached twice: an alias)
    active: set[int] = set()

    def size(node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YAMLLimitError("a YAML alias refers to a list or mapping that contains it (a recursive "
                                 f"document){_where(node)}")
        if depth > YAML_MAX_DEPTH:
            raise YAMLLimitError(f"the document is nested more than {YAML_MAX_DEPTH} levels deep{_where(node)}")
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        active.add(key)
        for child in children:
            total += size(child, depth + 1)
            if total - len(sizes) > YAML_MAX_ALIAS_EXPANSION:
                raise YAMLLimitError(f"YAML aliases (*name) expand the document by more than "
                                     f"{YAML_MAX_ALIAS_EXPANSION:,} values (a 'billion laughs' document?); "
                                     "write the values out instead")
        active.discard(key)
        sizes[key] = total
        return total

    size(root, 0)


def _where(node) -> str:
    m = getattr(node, "start_mark", None)
    return f" (line {m.line + 1}, column {m.column + 1})" if m is not None else ""


def yaml_load(text: str) -> Any:
    """Parse YAML safely (no object construction), reading ``1e-3`` as a float.

    Raises:
        yaml.YAMLError: invalid YAML, an unknown tag (``!!python/object`` and the like), a duplicate key, or
            :class:`YAMLLimitError` (alias expansion, recursive aliases, nesting; see :func:`_check_node_graph`).
    """
    try:
        return yaml.load(text, Loader=_Loader)
    except RecursionError:
        raise YAMLLimitError(f"the document is nested too deeply (more than {YAML_MAX_DEPTH} levels)") from None


def yaml_error_message(e: BaseException) -> str:
    """One line describing a YAML error: the problem and where (line, column)."""
    if isinstance(e, yaml.MarkedYAMLError):
        problem = e.problem or e.context or "syntax error"
        mark = e.problem_mark or e.context_mark
        text = problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else "")
        if "could not determine a constructor for the tag" in problem:
            text += "; tags such as !!python/object are not allowed in a config"
    else:
        text = str(e)
    return " ".join(text.split())


def _read_config_text(path: str | Path, what: str) -> str:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist")
    if p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is a folder, not a file")
    try:
        if p.is_file() and p.stat().st_size > CONFIG_MAX_BYTES:
            raise ConfigError(f"{what} {str(p)!r} is larger than {CONFIG_MAX_BYTES / 1e6:g} MB")
        data = p.read_bytes()
    except PermissionError:
        raise ConfigError(f"{what} {str(p)!r} cannot be read (permission denied)") from None
    except OSError as e:
        raise ConfigError(f"{what} {str(p)!r} cannot be read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {str(p)!r} is not UTF-8 text (invalid byte at offset {e.start})") from None


def load_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """Read and safely parse a YAML file (see :func:`yaml_load`); the file must hold a document.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: a folder, unreadable, not UTF-8, not valid YAML (one line: problem, line, column), refused by
            the loader's limits, or empty (nothing but comments and blank lines).
    """
    text = _read_config_text(path, what)
    try:
        data = yaml_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {yaml_error_message(e)}") from None
    if data is None:
        raise ConfigError(f"{what} {str(path)!r} is empty (it holds no settings)")
    return data


def load_json_file(path: str | Path, what: str = "config file") -> Any:
    """Read and parse a JSON file; like :func:`load_yaml_file`."""
    text = _read_config_text(path, what)
    if not text.strip():
        raise ConfigError(f"{what} {str(path)!r} is empty (it holds no settings)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} {str(path)!r} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})"
                          ) from None
    except RecursionError:
        raise ConfigError(f"{what} {str(path)!r} is nested too deeply") from None


# ---------------------------------------------------------------------------------------------- type checking
_TYPE_WORDS = {bool: ("a boolean (true or false)", "booleans"), int: ("an integer", "integers"),
               float: ("a number", "numbers"), str: ("a string", "strings"), type(None): ("null", "nulls"),
               list: ("a list", "lists"), dict: ("a mapping", "mappings")}


def _union_args(tp) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _conforms(value: Any, tp) -> bool:
    """Whether ``value`` has type ``tp`` (an annotation), without coercion.

    ``bool`` is not an ``int``, an ``int`` is a ``float``; ``list[T]`` accepts a list or tuple of ``T``.
    """
    if tp is Any:
        return True
    if tp is type(None) or tp is None:
        return value is None
    args = _union_args(tp)
    if args is not None:
        return any(_conforms(value, a) for a in args)
    origin = typing.get_origin(tp) or tp
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        inner = typing.get_args(tp)
        return not inner or all(_conforms(v, inner[0]) for v in value)
    if origin is dict:
        return isinstance(value, Mapping)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(origin, type):
        return isinstance(value, origin)
    return True


def _describe(tp) -> str:
    args = _union_args(tp)
    if args is not None:
        parts = [_describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(parts)
    origin = typing.get_origin(tp) or tp
    if origin in (list, tuple):
        inner = typing.get_args(tp)
        if inner and inner[0] in _TYPE_WORDS:
            return f"a list of {_TYPE_WORDS[inner[0]][1]}"
        return "a list"
    if origin in _TYPE_WORDS:
        return _TYPE_WORDS[origin][0]
    return getattr(origin, "__name__", str(tp))


def _kind(value: Any) -> str:
    for t in (bool, int, float, str, type(None)):
        if type(value) is t:
            return _TYPE_WORDS[t][0].split(" (")[0]
    if isinstance(value, (list, tuple)):
        bad = sorted({_kind(v) for v in value})
        return "a list" + (f" holding {', '.join(bad)}" if bad else "")
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


@functools.lru_cache(maxsize=None)
def _field_types(cls) -> tuple:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in fields(cls) if f.name in hints)


def check_field_types(obj: Any, prefix: str = "", *, skip: Iterable[str] = ()) -> None:
    """Check every dataclass field of ``obj`` against its type annotation (see :func:`_conforms`).

    Raises:
        ConfigError: ``<prefix>.<field>=<value> is invalid: expected <type>, got <kind>``; a
            quoted ``'false'`` or ``'3'`` gets the hint to write the value without quotes.
    """
    skip = set(skip)
    for name, tp in _field_types(type(obj)):
        if name in skip or (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            continue
        value = getattr(obj, name)
        if _conforms(value, tp):
            continue
        expected = _describe(tp)
        hint = ""
        if isinstance(value, str) and ("boolean" in expected or "integer" in expected or "number" in expected):
            hint = " (write it without quotes)"
        dotted = f"{prefix}.{name}" if prefix else name
        raise ConfigError(f"{dotted}={_short_repr(value)} is invalid: expected {expected}, got {_kind(value)}{hint}")


def _short_repr(value: Any, limit: int = 120) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 5] + " ...]"


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{name}={_short_repr(value)} is invalid: {allowed}")



def _check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        _fail(name, value, "choose one of " + ", ".join(repr(c) for c in choices))


def _check_positive(name: str, value: Any, *, integer: bool = False) -> None:
    kind = "integer" if integer else "number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        _fail(name, value, f"must be a positive {kind} (> 0)")
    if not math.isfinite(value) or value <= 0:
        _fail(name, value, f"must be a positive {kind} (> 0)")


def _check_nonneg(name: str, value: Any, *, integer: bool = False) -> None:
    kind = "integer" if integer else "number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        _fail(name, value, f"must be a non-negative {kind} (>= 0)")
    if not math.isfinite(value) or value < 0:
        _fail(name, value, f"must be a non-negative {kind} (>= 0)")


def _check_fraction(name: str, value: Any, *, low_open: bool = False, high_open: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(name, value, "must be a number in [0, 1)")
    lo_ok = value > 0 if low_open else value >= 0
    hi_ok = value < 1 if high_open else value <= 1
    if not (lo_ok and hi_ok):
        lo = "(0" if low_open else "[0"
        hi = "1)" if high_open else "1]"
        _fail(name, value, f"must lie in {lo}, {hi}")


class _Section:
    """Mixin: prefix for error messages and dict conversion."""

    _prefix = ""

    def _name(self, f: str) -> str:
        return f"{self._prefix}.{f}" if self._prefix else f

    def _check_types(self) -> None:
        """Every field against its annotation (:func:`check_field_types`); first thing in ``__post_init__``."""
        check_field_types(self, self._prefix)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class DataConfig(_Section):
    """Which data to train on.

    Attributes:
        name: dataset name, one of :data:`DATASET_CHOICES`. ``digits`` is
            scikit-learn's bundled 8x8 handwritten digits (1,797 images, works
            offline); ``mnist-10k`` is the real MNIST test set (10,000 28x28 images)
            shipped with the package (offline, always split pooled: 7,000 / 1,000 /
            2,000 by default); ``mnist``/``fashion-mnist``/``cifar10``/``cifar100`` use
            torchvision's readers on files under ``root``; ``gaussians-2d`` and
            ``moons`` are toy 2-D problems.
        root: directory searched for torchvision datasets. ``None`` means the
            ``WORKBENCH_DATA`` environment variable, else ``~/.cache/workbench/data``.
        download: let torchvision download missing files (needs network).
        classes: keep only these original class labels, relabelled 0..k-1 in
            the given order (e.g. ``[0, 8]`` for digits 0 vs 8). ``None`` keeps all.
        split: ``official`` keeps the dataset's own train/test files (train is
            split again into train/validation); ``pooled`` pools every available
            file and splits it by ``val_fraction``/``test_fraction``. Datasets
            without an official test set (digits, toy) are always pooled.
        val_fraction: fraction held out for validation (stratified): of the
            official training files for ``official``, of the whole pool for ``pooled``.
        test_fraction: fraction of the whole pool held out for testing when pooled.
        split_seed: seed of the train/validation/test split (independent of
            the training seed, so several training seeds share one split).
        max_train: keep at most this many training examples (seeded, stratified);
            ``None`` keeps all. Useful for CPU demos on big datasets.
        augment: random crop (padding 4) + horizontal flip on training batches;
            ``None`` means on for CIFAR, off otherwise.
        normalize: standardize inputs per channel with training-split statistics.
        resize: resize images to ``resize x resize`` pixels (e.g. 28 to run
            MNIST-shaped models on digits). ``None`` keeps the native size.
        n_samples: number of points for the toy 2-D datasets.
        noise: noise level of the toy datasets (moons: sklearn ``noise``,
            default 0.2; gaussians-2d: standard deviation of each class around
            its mean (-2, 0) or (2, 0), default 1.0). ``None`` uses the default.
        in_memory: hold every split as one tensor on the training device and
            slice batches from it (no DataLoader). ``False`` uses a
            ``torch.utils.data.DataLoader``.
        num_workers: DataLoader workers when ``in_memory`` is ``False``.
        poison: path of a saved poison (``poison.pt``: perturbations keyed by
            dataset index, see :mod:`workbench.data.poison`) added to the training
            split; validation and test stay clean.
        poison_from_epoch: with a poison, train on the clean split before this
            epoch (1-based) and on the poisoned split from it on (1: from the first
            epoch, as in [Murphy 2025, §5.2]).
    """

    _prefix = "data"

    name: str = "digits"
    root: str | None = None
    download: bool = False
    classes: list[int] | None = None
    split: str = "official"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    max_train: int | None = None
    augment: bool | None = None
    normalize: bool = True
    resize: int | None = None
    n_samples: int = 1000
    noise: float | None = None
    in_memory: bool = True
    num_workers: int = 0
    poison: str | None = None
    poison_from_epoch: int = 1

    def __post_init__(self) -> None:
        self._check_types()
        _check_choice(self._name("name"), self.name, DATASET_CHOICES)
        _check_positive(self._name("poison_from_epoch"), self.poison_from_epoch, integer=True)
        _check_choice(self._name("split"), self.split, SPLIT_CHOICES)
        _check_fraction(self._name("val_fraction"), self.val_fraction)
        _check_fraction(self._name("test_fraction"), self.test_fraction)
        if self.val_fraction + self.test_fraction >= 1:
            _fail(self._name("val_fraction"), self.val_fraction,
                  f"val_fraction + test_fraction must be < 1 (test_fraction={self.test_fraction})")
        if self.classes is not None:
            if not isinstance(self.classes, (list, tuple)) or len(self.classes) < 2:
                _fail(self._name("classes"), self.classes, "must be a list of at least two class labels or null")
            if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in self.classes):
                _fail(self._name("classes"), self.classes, "class labels must be non-negative integers")
            if len(set(self.classes)) != len(self.classes):
                _fail(self._name("classes"), self.classes, "class labels must be distinct")
            self.classes = list(self.classes)
        if self.max_train is not None:
            _check_positive(self._name("max_train"), self.max_train, integer=True)
        if self.resize is not None:
            _check_positive(self._name("resize"), self.resize, integer=True)
        _check_positive(self._name("n_samples"), self.n_samples, integer=True)
        if self.noise is not None:
            _check_nonneg(self._name("noise"), self.noise)
        _check_nonneg(self._name("num_workers"), self.num_workers, integer=True)
        if not isinstance(self.split_seed, int) or isinstance(self.split_seed, bool):
            _fail(self._name("split_seed"), self.split_seed, "must be an integer")


@dataclass
class ModelConfig(_Section):
    """Which architecture.

    Attributes:
        name: one of :data:`MODEL_CHOICES`.
        hidden_sizes: widths of the hidden layers of ``mlp``.
        depth: depth of ``wide_resnet`` (16, 22, 28, 40: ``(depth - 4) % 6 == 0``)
            and ``densenet`` (40, 100, ...: ``(depth - 4) % 3 == 0``, and
            ``% 6`` for DenseNet-BC).
        widen_factor: ``k`` of WRN-depth-k.
        growth_rate: DenseNet growth rate ``k``.
        bottleneck: DenseNet-BC (bottleneck layers + compression 0.5) instead of
            the plain DenseNet (e.g. DenseNet-40, k=12).
        dropout: dropout probability (MLP hidden layers, WRN blocks, DenseNet layers).
        width: channel multiplier for ``lenet5`` (1.0: the classic 6/16 channels)
            and ``resnet18`` (1.0: the standard 64-128-256-512 channels). Values
            below 1 give small models for CPU demos.
    """

    _prefix = "model"

    name: str = "lenet5"
    hidden_sizes: list[int] = field(default_factory=lambda: [512, 512])
    depth: int = 28
    widen_factor: int = 10
    growth_rate: int = 12
    bottleneck: bool = False
    dropout: float = 0.0
    width: float = 1.0

    def __post_init__(self) -> None:
        self._check_types()
        _check_choice(self._name("name"), self.name, MODEL_CHOICES)
        if not isinstance(self.hidden_sizes, (list, tuple)) or not self.hidden_sizes:
            _fail(self._name("hidden_sizes"), self.hidden_sizes, "must be a non-empty list of positive integers")
        for h in self.hidden_sizes:
            _check_positive(self._name("hidden_sizes"), h, integer=True)
        self.hidden_sizes = list(self.hidden_sizes)
        _check_positive(self._name("depth"), self.depth, integer=True)
        _check_positive(self._name("widen_factor"), self.widen_factor, integer=True)
        _check_positive(self._name("growth_rate"), self.growth_rate, integer=True)
        _check_fraction(self._name("dropout"), self.dropout)
        _check_positive(self._name("width"), self.width)
        if self.name == "wide_resnet" and (self.depth - 4) % 6 != 0:
            _fail(self._name("depth"), self.depth, "wide_resnet needs (depth - 4) divisible by 6 (e.g. 16, 22, 28, 40)")
        if self.name == "densenet":
            step = 6 if self.bottleneck else 3
            if self.depth < 4 + step or (self.depth - 4) % step != 0:
                _fail(self._name("depth"), self.depth,
                      f"densenet needs (depth - 4) divisible by {step} (e.g. 40 plain, 100 BC)")


@dataclass
class OptimConfig(_Section):
    """Optimizer.

    Attributes:
        name: ``sgd``, ``adam``, ``sam`` ([Foret 2021]; [Murphy 2025, Eq. 2.7-2.8])
            or ``asam`` (SAM with ``adaptive=True``).
        lr: learning rate (> 0).
        momentum: SGD momentum in [0, 1).
        nesterov: Nesterov momentum (needs momentum > 0).
        weight_decay: L2 penalty coefficient (>= 0), applied by the base optimizer.
        betas: Adam's (beta1, beta2).
        base: base optimizer that SAM/ASAM wraps: ``sgd`` or ``adam``.
        rho: SAM neighbourhood radius (>= 0; 0 recovers the base optimizer's
            gradient). ``None`` (default) means 0.05, or 0.5 when the optimizer is
            ASAM (``asam`` or ``adaptive``), the value of [Kwon 2021]; the resolved
            number is what the config holds after construction.
        adaptive: scale the perturbation elementwise by ``|w| + eta`` (ASAM).
            Forced on for ``asam``.
        eta: ASAM's offset in ``T_w = |w| + eta``. ``None`` (default) means 0.01
            when the optimizer is ASAM ([Kwon 2021]), 0 otherwise.
        m: m-SAM chunk size: the batch is split into chunks of ``m`` examples,
            each with its own ascent point; the SAM gradients are averaged
            ([Andriushchenko 2024, Eq. 5.4]). ``None`` means the whole batch.
        bn_policy: BatchNorm during SAM's second (perturbed) pass. ``freeze``
            (default): batch statistics normalise, running statistics are not
            updated; ``update``: running statistics updated by both passes;
            ``eval``: the second pass uses running statistics (eval mode).
        perturb_weight_decay: include the L2 term ``weight_decay * w`` in the
            gradient that defines the ascent direction (google-research/sam puts
            L2 in the loss; davda54/sam does not).
    """

    _prefix = "optim"

    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    base: str = "sgd"
    rho: float | None = None
    adaptive: bool = False
    eta: float | None = None
    m: int | None = None
    bn_policy: str = "freeze"
    perturb_weight_decay: bool = False

    def __post_init__(self) -> None:
        self._check_types()
        _check_choice(self._name("name"), self.name, OPTIMIZER_CHOICES)
        _check_choice(self._name("base"), self.base, BASE_OPTIMIZER_CHOICES)
        _check_choice(self._name("bn_policy"), self.bn_policy, BN_POLICY_CHOICES)
        _check_positive(self._name("lr"), self.lr)
        _check_fraction(self._name("momentum"), self.momentum)
        _check_nonneg(self._name("weight_decay"), self.weight_decay)
        asam = self.name == "asam" or bool(self.adaptive)
        if self.rho is None:
            self.rho = ASAM_DEFAULTS["rho"] if asam else SAM_DEFAULT_RHO
        if self.eta is None:
            self.eta = ASAM_DEFAULTS["eta"] if asam else 0.0
        _check_nonneg(self._name("rho"), self.rho)
        _check_nonneg(self._name("eta"), self.eta)
        if self.nesterov and self.momentum == 0:
            _fail(self._name("nesterov"), self.nesterov, "Nesterov momentum needs optim.momentum > 0")
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2:
            _fail(self._name("betas"), self.betas, "must be a pair [beta1, beta2], each in [0, 1)")
        for b in self.betas:
            _check_fraction(self._name("betas"), b)
        self.betas = list(self.betas)
        if self.m is not None:
            _check_positive(self._name("m"), self.m, integer=True)
            if not self.is_sam:
                _fail(self._name("m"), self.m, f"m-SAM chunks apply to optim.name 'sam' or 'asam' only (here "
                                               f"optim.name={self.name!r}); set optim.m to null")
        if self.name == "asam":
            self.adaptive = True

    @property
    def is_sam(self) -> bool:
        """Whether the optimizer is SAM or ASAM (two gradient evaluations per step)."""
        return self.name in ("sam", "asam")


@dataclass
class ScheduleConfig(_Section):
    """Learning-rate schedule, evaluated per step (fractional epochs).

    Attributes:
        name: ``constant``, ``multistep`` or ``cosine``.
        milestones: epochs at which ``multistep`` multiplies the rate by ``gamma``
            (e.g. ``[60, 120, 160]`` with ``gamma=0.2``).
        milestone_fractions: the same as fractions of the total number of
            epochs (e.g. ``[0.5, 0.75]`` with ``gamma=0.1``: "divide by 10 at 50%
            and 75%", [Murphy 2025, §4.3.1]). Use one of the two lists, not both.
        gamma: multiplicative factor at each milestone, in (0, 1].
        warmup_epochs: linear warm-up from ``warmup_start_factor * lr`` over this
            many epochs (fractional allowed), combined with any schedule.
        warmup_start_factor: starting fraction of the rate for the warm-up.
        min_lr_factor: cosine decays to ``min_lr_factor * lr``.
    """

    _prefix = "schedule"

    name: str = "constant"
    milestones: list[int] = field(default_factory=list)
    milestone_fractions: list[float] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.0
    min_lr_factor: float = 0.0

    def __post_init__(self) -> None:
        self._check_types()
        _check_choice(self._name("name"), self.name, SCHEDULE_CHOICES)
        self.milestones = list(self.milestones or [])
        self.milestone_fractions = list(self.milestone_fractions or [])
        for m in self.milestones:
            _check_positive(self._name("milestones"), m, integer=True)
        for m in self.milestone_fractions:
            _check_fraction(self._name("milestone_fractions"), m, low_open=True)
        if self.milestones and self.milestone_fractions:
            _fail(self._name("milestones"), self.milestones, "give milestones or milestone_fractions, not both")
        if sorted(self.milestones) != self.milestones:
            _fail(self._name("milestones"), self.milestones, "must be increasing")
        if sorted(self.milestone_fractions) != self.milestone_fractions:
            _fail(self._name("milestone_fractions"), self.milestone_fractions, "must be increasing")
        if self.name == "multistep" and not (self.milestones or self.milestone_fractions):
            _fail(self._name("milestones"), self.milestones, "multistep needs milestones or milestone_fractions")
        _check_fraction(self._name("gamma"), self.gamma, low_open=True, high_open=False)
        _check_nonneg(self._name("warmup_epochs"), self.warmup_epochs)
        _check_fraction(self._name("warmup_start_factor"), self.warmup_start_factor)
        _check_fraction(self._name("min_lr_factor"), self.min_lr_factor)


@dataclass
class TrainConfig(_Section):
    """Training loop.

    Attributes:
        epochs: number of epochs (> 0).
        batch_size: training batch size (> 0).
        eval_batch_size: batch size of the per-epoch evaluation passes.
        seed: seed of initialisation, shuffling, augmentation and dropout.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``,
            ``cuda:1``, ``mps``.
        deterministic: ``torch.use_deterministic_algorithms(True)`` and
            deterministic cuDNN (slower on GPU).
        num_threads: CPU threads for torch (``None`` leaves torch's default).
        log_every: write a step record every this many steps.
        eval_every: evaluate the full splits every this many epochs (and always
            after the last one).
        checkpoint_every: write ``checkpoints/last.pt`` every this many epochs
            (and always on stop, pause-to-disk and at the end).
        keep_checkpoints: also keep ``checkpoints/epoch_XXXX.pt`` snapshots.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        max_grad_norm: clip the (SAM) gradient to this global norm; ``None`` disables.
        tensorboard: also write TensorBoard scalars to ``<run>/tensorboard/`` (step
            metrics at the optimizer step, epoch metrics under ``epoch/``).
    """

    _prefix = "train"

    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 1024
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    num_threads: int | None = None
    log_every: int = 1
    eval_every: int = 1
    checkpoint_every: int = 1
    keep_checkpoints: bool = False
    label_smoothing: float = 0.0
    max_grad_norm: float | None = None
    tensorboard: bool = False

    def __post_init__(self) -> None:
        self._check_types()
        _check_positive(self._name("epochs"), self.epochs, integer=True)
        _check_positive(self._name("batch_size"), self.batch_size, integer=True)
        _check_positive(self._name("eval_batch_size"), self.eval_batch_size, integer=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            _fail(self._name("seed"), self.seed, "must be an integer")
        if not _DEVICE_RE.match(self.device):
            _fail(self._name("device"), self.device, "choose 'auto', 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'mps'")
        if self.num_threads is not None:
            _check_positive(self._name("num_threads"), self.num_threads, integer=True)
        _check_positive(self._name("log_every"), self.log_every, integer=True)
        _check_positive(self._name("eval_every"), self.eval_every, integer=True)
        _check_positive(self._name("checkpoint_every"), self.checkpoint_every, integer=True)
        _check_fraction(self._name("label_smoothing"), self.label_smoothing)
        if self.max_grad_norm is not None:
            _check_positive(self._name("max_grad_norm"), self.max_grad_norm)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
}


@dataclass
class RunConfig:
    """A whole run: name, output root and the five sections.

    Attributes:
        name: human-readable run name (part of the run folder name). ``None``
            derives one from optimizer, model and dataset.
        root: directory under which the run folder is created.
        tags: free-form labels (shown by ``workbench runs``).
    """

    name: str | None = None
    root: str = "runs"
    tags: list[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for key, cls in _SECTIONS.items():
            value = getattr(self, key)
            if isinstance(value, Mapping):
                setattr(self, key, _section_from_dict(cls, value, key))
            elif not isinstance(value, cls):
                _fail(key, value, f"must be a mapping of {key} settings (a {cls.__name__})")
        check_field_types(self)
        if self.name is not None and not self.name.strip():
            _fail("name", self.name, "must be a non-empty string or null")
        if not self.root:
            _fail("root", self.root, "must be a non-empty path")
        self.tags = list(self.tags)
        m = self.optim.m
        if self.optim.is_sam and m is not None and self.train.batch_size % m != 0:
            _fail("optim.m", m, f"must divide train.batch_size={self.train.batch_size} "
                  f"(choose m in {_divisors(self.train.batch_size)})")
        if self.optim.is_sam and m is not None and m > self.train.batch_size:
            _fail("optim.m", m, f"must be <= train.batch_size={self.train.batch_size}")

    # ------------------------------------------------------------------ naming
    @property
    def display_name(self) -> str:
        """The run's ``name``, else e.g. ``SAM(rho=0.05)-lenet5-digits`` (optimizer, model, dataset)."""
        if self.name:
            return self.name
        opt = self.optim.name.upper()
        if self.optim.is_sam:
            opt += f"(rho={self.optim.rho:g}" + (f", m={self.optim.m}" if self.optim.m else "") + ")"
        return f"{opt}-{self.model.name}-{self.data.name}"

    # ------------------------------------------------------------- conversion
    def to_dict(self) -> dict:
        """The config as nested plain dicts (section → field → value); :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """A validated config from nested dicts (missing sections and fields take their defaults).

        Raises:
            ConfigError: not a mapping, an unknown section or field, a value of the wrong type or an invalid value.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"a run config must be a mapping of settings, got {_kind(d)} ({type(d).__name__})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known, key=str)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}: choose from {sorted(known)}")
        return cls(**copy.deepcopy(dict(d)))

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """The config as JSON text, also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "RunConfig":
        """From JSON text (starting with ``{``) or a JSON file (validated as :meth:`from_dict`)."""
        if isinstance(text_or_path, Path) or not str(text_or_path).lstrip().startswith("{"):
            return cls._from_file_data(load_json_file(text_or_path), text_or_path)
        return cls.from_dict(json.loads(str(text_or_path)))

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text, also written to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> "RunConfig":
        """From YAML text, or a file (a ``Path``, or a one-line string naming an existing file).

        A file must not be empty (:func:`load_yaml_file`); empty text gives the defaults.
        """
        s = str(text_or_path)
        if isinstance(text_or_path, Path) or (s.strip() and "\n" not in s and Path(s).exists()):
            return cls._from_file_data(load_yaml_file(text_or_path), text_or_path)
        return cls.from_dict(yaml_load(s) or {})

    @classmethod
    def _from_file_data(cls, data: Any, path: str | Path) -> "RunConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of settings (name, data, model, "
                              f"optim, schedule, train, ...), got {_kind(data)} ({type(data).__name__})")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """Read a ``.json``, ``.yaml`` or ``.yml`` file."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config file {str(p)!r} does not exist")
        if p.suffix == ".json":
            return cls.from_json(p)
        if p.suffix in (".yaml", ".yml"):
            return cls.from_yaml(p)
        raise ValueError(f"config file {str(p)!r}: unknown extension {p.suffix!r}; use .json, .yaml or .yml")

    def save(self, path: str | Path) -> None:
        """Write the config to ``path``: JSON for a ``.json`` suffix, else YAML."""
        p = Path(path)
        if p.suffix == ".json":
            self.to_json(p)
        else:
            self.to_yaml(p)

    # -------------------------------------------------------------- overrides
    def with_overrides(self, overrides: Iterable[str] | Mapping[str, Any]) -> "RunConfig":
        """Return a new, validated config with dotted overrides applied.

        ``overrides`` is either ``["optim.rho=0.05", "train.epochs=3"]`` (values
        parsed as YAML scalars) or a mapping ``{"optim.rho": 0.05}``.

        Raises:
            ValueError: malformed override, unknown key, or an invalid value.
        """
        d = self.to_dict()
        items = list(overrides.items()) if isinstance(overrides, Mapping) else [_parse_override(o) for o in overrides]
        keys = [k for k, _ in items]
        for key, value in items:
            parts = key.split(".")
            target = d
            for i, part in enumerate(parts[:-1]):
                if not isinstance(target, dict) or part not in target:
                    raise ConfigError(f"override {key!r}: unknown key {'.'.join(parts[: i + 1])!r}")
                target = target[part]
            leaf = parts[-1]
            if not isinstance(target, dict) or leaf not in target:
                choices = sorted(target) if isinstance(target, dict) else []
                raise ConfigError(f"override {key!r}: unknown key {leaf!r}; choose from {choices}")
            target[leaf] = value
        _redefault_optim(d.get("optim"), self.optim, keys)
        return RunConfig.from_dict(d)


def _redefault_optim(optim: Any, old: "OptimConfig", keys: list[str]) -> None:
    """Reset ``rho``/``eta`` to ``None`` after overrides that switch to or from ASAM, so the new defaults apply.

    The switch is an override of ``optim.name`` / ``optim.adaptive``; only a ``rho``/``eta`` that was not
    overridden and still holds the old optimizer's default is reset (``optim.name=asam`` alone gives rho 0.5,
    eta 0.01).
    """
    if not isinstance(optim, dict) or not ({"optim.name", "optim.adaptive"} & set(keys)):
        return
    was_asam = old.name == "asam" or bool(old.adaptive)
    defaults = {"rho": ASAM_DEFAULTS["rho"] if was_asam else SAM_DEFAULT_RHO,
                "eta": ASAM_DEFAULTS["eta"] if was_asam else 0.0}
    for f, dflt in defaults.items():
        if f"optim.{f}" not in keys and optim.get(f) == dflt:
            optim[f] = None


def _parse_override(text: str) -> tuple[str, Any]:
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. optim.rho=0.05")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse the value as YAML: {yaml_error_message(e)}") from None
    return key, value


def _section_from_dict(cls, d: Mapping[str, Any], prefix: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known, key=str)
    if unknown:
        raise ConfigError(f"unknown key(s) {[f'{prefix}.{u}' for u in unknown]}: choose from {sorted(known)}")
    return cls(**dict(d))


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]
