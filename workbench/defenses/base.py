r"""Train-time data-selection defenses: the shared round schedule, bookkeeping and resume state.

A :class:`SelectionDefense` is called by the :class:`~workbench.training.Trainer`
at the start of every epoch (``maybe_select``). It runs a *selection round* at
epochs ``warmup, warmup + period, warmup + 2·period, ...`` ([Yang 2022,
Alg. 1]: "Train the network for K epochs on V. for every T epochs do ... V = V \ Z
... Train on V for T epochs"), each time choosing, among the examples still
kept (``V``), the ones to drop for good. The trainer then trains on the kept
examples only until the next round; dropped examples are never seen again.

``epoch`` counts the epochs already trained (0 before the first one), so a round
"at epoch K" happens after exactly K warm-up epochs.

Bookkeeping, keyed by dataset index (``IndexedTensorDataset.index``):

* ``kept_indices`` — the kept set ``V`` (sorted LongTensor), ``None`` before the first round;
* ``rounds`` — one dict per round: ``round, epoch, n_before, n_kept, n_dropped,
  n_poison_dropped, n_poison_kept, seconds``;
* ``log`` — a DataFrame with one row per dropped example per round: ``round, epoch,
  index, label, is_poison, cluster_size, score``;
* ``clusters`` — per round, the gradient-cluster size of every example of ``V``
  (EPIC only; used by [Yang 2022, Figs. 4–5]).

``state_dict`` holds only tensors and plain containers (``torch.load(weights_only=True)``
reads it back) and goes into the trainer's checkpoint, so runs resume exactly.

No UI imports.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

__all__ = ["SelectionDefense", "LOG_COLUMNS", "ROUND_KEYS"]

LOG_COLUMNS = ("round", "epoch", "index", "label", "is_poison", "cluster_size", "score")
ROUND_KEYS = ("round", "epoch", "n_before", "n_kept", "n_dropped", "n_poison_dropped", "n_poison_kept", "seconds")
_STATE_FORMAT = 1


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name}={value!r} is invalid: must be an integer >= {minimum}")
    return int(value)


class SelectionDefense:
    """Base class: drop training examples in rounds during training (the schedule of [Yang 2022, Alg. 1]).

    Args:
        period: ``T``, epochs between rounds (>= 1).
        warmup: ``K``, epochs trained on all data before the first round (>= 0).
        stop_after: no round at epochs ``>= stop_after`` (None: rounds until the end),
            like the EPIC code's ``stop_after``.
        seed: seed of anything random in a subclass (the built-in selections are deterministic).
        batch_size: examples per inference pass when computing scores / gradient proxies.

    Subclasses implement :meth:`_select`. Attributes are described in the module docstring.
    """

    name = "defense"

    def __init__(self, *, period: int = 1, warmup: int = 0, stop_after: int | None = None, seed: int = 0,
                 batch_size: int = 512):
        self.period = _check_int("period", period, 1)
        self.warmup = _check_int("warmup", warmup, 0)
        self.stop_after = None if stop_after is None else _check_int("stop_after", stop_after, 0)
        self.seed = int(seed)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.kept_indices: Tensor | None = None
        self.poison_indices = torch.zeros(0, dtype=torch.long)
        self.rounds: list[dict] = []
        self._log_rows: list[dict] = []
        self.clusters: list[dict] = []
        self._last_epoch: int | None = None

    # ------------------------------------------------------------ settings
    def config(self) -> dict:
        """The constructor arguments (JSON-able), for records and ``repr``."""
        return {"period": self.period, "warmup": self.warmup, "stop_after": self.stop_after, "seed": self.seed}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"

    def set_poison_indices(self, indices) -> None:
        """Declare which dataset indices are poisons (only for the logs: ``is_poison`` columns).

        The defense never uses this to select; it only labels what was dropped.
        """
        idx = torch.as_tensor(np.asarray(indices if not isinstance(indices, Tensor) else indices.cpu()),
                              dtype=torch.long).reshape(-1)
        self.poison_indices = torch.unique(idx)

    def is_round(self, epoch: int) -> bool:
        """Whether a selection round happens at the start of epoch ``epoch`` (0-based, epochs done)."""
        if epoch < self.warmup or (epoch - self.warmup) % self.period:
            return False
        if self.stop_after is not None and epoch >= self.stop_after:
            return False
        return self._last_epoch != epoch

    # ------------------------------------------------------------ selection
    def _select(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> dict:
        """Choose the examples to drop among the kept ones.

        Args:
            model: the model being trained (must be left unchanged, modes included).
            x: inputs of the kept examples ``[n, ...]``.
            y: their labels ``[n]``.
            index: their dataset indices ``[n]``.
            epoch: epochs trained so far.

        Returns:
            A dict with ``"drop"`` (bool ``[n]``), optionally ``"cluster_size"`` (int ``[n]``,
            the gradient-cluster size of every example) and ``"score"`` (float ``[n]``).
        """
        raise NotImplementedError

    def maybe_select(self, model: nn.Module, train, epoch: int) -> Tensor | None:
        """Run a selection round if one is due at ``epoch``.

        Args:
            model: the model being trained; used in eval mode (BatchNorm running statistics)
                and left exactly as it was, training mode included.
            train: the full training split (:class:`~workbench.data.IndexedTensorDataset`);
                only its examples in ``kept_indices`` are candidates.
            epoch: number of epochs trained so far.

        Returns:
            The kept dataset indices (sorted ``LongTensor``, CPU) after this round, or ``None``
            when no round happens at this epoch (also when it already happened, e.g. after a resume).
        """
        if not self.is_round(int(epoch)):
            return None
        t0 = time.perf_counter()
        all_index = train.index.detach().cpu()
        if self.kept_indices is None:
            pos = torch.arange(len(all_index))
        else:
            pos = torch.nonzero(torch.isin(all_index, self.kept_indices)).squeeze(1)
        dev = train.x.device
        pos_d = pos.to(dev)
        x, y, index = train.x[pos_d], train.y[pos_d], all_index[pos]
        out = self._select(model, x, y.to(dev), index, int(epoch))
        drop = torch.as_tensor(out["drop"], dtype=torch.bool).cpu()
        if drop.shape != index.shape:
            raise RuntimeError(f"{type(self).__name__}._select returned a drop mask of shape {tuple(drop.shape)}, "
                               f"expected {tuple(index.shape)}")
        dropped = index[drop]
        kept = torch.sort(index[~drop]).values
        yc = y.detach().cpu()
        is_poison = torch.isin(index, self.poison_indices)
        rnd = len(self.rounds)
        cs = out.get("cluster_size")
        cs = None if cs is None else torch.as_tensor(cs).long().cpu()
        score = out.get("score")
        score = None if score is None else torch.as_tensor(score).double().cpu()
        for i in torch.nonzero(drop).squeeze(1).tolist():
            self._log_rows.append({"round": rnd, "epoch": int(epoch), "index": int(index[i]), "label": int(yc[i]),
                                   "is_poison": bool(is_poison[i]),
                                   "cluster_size": int(cs[i]) if cs is not None else -1,
                                   "score": float(score[i]) if score is not None else float("nan")})
        if cs is not None:
            self.clusters.append({"round": rnd, "epoch": int(epoch), "index": index.clone(), "label": yc.clone(),
                                  "cluster_size": cs.clone()})
        self.kept_indices = kept
        self._last_epoch = int(epoch)
        n_pd = int((drop & is_poison).sum())
        self.rounds.append({"round": rnd, "epoch": int(epoch), "n_before": int(len(index)), "n_kept": int(len(kept)),
                            "n_dropped": int(len(dropped)), "n_poison_dropped": n_pd,
                            "n_poison_kept": int(is_poison.sum()) - n_pd, "seconds": time.perf_counter() - t0})
        return kept.clone()

    # ------------------------------------------------------------ views
    @property
    def log(self) -> pd.DataFrame:
        """One row per dropped example per round (columns :data:`LOG_COLUMNS`)."""
        df = pd.DataFrame(self._log_rows, columns=list(LOG_COLUMNS))
        return df.astype({"round": "int64", "epoch": "int64", "index": "int64", "label": "int64",
                          "is_poison": "bool", "cluster_size": "int64", "score": "float64"})

    @property
    def dropped_indices(self) -> Tensor:
        """All dataset indices dropped so far (sorted)."""
        return torch.sort(torch.tensor([r["index"] for r in self._log_rows], dtype=torch.long)).values

    def rounds_frame(self) -> pd.DataFrame:
        """:attr:`rounds` as a DataFrame (columns :data:`ROUND_KEYS`)."""
        return pd.DataFrame(self.rounds, columns=list(ROUND_KEYS))

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: kept set, rounds, log, clusters (tensors and plain containers)."""
        log = self.log
        return {
            "format": _STATE_FORMAT, "name": self.name, "config": dict(self.config()),
            "kept_indices": None if self.kept_indices is None else self.kept_indices.clone(),
            "poison_indices": self.poison_indices.clone(),
            "rounds": [dict(r) for r in self.rounds],
            "log": {c: torch.as_tensor(log[c].to_numpy().copy()) for c in LOG_COLUMNS},
            "clusters": [dict(c) for c in self.clusters],
            "last_epoch": self._last_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises:
            ValueError: the state is from another kind of defense or another format.
        """
        if state.get("format") != _STATE_FORMAT or state.get("name") != self.name:
            raise ValueError(f"defense state of {state.get('name')!r} (format {state.get('format')!r}) cannot be "
                             f"loaded into {type(self).__name__} (name {self.name!r})")
        if state.get("config") != self.config():
            raise ValueError(f"defense state was saved with settings {state.get('config')} but this "
                             f"{type(self).__name__} has {self.config()}: construct it with the same arguments")
        kept = state.get("kept_indices")
        self.kept_indices = None if kept is None else torch.as_tensor(kept).long().clone()
        self.poison_indices = torch.as_tensor(state["poison_indices"]).long().clone()
        self.rounds = [dict(r) for r in state["rounds"]]
        cols = {c: torch.as_tensor(state["log"][c]).tolist() for c in LOG_COLUMNS}
        n = len(cols["index"])
        self._log_rows = [{c: cols[c][i] for c in LOG_COLUMNS} for i in range(n)]
        for r in self._log_rows:
            r["is_poison"] = bool(r["is_poison"])
        self.clusters = [dict(c) for c in state.get("clusters", [])]
        self._last_epoch = state.get("last_epoch")
