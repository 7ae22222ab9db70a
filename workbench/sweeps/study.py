"""Study definitions: a sweep over run-config fields × seeds.

A study is written in YAML or Python and validated like a run config::

    name: sgd-vs-sam-lr
    base: configs/quickstart_sgd.yaml      # a config file, or an inline mapping of a RunConfig
    search: grid                           # grid | random | optuna
    params:
      optim.name: [sgd, sam]               # a list: grid values / categorical choices
      optim.lr: [0.01, 0.05, 0.1]
      optim.rho: {low: 0.01, high: 0.5, log: true}   # a range (random / optuna only)
    seeds: [0, 1, 2, 3, 4]
    metric: val_acc                        # any epoch-record column (val_acc, test_acc, train_loss, ...)
    mode: max
    backend: local                         # local | ray

Every (configuration, seed) pair is a *trial* that trains one ordinary run
folder under ``<root>/<name>/runs/``. Trials have stable ids (a hash of the
configuration and the seed), so a stopped study resumes without re-running
finished trials. For ``search: optuna`` a configuration is an Optuna trial; its
seeds run one after the other and the objective is their mean ([Murphy 2025,
§4.2 and App. A.1] tune with Optuna and a median pruner).

No UI imports.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..config import ConfigError, RunConfig, check_field_types, load_yaml_file, yaml_load

__all__ = ["ParamSpec", "StudyConfig", "Trial", "SEARCHES", "BACKENDS", "PRUNERS"]

SEARCHES = ("grid", "random", "optuna")
BACKENDS = ("local", "ray")
PRUNERS = ("none", "median", "asha")
OBJECTIVES = ("final", "best")


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"study.{name}={value!r} is invalid: {allowed}")


def _check_name(name: Any) -> None:
    r"""A study's name becomes a folder ``<root>/<name>``: one plain folder name, never a path out of ``root``.

    Refused: a non-string, an empty (or blank) name, one starting with ``.`` (``.``, ``..``, hidden folders), and
    one containing ``/``, ``\``, NUL or another control character.
    """
    if not isinstance(name, str) or not name.strip():
        _fail("name", name, "give a non-empty folder name (the study is saved in <root>/<name>)")
    if name.startswith("."):
        _fail("name", name, "a study name may not start with '.' (it is a folder under the sweeps root; "
                            "'.', '..' and hidden folders are refused)")
    bad = sorted({c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127})
    if bad:
        _fail("name", name, "a study name may not contain '/', '\\', NUL or control characters (found "
                            + ", ".join(repr(c) for c in bad) + "): it is one folder under the sweeps root")


@dataclass(frozen=True)
class ParamSpec:
    """One swept field.

    Attributes:
        name: dotted run-config field (``optim.lr``).
        values: explicit values (grid values; categorical choices for random/optuna).
        low, high: range bounds (random/optuna only).
        log: sample the range on a log scale.
        type: ``float`` or ``int`` for ranges; ``categorical`` for value lists.
    """

    name: str
    values: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    type: str = "categorical"

    @classmethod
    def parse(cls, name: str, spec: Any) -> "ParamSpec":
        """The parameter ``name`` from its study-file spec.

        A list (or ``{"values": [...]}``) is categorical, ``{"low", "high", "log", "type"}`` a range, anything
        else one fixed value.

        Raises:
            ValueError: an empty list, unknown keys, a range without numbers ``low < high``, or a log range with
                ``low <= 0``.
        """
        if isinstance(spec, (list, tuple)):
            if not spec:
                _fail(f"params.{name}", spec, "give at least one value")
            return cls(name=name, values=tuple(spec))
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"low", "high", "log", "type", "values"}
            if unknown:
                _fail(f"params.{name}", dict(spec), f"unknown keys {sorted(unknown)}; use low, high, log, type")
            if "values" in spec:
                return cls.parse(name, list(spec["values"]))
            if "low" not in spec or "high" not in spec:
                _fail(f"params.{name}", dict(spec), "a range needs low and high")
            low, high = spec["low"], spec["high"]
            t = spec.get("type", "int" if isinstance(low, int) and isinstance(high, int) else "float")
            if t not in ("float", "int"):
                _fail(f"params.{name}.type", t, "choose 'float' or 'int'")
            if not (isinstance(low, (int, float)) and isinstance(high, (int, float))) or not low < high:
                _fail(f"params.{name}", dict(spec), "needs numbers low < high")
            log = bool(spec.get("log", False))
            if log and low <= 0:
                _fail(f"params.{name}.low", low, "a log-scale range needs low > 0")
            return cls(name=name, low=float(low) if t == "float" else int(low),
                       high=float(high) if t == "float" else int(high), log=log, type=t)
        return cls(name=name, values=(spec,))

    @property
    def is_range(self) -> bool:
        """Whether the parameter is a numeric range (else a list of values)."""
        return self.values is None

    def sample(self, rng: random.Random) -> Any:
        """One value drawn with ``rng``: a uniform choice of the values, or uniform in the range (log-uniform)."""
        if not self.is_range:
            return rng.choice(list(self.values))
        if self.type == "int":
            if self.log:
                return int(round(math.exp(rng.uniform(math.log(self.low), math.log(self.high)))))
            return rng.randint(int(self.low), int(self.high))
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def suggest(self, trial) -> Any:
        """Ask an ``optuna.Trial`` for a value."""
        if not self.is_range:
            return trial.suggest_categorical(self.name, list(self.values))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def to_spec(self) -> Any:
        """The study-file spec of the parameter (:meth:`parse` inverts it)."""
        if not self.is_range:
            return list(self.values)
        return {"low": self.low, "high": self.high, "log": self.log, "type": self.type}


def trial_id(params: Mapping[str, Any], seed: int) -> str:
    """Stable id of a (configuration, seed) pair."""
    text = json.dumps({"params": {k: params[k] for k in sorted(params)}, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Trial:
    """One (configuration, seed) pair of a study: ``config`` is the full, validated run config."""

    trial_id: str
    params: dict
    seed: int
    config: RunConfig
    config_index: int = 0


@dataclass
class StudyConfig:
    """A sweep over run-config fields × seeds (see the module docstring).

    Attributes:
        name: the study's name (its folder under ``root``).
        base: the run config every trial starts from.
        params: ``{dotted field: ParamSpec}`` (lists or ranges in YAML).
        search: ``grid`` (every combination), ``random`` (``n_trials`` draws) or
            ``optuna`` (``n_trials`` TPE suggestions; ``pruner`` stops bad ones early).
        seeds: training seeds; every configuration runs once per seed.
        n_trials: number of configurations for random/optuna.
        metric: the epoch-record column optimized and tabulated (``val_acc``, ``test_acc``,
            ``train_loss``, ...).
        mode: ``max`` or ``min``.
        objective: ``final`` (last epoch) or ``best`` (best epoch) value of ``metric``.
        pruner: ``none``, ``median`` (Optuna's MedianPruner / Ray's median stopping) or
            ``asha`` (successive halving).
        grace_epochs: epochs before a trial may be pruned.
        backend: ``local`` or ``ray``.
        workers: local backend: trials run in parallel in this many processes, each
            with one torch thread (1 = in this process, one after the other). The
            Ray backend ignores it: Ray runs one trial per free CPU of its cluster.
        ray_address: Ray cluster address: the head node's GCS address ``host:port`` (``ray start --head``
            prints it; port 6379 by default) or ``auto`` (the cluster this machine is part of). ``None``: start
            Ray locally. See :mod:`workbench.sweeps.ray_cluster`.
        ray_node_ip: this driver's node address as the cluster knows it (``None``: 127.0.0.1 for a local Ray or
            a loopback ``ray_address``, else Ray's choice).
        ray_storage: a folder every node of the cluster writes at the same path (a shared filesystem) or a
            storage URI (``s3://bucket/prefix``): trials train in node-local folders and their finished run
            folders reach ``<study>/runs`` through it. ``None``: every node writes ``<study>/runs`` directly
            (a local Ray, or a study folder on a filesystem all nodes share at the same path).
        resources_per_trial: what one Ray trial reserves, ``{cpu: 1, gpu: 0}`` by default; ``gpu: 1`` gives
            each trial one GPU of its own (Ray sets ``CUDA_VISIBLE_DEVICES``); torch uses ``cpu`` threads.
        max_failures: Ray backend: times a trial whose worker or node died is started again (on any node).
        root: folder holding the study folder.
        sampler_seed: seed of the random/Optuna sampler.
        enqueue: configurations to evaluate first (e.g. a known baseline), as ``{field: value}``.
    """

    name: str
    base: RunConfig = field(default_factory=RunConfig)
    params: dict = field(default_factory=dict)
    search: str = "grid"
    seeds: list = field(default_factory=lambda: [0])
    n_trials: int | None = None
    metric: str = "val_acc"
    mode: str = "max"
    objective: str = "final"
    pruner: str = "none"
    grace_epochs: int = 1
    backend: str = "local"
    workers: int = 1
    ray_address: str | None = None
    ray_node_ip: str | None = None
    ray_storage: str | None = None
    resources_per_trial: dict | None = None
    max_failures: int = 2
    root: str = "runs/sweeps"
    sampler_seed: int = 0
    enqueue: list = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_name(self.name)
        check_field_types(self, "study", skip=("name", "base"))   # types, never coerced (see workbench.config)
        if isinstance(self.base, Mapping):
            self.base = RunConfig.from_dict(self.base)
        elif isinstance(self.base, (str, Path)):
            self.base = RunConfig.load(self.base)
        if not isinstance(self.base, RunConfig):
            _fail("base", self.base, "a RunConfig, a mapping or a config file path")
        self.params = {k: (v if isinstance(v, ParamSpec) else ParamSpec.parse(k, v)) for k, v in self.params.items()}
        if self.search not in SEARCHES:
            _fail("search", self.search, f"choose one of {SEARCHES}")
        if self.backend not in BACKENDS:
            _fail("backend", self.backend, f"choose one of {BACKENDS}")
        if self.pruner not in PRUNERS:
            _fail("pruner", self.pruner, f"choose one of {PRUNERS}")
        if self.mode not in ("max", "min"):
            _fail("mode", self.mode, "choose 'max' or 'min'")
        if self.objective not in OBJECTIVES:
            _fail("objective", self.objective, f"choose one of {OBJECTIVES}")
        if not isinstance(self.seeds, (list, tuple)) or not self.seeds or \
                any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
            _fail("seeds", self.seeds, "a non-empty list of integers")
        if len(set(self.seeds)) != len(self.seeds):
            _fail("seeds", self.seeds, "seeds must be distinct")
        self.seeds = list(self.seeds)
        if self.search == "grid":
            ranges = [p.name for p in self.params.values() if p.is_range]
            if ranges:
                _fail("params", ranges, "grid search needs value lists, not ranges (use search: random or optuna)")
        elif self.n_trials is None or isinstance(self.n_trials, bool) or not isinstance(self.n_trials, int) \
                or self.n_trials <= 0:
            _fail("n_trials", self.n_trials, f"{self.search} search needs a positive number of configurations")
        if self.pruner != "none" and self.search == "grid" and self.backend == "local":
            _fail("pruner", self.pruner, "pruning needs search: optuna (local) or the ray backend")
        if not isinstance(self.workers, int) or self.workers <= 0:
            _fail("workers", self.workers, "a positive number of processes")
        if not isinstance(self.max_failures, int) or self.max_failures < 0:
            _fail("max_failures", self.max_failures, "a non-negative number of retries")
        self.resources_per_trial = _check_resources(self.resources_per_trial)
        if not isinstance(self.grace_epochs, int) or self.grace_epochs < 0:
            _fail("grace_epochs", self.grace_epochs, "a non-negative number of epochs")
        if "train.seed" in self.params:
            _fail("params", "train.seed", "seeds are swept by 'seeds', not as a parameter")
        for e in self.enqueue:
            if not isinstance(e, Mapping):
                _fail("enqueue", e, "each entry is a mapping {field: value} of swept fields")
        self.enqueue = [dict(e) for e in self.enqueue]
        # every swept field must exist and every listed value must give a valid run config
        probe = {k: (p.values[0] if not p.is_range else p.low) for k, p in self.params.items()}
        self.config_for(probe, self.seeds[0])
        for p in self.params.values():
            for v in (p.values or ()):
                self.config_for({**probe, p.name: v}, self.seeds[0])
        for e in self.enqueue:
            unknown = set(e) - set(self.params)
            if unknown:
                _fail("enqueue", e, f"fields {sorted(unknown)} are not swept; swept: {sorted(self.params)}")
            self.config_for({**probe, **e}, self.seeds[0])

    # ----------------------------------------------------------- trials
    @property
    def path(self) -> Path:
        """The study folder ``<root>/<name>`` (absolute)."""
        return (Path(self.root) / self.name).resolve()

    def config_for(self, params: Mapping[str, Any], seed: int) -> RunConfig:
        """The run config of one trial (validated; raises ``ValueError`` naming the bad field)."""
        tag = ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in sorted(params.items()))
        ov = {**params, "train.seed": int(seed), "root": str(self.path / "runs"),
              "name": f"{self.name}[{tag}]-s{seed}" if tag else f"{self.name}-s{seed}"}
        try:
            cfg = self.base.with_overrides(ov)
        except ValueError as e:
            raise ValueError(f"study {self.name!r}: {e}") from e
        return dataclasses.replace(cfg, tags=list(cfg.tags) + [f"study:{self.name}"])

    def configurations(self) -> list[dict]:
        """The configurations of a grid or random study (Optuna proposes its own as it goes)."""
        if self.search == "grid":
            names = list(self.params)
            combos = itertools.product(*(self.params[n].values for n in names)) if names else [()]
            out = [dict(zip(names, c)) for c in combos]
        elif self.search == "random":
            rng = random.Random(self.sampler_seed)
            out = [{n: p.sample(rng) for n, p in self.params.items()} for _ in range(self.n_trials)]
        else:
            raise ValueError("optuna studies propose configurations while they run; see workbench.sweeps.run_study")
        first = [e for e in self.enqueue]
        return first + [c for c in out if c not in first]

    def trials(self) -> list[Trial]:
        """Every (configuration, seed) trial of a grid or random study, seeds innermost."""
        out = []
        for i, params in enumerate(self.configurations()):
            for s in self.seeds:
                out.append(Trial(trial_id(params, s), dict(params), s, self.config_for(params, s), i))
        return out

    # ---------------------------------------------------------- conversion
    def to_dict(self) -> dict:
        """The study as a plain dict (base config and parameter specs included); :meth:`from_dict` inverts it."""
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        d["base"] = self.base.to_dict()
        d["params"] = {k: p.to_spec() for k, p in self.params.items()}
        return d

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The study as YAML text, also written to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, relative_to: str | Path | None = None) -> "StudyConfig":
        """A study from a mapping of settings; a relative ``base`` file is looked up under ``relative_to`` first.

        Raises:
            ConfigError: not a mapping, an unknown key or no ``name``.
            ValueError: an invalid setting.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"a study must be a mapping of settings, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known, key=str)
        if unknown:
            raise ConfigError(f"unknown study key(s) {unknown}: choose from {sorted(known)}")
        d = dict(d)
        if "name" not in d:
            raise ConfigError("a study needs a name (study.name: the study's folder under root)")
        base = d.get("base")
        if isinstance(base, str) and relative_to is not None and not Path(base).is_absolute():
            cand = Path(relative_to) / base
            d["base"] = str(cand if cand.exists() else base)
        return cls(**d)

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> "StudyConfig":
        """A study from YAML text or a study file.

        A file is a ``Path``, or a one-line string naming an existing file; it is read with
        :func:`workbench.config.load_yaml_file` (safe, bounded, not empty).
        """
        s = str(text_or_path)
        if isinstance(text_or_path, Path) or (s.strip() and "\n" not in s and Path(s).exists()):
            data = load_yaml_file(text_or_path, "study file")
            if not isinstance(data, Mapping):
                raise ConfigError(f"study file {s!r} must hold a mapping of settings (name, base, params, seeds, "
                                  f"...), got {type(data).__name__}")
            return cls.from_dict(data, relative_to=Path(s).parent)
        return cls.from_dict(yaml_load(s) or {})

    @classmethod
    def load(cls, path: str | Path) -> "StudyConfig":
        """A study from the study file ``path``.

        Raises:
            FileNotFoundError: no such file.
        """
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"study file {str(p)!r} does not exist")
        return cls.from_yaml(p)


def _check_resources(res: Any) -> dict:
    """``resources_per_trial`` as ``{"cpu": float, "gpu": float, ...}`` (defaults cpu 1, gpu 0).

    Keys are Ray resource names (``cpu``, ``gpu`` or a custom resource of the cluster's nodes); values are
    non-negative numbers, ``cpu`` positive; a fraction of a GPU (``gpu: 0.5``) lets trials share one.
    """
    if res is None:
        res = {}
    if not isinstance(res, Mapping):
        _fail("resources_per_trial", res, "a mapping such as {cpu: 1, gpu: 1}")
    out = {"cpu": 1.0, "gpu": 0.0}
    for k, v in res.items():
        if not isinstance(k, str) or not k.strip():
            _fail("resources_per_trial", dict(res), "resource names are strings (cpu, gpu, or a custom resource)")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            _fail(f"resources_per_trial.{k}", v, "a non-negative number")
        out[k.lower() if k.lower() in ("cpu", "gpu") else k] = float(v)
    if out["cpu"] <= 0:
        _fail("resources_per_trial.cpu", out["cpu"], "a trial needs at least part of a CPU (> 0)")
    return out


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
