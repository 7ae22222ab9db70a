"""A corpus of bad inputs: each is refused with one line ``error: ...`` naming the field or file,
exit status 2, no traceback, and nothing written.

Config files, ``--set`` overrides, command-line mistakes, broken run folders and checkpoints, study files and a
results pack. Every case runs the CLI in this process (``workbench.cli.main``), snapshots the whole test folder
before and after (names, sizes, modification times) and checks that nothing changed; a few run again through the
installed ``workbench`` console script to show that the real entry point behaves the same. No training starts for
a bad input: the only training is the module fixture's two tiny runs (1 epoch of an MLP on 128 digits).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from workbench.cli import main

REPO = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "workbench"

TINY = {"data.max_train": 128, "model.name": "mlp", "model.hidden_sizes": [16], "train.batch_size": 32,
        "train.device": "cpu"}


class _Evil:
    """Unpickling this would create a folder: proof that a checkpoint was never unpickled."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def _snapshot(base: Path) -> dict:
    out = {}
    for p in sorted(base.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(base))] = (p.is_dir(), st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny configs, a finished run, a run that diverged in epoch 1, copies with broken checkpoints and configs,
    and a good study file."""
    from workbench.presets import quickstart_config
    from workbench.training import Trainer

    base = tmp_path_factory.mktemp("bad-inputs")
    runs = base / "runs"
    good = quickstart_config("sgd", epochs=1, root=str(base / "cfgroot")).with_overrides(TINY)
    good.save(base / "good.yaml")
    sam = good.with_overrides({"optim.name": "sam"})
    sam.save(base / "sam.yaml")
    done = Trainer(good.with_overrides({"root": str(runs)})).run()
    assert done.status == "finished"
    div = Trainer(good.with_overrides({"root": str(runs), "optim.lr": 1e8, "optim.momentum": 0.0,
                                       "train.epochs": 3})).run()
    assert div.status == "diverged" and not (div.run_path / "checkpoints" / "last.pt").exists()

    w = {"base": base, "good": base / "good.yaml", "sam": base / "sam.yaml", "run": done.run_path,
         "diverged": div.run_path}
    ck = torch.load(done.run_path / "checkpoints" / "last.pt", weights_only=True)

    def variant(name, fn):
        dst = base / "variants" / name
        shutil.copytree(done.run_path, dst)
        fn(dst, dst / "checkpoints" / "last.pt")
        w[name] = dst

    variant("ck_missing", lambda d, p: p.unlink())
    variant("ck_garbage", lambda d, p: p.write_bytes(b"this is not a checkpoint\n" * 10))
    variant("ck_truncated", lambda d, p: p.write_bytes(p.read_bytes()[:1000]))
    variant("ck_pickle", lambda d, p: torch.save({**ck, "model": _Evil(str(base / "PWNED"))}, p))
    variant("ck_keys", lambda d, p: torch.save({"format": ck["format"], "epoch": 1}, p))
    variant("ck_list", lambda d, p: torch.save([1, 2, 3], p))
    variant("ck_othermodel", lambda d, p: torch.save({**ck, "model": {"weight": torch.zeros(3, 3)}}, p))
    variant("cfg_corrupt", lambda d, p: (d / "config.json").write_text('{"data": '))
    variant("cfg_invalid", lambda d, p: (d / "config.json").write_text(
        json.dumps(_set(good.to_dict(), {"optim.lr": -1}))))
    variant("cfg_wrongtype", lambda d, p: (d / "config.json").write_text(
        json.dumps(_set(good.to_dict(), {"data.normalize": "false"}))))

    study = {"name": "ok-study", "base": str(base / "good.yaml"), "params": {"optim.lr": [0.05]}, "seeds": [0]}
    (base / "study.yaml").write_text(yaml.safe_dump(study))
    w["study"] = base / "study.yaml"
    w["good_dict"] = good.to_dict()
    w["study_dict"] = study
    (base / "afile").write_text("a file, not a folder\n")
    w["afile"] = base / "afile"
    return w


def _set(d: dict, dotted: dict) -> dict:
    """``d`` with raw (unvalidated) dotted replacements."""
    d = json.loads(json.dumps(d))
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        t = d
        for p in parents:
            t = t[p]
        t[leaf] = value
    return d


@dataclass
class Bad:
    argv: list                       # with {good}, {sam}, {run}, {dir}, {root}, {study}, {afile}, run variants
    names: list                      # substrings of the error line (the field or file, the value, the rule)
    files: dict = field(default_factory=dict)   # name -> text, bytes, dict (a config: YAML), or None (a folder)
    rc: int = 2


def cfg(**dotted):
    """A tiny good config with raw dotted replacements, as a dict written as YAML."""
    return ("cfg", {k.replace("__", "."): v for k, v in dotted.items()})


def study(**changes):
    return ("study", changes)


LAUGHS = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
          'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n'
          'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n'
          'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ntags: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n')

RUN = ["run", "{dir}/c.yaml", "--root", "{root}", "--no-progress"]
SET = ["run", "{good}", "--root", "{root}", "--no-progress", "--set"]
SWEEP = ["sweep", "{dir}/s.yaml", "--root", "{root}", "--no-progress"]
RESUME = ["resume", "--epochs", "2", "--no-progress"]
ANALYZE = ["--what", "trace", "--device", "cpu", "--no-progress"]

CASES = {
    # ------------------------------------------------------------------------------------------- config files
    "yaml-syntax": Bad(RUN, ["c.yaml", "not valid YAML", "line 2"], {"c.yaml": "optim: [1, 2\n"}),
    "yaml-python-apply": Bad(RUN, ["c.yaml", "python/object/apply"],
                             {"c.yaml": "!!python/object/apply:os.makedirs ['{dir}/PWNED']\n"}),
    "yaml-python-object": Bad(RUN, ["c.yaml", "python/object"],
                              {"c.yaml": "name: !!python/object:workbench.config.RunConfig {}\n"}),
    "yaml-python-name": Bad(RUN, ["c.yaml", "python/name"], {"c.yaml": "name: !!python/name:os.system\n"}),
    "empty-file": Bad(RUN, ["c.yaml", "is empty"], {"c.yaml": ""}),
    "comment-only-file": Bad(RUN, ["c.yaml", "is empty"], {"c.yaml": "# nothing here\n\n   \n# still nothing\n"}),
    "top-level-list": Bad(RUN, ["c.yaml", "mapping", "list"], {"c.yaml": "- 1\n- 2\n"}),
    "top-level-scalar": Bad(RUN, ["c.yaml", "mapping", "str"], {"c.yaml": "hello\n"}),
    "unknown-top-key": Bad(RUN, ["foo"], {"c.yaml": cfg(foo=1)}),
    "unknown-nested-key": Bad(RUN, ["optim.lrr"], {"c.yaml": cfg(optim__lrr=0.1)}),
    "section-not-mapping": Bad(RUN, ["optim", "mapping"], {"c.yaml": cfg(optim=5)}),
    "normalize-string": Bad(RUN, ["data.normalize", "'false'", "boolean"], {"c.yaml": cfg(data__normalize="false")}),
    "download-string": Bad(RUN, ["data.download", "'no'", "boolean"], {"c.yaml": cfg(data__download="no")}),
    "deterministic-string": Bad(RUN, ["train.deterministic", "'no'", "boolean"],
                                {"c.yaml": cfg(train__deterministic="no")}),
    "tags-string": Bad(RUN, ["tags", "'abc'", "list of strings"], {"c.yaml": cfg(tags="abc")}),
    "tags-int": Bad(RUN, ["tags", "5", "list of strings"], {"c.yaml": cfg(tags=5)}),
    "tags-ints": Bad(RUN, ["tags", "[1, 2]", "list of strings"], {"c.yaml": cfg(tags=[1, 2])}),
    "epochs-string": Bad(RUN, ["train.epochs", "'3'", "integer"], {"c.yaml": cfg(train__epochs="3")}),
    "epochs-bool": Bad(RUN, ["train.epochs", "True", "integer"], {"c.yaml": cfg(train__epochs=True)}),
    "epochs-float": Bad(RUN, ["train.epochs", "2.5", "integer"], {"c.yaml": cfg(train__epochs=2.5)}),
    "lr-string": Bad(RUN, ["optim.lr", "'0.1'", "number"], {"c.yaml": cfg(optim__lr="0.1")}),
    "lr-bool": Bad(RUN, ["optim.lr", "True", "number"], {"c.yaml": cfg(optim__lr=True)}),
    "lr-zero": Bad(RUN, ["optim.lr", "> 0"], {"c.yaml": cfg(optim__lr=0)}),
    "lr-negative": Bad(RUN, ["optim.lr", "-0.1", "> 0"], {"c.yaml": cfg(optim__lr=-0.1)}),
    "lr-nan": Bad(RUN, ["optim.lr", "nan"], {"c.yaml": "optim:\n  lr: .nan\n"}),
    "rho-negative": Bad(RUN, ["optim.rho", "-0.1", ">= 0"], {"c.yaml": cfg(optim__rho=-0.1)}),
    "batch-size-zero": Bad(RUN, ["train.batch_size", "> 0"], {"c.yaml": cfg(train__batch_size=0)}),
    "epochs-zero": Bad(RUN, ["train.epochs", "> 0"], {"c.yaml": cfg(train__epochs=0)}),
    "epochs-negative": Bad(RUN, ["train.epochs", "-3", "> 0"], {"c.yaml": cfg(train__epochs=-3)}),
    "m-with-sgd": Bad(RUN, ["optim.m", "16", "sam"], {"c.yaml": cfg(optim__m=16)}),
    "device-cuda-abc": Bad(RUN, ["train.device", "cuda:abc"], {"c.yaml": cfg(train__device="cuda:abc")}),
    "device-tpu": Bad(RUN, ["train.device", "tpu"], {"c.yaml": cfg(train__device="tpu")}),
    "device-cuda-negative": Bad(RUN, ["train.device", "cuda:-1"], {"c.yaml": cfg(train__device="cuda:-1")}),
    "name-int": Bad(RUN, ["name", "5", "string"], {"c.yaml": cfg(name=5)}),
    "root-int": Bad(RUN, ["root", "5", "string"], {"c.yaml": cfg(root=5)}),
    "hidden-sizes-string": Bad(RUN, ["model.hidden_sizes", "'512'", "list of integers"],
                               {"c.yaml": cfg(model__hidden_sizes="512")}),
    "classes-string": Bad(RUN, ["data.classes", "'abc'", "list of integers"], {"c.yaml": cfg(data__classes="abc")}),
    "milestones-string": Bad(RUN, ["schedule.milestones", "'abc'", "list of integers"],
                             {"c.yaml": cfg(schedule__milestones="abc")}),
    "max-train-zero": Bad(RUN, ["data.max_train", "> 0"], {"c.yaml": cfg(data__max_train=0)}),
    "betas-scalar": Bad(RUN, ["optim.betas", "0.9", "list of numbers"], {"c.yaml": cfg(optim__betas=0.9)}),
    "seed-float": Bad(RUN, ["train.seed", "1.5", "integer"], {"c.yaml": cfg(train__seed=1.5)}),
    "max-grad-norm-string": Bad(RUN, ["train.max_grad_norm", "'none'", "number"],
                                {"c.yaml": cfg(train__max_grad_norm="none")}),
    "data-root-int": Bad(RUN, ["data.root", "5", "string"], {"c.yaml": cfg(data__root=5)}),
    "width-string": Bad(RUN, ["model.width", "'1.0'", "number"], {"c.yaml": cfg(model__width="1.0")}),
    "poison-from-epoch-string": Bad(RUN, ["data.poison_from_epoch", "'2'", "integer"],
                                    {"c.yaml": cfg(data__poison_from_epoch="2")}),
    "billion-laughs": Bad(RUN, ["c.yaml", "alias"], {"c.yaml": LAUGHS}),
    "recursive-alias": Bad(RUN, ["c.yaml", "alias"], {"c.yaml": "tags: &a [x, *a]\n"}),
    "deep-nesting": Bad(RUN, ["c.yaml", "nest"], {"c.yaml": "tags: " + "[" * 3000 + "]" * 3000 + "\n"}),
    "duplicate-key": Bad(RUN, ["c.yaml", "duplicate", "train"], {"c.yaml": "train: {epochs: 1}\ntrain: {epochs: 5}\n"}),
    "directory-named-yaml": Bad(RUN, ["c.yaml", "folder"], {"c.yaml": None}),
    "missing-file": Bad(RUN, ["c.yaml", "does not exist"]),
    "unknown-extension": Bad(["run", "{dir}/c.txt", "--root", "{root}"], ["c.txt", "extension"],
                             {"c.txt": "optim: {lr: 0.1}\n"}),
    "json-syntax": Bad(["run", "{dir}/c.json", "--root", "{root}"], ["c.json", "not valid JSON"],
                       {"c.json": '{"optim": {"lr": 0.1}'}),
    "json-wrong-type": Bad(["run", "{dir}/c.json", "--root", "{root}"], ["data.normalize", "'false'", "boolean"],
                           {"c.json": '{"data": {"normalize": "false"}}'}),
    "json-empty": Bad(["run", "{dir}/c.json", "--root", "{root}"], ["c.json", "is empty"], {"c.json": " \n"}),
    "not-utf8": Bad(RUN, ["c.yaml", "UTF-8"], {"c.yaml": b"optim:\n  lr: \xff\xfe0.1\n"}),
    "poison-missing": Bad(RUN, ["nope.pt", "does not exist"], {"c.yaml": cfg(data__poison="{dir}/nope.pt")}),
    "config-root-is-file": Bad(["run", "{dir}/c.yaml", "--no-progress"], ["root", "afile", "not a folder"],
                               {"c.yaml": cfg(root="{afile}")}),
    # ------------------------------------------------------------------------------------- --set overrides
    "set-quoted-false": Bad(SET + ["data.normalize='false'"], ["data.normalize", "'false'", "boolean"]),
    "set-quoted-yes": Bad(SET + ["data.download='yes'"], ["data.download", "'yes'", "boolean"]),
    "set-quoted-no": Bad(SET + ["train.deterministic='no'"], ["train.deterministic", "'no'", "boolean"]),
    "set-epochs-abc": Bad(SET + ["train.epochs=abc"], ["train.epochs", "'abc'", "integer"]),
    "set-epochs-true": Bad(SET + ["train.epochs=true"], ["train.epochs", "True", "integer"]),
    "set-no-equals": Bad(SET + ["optim.lr"], ["optim.lr", "key=value"]),
    "set-empty-key": Bad(SET + ["=5"], ["=5", "empty key"]),
    "set-unknown-section": Bad(SET + ["foo.bar=1"], ["foo"]),
    "set-unknown-key": Bad(SET + ["optim.lrr=0.1"], ["optim.lrr"]),
    "set-into-scalar": Bad(SET + ["optim.lr.x=1"], ["optim.lr.x"]),
    "set-device": Bad(SET + ["train.device=cuda:abc"], ["train.device", "cuda:abc"]),
    "set-m-with-sgd": Bad(SET + ["optim.m=8"], ["optim.m", "sam"]),
    "set-tags-string": Bad(SET + ["tags=abc"], ["tags", "'abc'", "list of strings"]),
    "set-tags-mixed": Bad(SET + ["tags=[a, 5]"], ["tags", "list of strings"]),
    "set-classes-one": Bad(SET + ["data.classes=[0]"], ["data.classes", "two"]),
    "set-bad-yaml-value": Bad(SET + ["optim.lr=[1"], ["optim.lr=[1"]),
    "set-batch-zero": Bad(SET + ["train.batch_size=0"], ["train.batch_size", "> 0"]),
    "set-rho-negative": Bad(SET + ["optim.rho=-1"], ["optim.rho", ">= 0"]),
    "set-section-scalar": Bad(SET + ["optim=5"], ["optim", "mapping"]),
    # ------------------------------------------------------------------------------------ command line
    "run-no-config": Bad(["run"], ["config"]),
    "unknown-command": Bad(["frobnicate"], ["frobnicate"]),
    "unknown-option": Bad(["run", "{good}", "--bogus"], ["--bogus"]),
    "root-is-file": Bad(["run", "{good}", "--root", "{afile}", "--no-progress"], ["afile", "not a folder"]),
    "root-under-file": Bad(["run", "{good}", "--root", "{afile}/sub", "--no-progress"], ["afile", "not a folder"]),
    "resume-epochs-abc": Bad(["resume", "{run}", "--epochs", "abc"], ["--epochs", "'abc'"]),
    "resume-epochs-zero": Bad(["resume", "{run}", "--epochs", "0"], ["--epochs", "'0'", ">= 1"]),
    "sweep-workers-zero": Bad(["sweep", "{study}", "--workers", "0", "--root", "{root}"], ["--workers", "'0'", ">= 1"]),
    "sweep-workers-negative": Bad(["sweep", "{study}", "--workers", "-2", "--root", "{root}"], ["--workers", "-2"]),
    "sweep-missing-study": Bad(["sweep", "{dir}/nope.yaml", "--root", "{root}"], ["nope.yaml", "does not exist"]),
    "sweep-set-bad": Bad(["sweep", "{study}", "--root", "{root}", "--set", "data.normalize='false'"],
                         ["data.normalize", "boolean"]),
    "analyze-device-tpu": Bad(["analyze", "{run}", "--what", "trace", "--device", "tpu"], ["--device", "tpu"]),
    "analyze-device-cuda-abc": Bad(["analyze", "{run}", "--what", "trace", "--device", "cuda:abc"],
                                   ["--device", "cuda:abc"]),
    "analyze-what-unknown": Bad(["analyze", "{run}", "--what", "nope"], ["--what", "nope"]),
    "analyze-split-unknown": Bad(["analyze", "{run}", "--what", "trace", "--split", "nope"], ["--split", "nope"]),
    "analyze-count-negative": Bad(["analyze", "{run}"] + ANALYZE + ["--count", "-5"], ["--count", "-5"]),
    "analyze-set-no-equals": Bad(["analyze", "{run}"] + ANALYZE + ["--set", "k"], ["--set", "'k'", "key=value"]),
    "analyze-interpolate-one-run": Bad(["analyze", "{run}", "--what", "interpolate", "--no-progress"],
                                       ["interpolate", "two runs"]),
    "analyze-missing-run": Bad(["analyze", "{dir}/nope"] + ANALYZE, ["nope", "does not exist"]),
    "analyze-missing-checkpoint-name": Bad(["analyze", "{run}"] + ANALYZE + ["--checkpoint", "nope.pt"],
                                           ["nope.pt", "does not exist"]),
    "craft-with-sgd": Bad(["craft", "{good}", "--root", "{root}", "--no-progress"], ["optim.name", "sam"]),
    "craft-iterations-zero": Bad(["craft", "{sam}", "--root", "{root}", "--poison", "iterations=0"],
                                 ["iterations"]),
    "craft-poison-unknown": Bad(["craft", "{sam}", "--root", "{root}", "--poison", "foo=1"], ["foo"]),
    "craft-poison-no-equals": Bad(["craft", "{sam}", "--root", "{root}", "--poison", "iterations"],
                                  ["--poison", "key=value"]),
    "craft-set-bad": Bad(["craft", "{sam}", "--root", "{root}", "--set", "optim.lr=-1"], ["optim.lr"]),
    "craft-root-is-file": Bad(["craft", "{sam}", "--root", "{afile}"], ["afile", "not a folder"]),
    "resume-not-a-run": Bad(["resume", "{dir}"], ["is not a run folder"], {"notes.txt": "hi\n"}),
    "resume-missing": Bad(["resume", "{dir}/nope"], ["nope", "does not exist"]),
    # ---------------------------------------------------------------------------- run folders, checkpoints
    "resume-ck-missing": Bad(RESUME + ["{ck_missing}"], ["last.pt", "does not exist"]),
    "resume-ck-garbage": Bad(RESUME + ["{ck_garbage}"], ["last.pt", "corrupt"]),
    "resume-ck-truncated": Bad(RESUME + ["{ck_truncated}"], ["last.pt", "corrupt"]),
    "resume-ck-pickle": Bad(RESUME + ["{ck_pickle}"], ["last.pt", "plain-tensor"]),
    "resume-ck-missing-keys": Bad(RESUME + ["{ck_keys}"], ["last.pt", "model"]),
    "resume-ck-list": Bad(RESUME + ["{ck_list}"], ["last.pt", "list"]),
    "resume-ck-other-model": Bad(RESUME + ["{ck_othermodel}"], ["last.pt", "model"]),
    "resume-diverged": Bad(RESUME + ["{diverged}"], ["last.pt", "does not exist", "diverged"]),
    "resume-config-corrupt": Bad(RESUME + ["{cfg_corrupt}"], ["config.json"]),
    "resume-config-invalid": Bad(RESUME + ["{cfg_invalid}"], ["optim.lr"]),
    "resume-config-wrong-type": Bad(RESUME + ["{cfg_wrongtype}"], ["data.normalize", "boolean"]),
    "resume-finished": Bad(["resume", "{run}", "--no-progress"], ["train.epochs", "larger"]),
    "analyze-ck-garbage": Bad(["analyze", "{ck_garbage}"] + ANALYZE, ["last.pt", "corrupt"]),
    "analyze-ck-pickle": Bad(["analyze", "{ck_pickle}"] + ANALYZE, ["last.pt", "plain-tensor"]),
    "analyze-ck-missing-keys": Bad(["analyze", "{ck_keys}"] + ANALYZE, ["last.pt", "input_shape"]),
    "analyze-ck-list": Bad(["analyze", "{ck_list}"] + ANALYZE, ["last.pt", "list"]),
    "analyze-ck-other-model": Bad(["analyze", "{ck_othermodel}"] + ANALYZE, ["last.pt", "model"]),
    "analyze-ck-missing": Bad(["analyze", "{ck_missing}"] + ANALYZE, ["last.pt", "does not exist"]),
    "analyze-diverged": Bad(["analyze", "{diverged}"] + ANALYZE, ["last.pt", "does not exist"]),
    "analyze-config-corrupt": Bad(["analyze", "{cfg_corrupt}"] + ANALYZE, ["config.json"]),
    "analyze-config-wrong-type": Bad(["analyze", "{cfg_wrongtype}"] + ANALYZE, ["data.normalize", "boolean"]),
    # ------------------------------------------------------------------------------------------ study files
    "study-yaml-syntax": Bad(SWEEP, ["s.yaml", "not valid YAML"], {"s.yaml": "name: [x\n"}),
    "study-empty": Bad(SWEEP, ["s.yaml", "is empty"], {"s.yaml": "# a study\n"}),
    "study-unknown-key": Bad(SWEEP, ["study", "foo"], {"s.yaml": study(foo=1)}),
    "study-seeds-string": Bad(SWEEP, ["study.seeds", "'abc'"], {"s.yaml": study(seeds="abc")}),
    "study-workers-string": Bad(SWEEP, ["study.workers", "'2'", "integer"], {"s.yaml": study(workers="2")}),
    "study-workers-bool": Bad(SWEEP, ["study.workers", "True", "integer"], {"s.yaml": study(workers=True)}),
    "study-workers-zero": Bad(SWEEP, ["study.workers", "0"], {"s.yaml": study(workers=0)}),
    "study-base-bad-value": Bad(SWEEP, ["optim.lr"], {"s.yaml": study(base={"optim": {"lr": -1}})}),
    "study-base-wrong-type": Bad(SWEEP, ["data.normalize", "boolean"],
                                 {"s.yaml": study(base={"data": {"normalize": "false"}})}),
    "study-param-unknown": Bad(SWEEP, ["foo"], {"s.yaml": study(params={"foo.bar": [1]})}),
    "study-param-bad-value": Bad(SWEEP, ["optim.lr", "'abc'"], {"s.yaml": study(params={"optim.lr": ["abc"]})}),
    "study-n-trials-string": Bad(SWEEP, ["study.n_trials", "'5'", "integer"],
                                 {"s.yaml": study(search="random", n_trials="5")}),
    "study-python-tag": Bad(SWEEP, ["s.yaml", "python/object"],
                            {"s.yaml": "name: x\nbase: !!python/object/apply:os.makedirs ['{dir}/PWNED']\n"}),
    "study-no-name": Bad(SWEEP, ["name"], {"s.yaml": study(name=None)}),
    "study-base-missing": Bad(SWEEP, ["nope.yaml", "does not exist"], {"s.yaml": study(base="{dir}/nope.yaml")}),
    "study-grace-float": Bad(SWEEP, ["study.grace_epochs", "1.5", "integer"], {"s.yaml": study(grace_epochs=1.5)}),
    "study-name-path": Bad(SWEEP, ["study.name", "../x"], {"s.yaml": study(name="../x")}),
    "study-metric-int": Bad(SWEEP, ["study.metric", "5", "string"], {"s.yaml": study(metric=5)}),
    "study-billion-laughs": Bad(SWEEP, ["s.yaml", "alias"], {"s.yaml": "name: x\n" + LAUGHS.replace("tags", "seeds")}),
    "study-base-is-folder": Bad(SWEEP, ["c.yaml", "folder"], {"c.yaml": None, "s.yaml": study(base="{dir}/c.yaml")}),
    # ----------------------------------------------------------------------------------------- results pack
    "pack-index-garbage": Bad(["pack", "load", "{dir}/pk", "--runs", "{root}"], ["index.json"],
                              {"pk": None, "pk/index.json": "{not json"}),
    "pack-index-list": Bad(["pack", "load", "{dir}/pk", "--runs", "{root}"], ["index.json"],
                           {"pk": None, "pk/index.json": "[1, 2]"}),
}


def _fill(s: str, w: dict, d: Path) -> str:
    for key in ("good", "sam", "run", "diverged", "study", "afile", "ck_missing", "ck_garbage", "ck_truncated",
                "ck_pickle", "ck_keys", "ck_list", "ck_othermodel", "cfg_corrupt", "cfg_invalid", "cfg_wrongtype"):
        s = s.replace("{" + key + "}", str(w[key]))
    return s.replace("{dir}", str(d)).replace("{root}", str(d / "out"))


def _prepare(name: str, case: Bad, w: dict) -> tuple[Path, list[str]]:
    d = w["base"] / "cases" / name
    (d / "out").mkdir(parents=True)
    for fname, content in case.files.items():
        p = d / fname
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
            continue
        if isinstance(content, tuple):
            kind, changes = content
            if kind == "cfg":
                data = _set(w["good_dict"], {k: v for k, v in changes.items() if "." in k})
                data.update({k: v for k, v in changes.items() if "." not in k})
            else:
                data = {**w["study_dict"], **changes}
                data = {k: v for k, v in data.items() if v is not None}
            content = yaml.safe_dump(data, sort_keys=False)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(_fill(content, w, d))
    return d, [_fill(a, w, d) for a in case.argv]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one 'error:' line:\n{err}"
    assert "Traceback" not in err and "%|" not in err, err
    return lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_with_one_line(name, world, capsys):
    case = CASES[name]
    d, argv = _prepare(name, case, world)
    before = _snapshot(world["base"])
    try:
        rc = main(argv)
    except SystemExit as e:   # main returns its status; it never exits
        pytest.fail(f"main raised SystemExit({e.code!r}) instead of returning")
    cap = capsys.readouterr()
    assert rc == case.rc, f"exit status {rc}, expected {case.rc}; stderr: {cap.err}"
    line = _one_error_line(cap.err)
    for word in case.names:
        assert _fill(word, world, d) in line, f"{word!r} not in {line!r}"
    assert "weights_only=False" not in line and "weights_only" not in line.replace("weights_only=True", "")
    assert _snapshot(world["base"]) == before, "something was written"
    assert not (world["base"] / "PWNED").exists() and not (d / "PWNED").exists()


def test_corpus_size():
    assert len(CASES) >= 60


def test_debug_flag_shows_the_traceback(world, capsys):
    d, argv = _prepare("debug", Bad(RUN, [], {"c.yaml": cfg(data__normalize="false")}), world)
    with pytest.raises(ValueError, match="data.normalize"):
        main(["--debug"] + argv)
    with pytest.raises(ValueError, match="data.normalize"):
        main(argv + ["--debug"])   # after the command too
    assert main(argv) == 2
    assert "data.normalize" in _one_error_line(capsys.readouterr().err)


def test_help_returns_0(capsys):
    assert main(["--help"]) == 0
    assert "usage" in capsys.readouterr().out


def test_console_script_behaves_the_same(world):
    """The installed ``workbench`` entry point: the same one line, exit status 2, nothing written."""
    names = ["yaml-syntax", "tags-int", "sweep-workers-zero", "resume-ck-pickle", "billion-laughs", "run-no-config"]
    procs = {}
    for name in names:
        d, argv = _prepare(f"proc-{name}", CASES[name], world)
        procs[name] = (d, subprocess.Popen([str(EXE)] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}))
    before = None
    for name, (d, p) in procs.items():
        out, err = p.communicate(timeout=180)
        assert p.returncode == 2, (name, err)
        line = _one_error_line(err)
        for word in CASES[name].names:
            assert _fill(word, world, d) in line, (name, line)
        assert not any((d / "out").iterdir())
    assert not (world["base"] / "PWNED").exists()
    del before
