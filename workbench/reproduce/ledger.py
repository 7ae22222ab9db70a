"""The claims ledger: every headline claim of the five works, next to what the workbench measured.

:data:`CLAIMS` lists the claims (work, table/figure, the claim, the paper's number, the paper's scale, where the
measured result is stored, how to read the measured number from it, whether the paper's scale needs a GPU).
:func:`build_ledger` renders them as a Markdown page from the stored results (:mod:`workbench.reproduce.store`),
so the page is never edited by hand: change a stored number and the page changes; a claim without a stored result
is ``not attempted``. ``workbench reproduce --report`` writes it to ``docs/reproductions.md``.

Verdicts (:data:`workbench.thesis.registry.VERDICTS`): ``reproduced``, ``partial`` (a criterion weaker than the
claim, or part of it), ``not reproduced``, ``not attempted``. The verdict comes from the stored result; the ledger
never upgrades it. A row is marked ``needs a GPU`` where the paper's scale is out of reach of a CPU; the
paper-scale configurations of :mod:`workbench.reproduce.paper_scale` run those with one command.

Core module: no plotly / ipywidgets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .store import load_result

__all__ = ["Claim", "CLAIMS", "ledger_rows", "build_ledger", "write_ledger", "verdict_counts", "import_epic_results",
           "import_bilevel_results"]

VERDICT_ORDER = ("reproduced", "partial", "not reproduced", "not attempted")


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def _pp(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{round(100 * v, 2) or 0.0:+.2f} pts"


def _num(v, fmt=".3g") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


@dataclass(frozen=True)
class Claim:
    """One headline claim.

    Attributes:
        work: the citation key of the work, e.g. ``"Andriushchenko 2024"``.
        item: its table or figure, e.g. ``"Fig. 5.1"``.
        claim: the claim in one sentence.
        paper: the paper's number(s), as printed (or ``"qualitative"`` for a figure without numbers).
        paper_scale: the paper's dataset / model / seeds.
        result: the stored result's path relative to the results folder (``None``: none is produced yet).
        measured: ``metrics -> str``: the measured number(s) from the stored result's metrics.
        needs_gpu: the paper's scale is out of reach of a CPU.
        paper_scale_config: name of the paper-scale configuration that runs it on a GPU
            (:data:`workbench.reproduce.paper_scale.CONFIGS`), if any.
    """

    work: str
    item: str
    claim: str
    paper: str
    paper_scale: str
    result: str | None = None
    measured: Callable[[dict], str] | None = None
    needs_gpu: bool = False
    paper_scale_config: str | None = None


def _ci_of(m: dict, key: str, fmt: str = "+.4f") -> str:
    """``"value [lo, hi]"`` of metric ``key`` and its ``key_lo`` / ``key_hi`` interval."""
    return f"{_num(m.get(key), fmt)} [{_num(m.get(key + '_lo'), fmt)}, {_num(m.get(key + '_hi'), fmt)}]"


def _thesis(name: str) -> str:
    return f"thesis/{name}.json"


#: The headline claims of the five works, in the order of the page.
CLAIMS: tuple[Claim, ...] = (
    # ------------------------------------------------------------------ Murphy 2025
    Claim("Murphy 2025", "Table 4.3",
          "Training on sharpness-aware poisoned data (and SAM) improves test accuracy over standard training.",
          "91.64 ± 0.45 / 91.99 ± 0.15 / 91.99 ± 0.16 % (standard / poison / SAM)",
          "Fashion-MNIST, ResNet-18, 5 runs", result="murphy2025/table4.3.json",
          measured=lambda m: (f"{_pct(m.get('acc_standard'))} / {_pct(m.get('acc_poison'))} / "
                              f"{_pct(m.get('acc_sam'))}"),
          needs_gpu=True, paper_scale_config="murphy2025-table4.3"),
    Claim("Murphy 2025", "§4.2.1 + Table 4.3 (fair protocol)",
          "Training on the poison improves test accuracy over standard training given the same search budget.",
          "91.64 ± 0.45 -> 91.99 ± 0.15 % (standard -> poison)", "Fashion-MNIST, ResNet-18, 5 runs",
          result="murphy2025/fairness-digits-lenet5.json",
          measured=lambda m: (f"tuned SGD {_pct(m.get('acc_tuned'))}, poison {_pct(m.get('acc_poison'))}, SAM "
                              f"{_pct(m.get('acc_sam'))}, noise {_pct(m.get('acc_noise'))}; poison − tuned, paired "
                              f"over {_num(m.get('seeds'), '.0f')} seeds: {_pp(m.get('diff_poison'))} [95% CI "
                              f"{_pp(m.get('diff_poison_lo'))}, {_pp(m.get('diff_poison_hi'))}]")),
    Claim("Murphy 2025", "Table 4.4",
          "Without tuning, poisoned training beats clean training in 3 of 4 dataset/model pairs; SAM is worse.",
          "e.g. CIFAR-10 DenseNet: 89.87 / 90.88 / 89.56 % (clean / poison / SAM)",
          "CIFAR-10/100, DenseNet-40, WRN-16/28, 5 runs", result="murphy2025/table4.4.json",
          measured=lambda m: f"{_pct(m.get('acc_standard'))} / {_pct(m.get('acc_poison'))} / {_pct(m.get('acc_sam'))}",
          needs_gpu=True),
    Claim("Murphy 2025", "Figs. 5.1 / 5.3 / 5.4",
          "LeNet-5 on MNIST: late in training the poisoned run's validation loss is below the clean run's and below "
          "matched random noise's; SAM converges more slowly than SGD on the poison.",
          "qualitative (curves)", "MNIST (60,000 train), LeNet-5, one run per curve",
          result="murphy2025/ch5-losses.json",
          measured=lambda m: (f"late val loss poison − clean {_ci_of(m, 'fig51_late_val_loss_poison_minus_clean')}, "
                              f"poison − noise {_ci_of(m, 'fig53_late_val_loss_poison_minus_noise')}, mean val loss "
                              f"SAM − poison {_ci_of(m, 'fig54_mean_val_loss_sam_minus_poison')} (paired 95% CI); "
                              f"test acc clean / poison / SAM / noise {_pct(m.get('test_acc_clean'))} / "
                              f"{_pct(m.get('test_acc_poison'))} / {_pct(m.get('test_acc_sam'))} / "
                              f"{_pct(m.get('test_acc_noise'))}")),
    Claim("Murphy 2025", "Figs. 5.2 / 5.5-5.8",
          "Crafting: ‖Δ‖_F grows steadily; the inner iterations lower the cosine loss, largest early; at frozen "
          "earlier weights the poisons' loss rises above the clean baseline (drift); SAM's 1 − cos(g, g′) stays ≤ 0.1.",
          "‖Δ‖_F 300 -> 1,063 over 30 epochs; loss settles ~0.05; 1 − cos ≤ 0.1",
          "MNIST (60,000 train), LeNet-5, one crafting run", result="murphy2025/ch5-crafting.json",
          measured=lambda m: (f"‖Δ‖_F {_num(m.get('frob_first'), '.1f')} -> {_num(m.get('frob_saved'), '.1f')}; "
                              f"loss {_num(m.get('b_before'), '.4f')} -> {_num(m.get('b_after'), '.4f')} per batch, "
                              f"epoch means {_num(m.get('b_epoch_first'), '.4f')} (epoch 1) -> "
                              f"{_num(m.get('b_epoch_last'), '.4f')} (last); drift rising in "
                              f"{_pct(m.get('drift_rising_fraction'))}, above the clean baseline in "
                              f"{_pct(m.get('drift_above_clean_fraction'))}; SAM 1 − cos epoch means <= "
                              f"{_num(m.get('sam_max'), '.4f')}")),
    Claim("Murphy 2025", "Figs. 5.9 / 5.10",
          "The top Hessian eigenvalues of the clean and poison minima are similar (no significant sharpness change); "
          "interpolation shows similar minima, slightly more sensitive around the poison one.",
          "qualitative (bar chart, curve)", "MNIST (60,000 train), LeNet-5, one run",
          result="murphy2025/ch5-sharpness.json",
          measured=lambda m: (f"λ₁ clean {_num(m.get('test_lambda1_clean'), '.2f')} vs poison "
                              f"{_num(m.get('test_lambda1_poison'), '.2f')} on the same test images (diff "
                              f"{_ci_of(m, 'test_lambda1_diff', '+.2f')}), {_num(m.get('train_lambda1_clean'), '.2f')}"
                              f" vs {_num(m.get('train_lambda1_poison'), '.2f')} on their own training data; "
                              f"barrier (test) {_num(m.get('interp_test_barrier'), '.4f')}")),
    # ------------------------------------------------------------------ Andriushchenko 2024
    Claim("Andriushchenko 2024", "Fig. 5.1 / 5.16",
          "Only low-m worst-case SAM improves generalization substantially; random perturbations and n-SAM barely "
          "help; test error decreases as m gets smaller.",
          "qualitative (bar chart): 128-SAM clearly below ERM, random and n-SAM near ERM",
          "CIFAR-10 ResNet-18 / CIFAR-100 ResNet-34, batch 128, 200 epochs", result=_thesis("fig5.1"),
          measured=lambda m: (f"lowest-m SAM {_pct(m.get('err_low'))} vs ERM {_pct(m.get('err_erm'))} test error: "
                              f"{_pp(m.get('paired_diff_vs_erm'))}, paired 95% CI [{_pp(m.get('paired_ci_low'))}, "
                              f"{_pp(m.get('paired_ci_high'))}]; monotone in m: "
                              f"{'yes' if m.get('monotone_in_m') else 'no'}"),
          needs_gpu=True, paper_scale_config="andriushchenko2024-fig5.1"),
    Claim("Andriushchenko 2024", "Fig. 5.12",
          "With 60% label noise SAM is better along training and fits the noisy labels later.",
          "qualitative (curves)", "CIFAR-10/100 ResNets, 60% label noise",
          result=_thesis("fig5.12"),
          measured=lambda m: (f"last epoch {_pp(m.get('paired_diff_vs_erm'))} "
                              f"[CI high {_pp(m.get('paired_ci_high'))}], "
                              f"best epoch {_pp(m.get('best_paired_diff_vs_erm'))} "
                              f"[CI {_pp(m.get('best_paired_ci_low'))}"
                              f", {_pp(m.get('best_paired_ci_high'))}]; half the noisy labels fitted at epoch "
                              f"{_num(m.get('fit_epoch_low'))} (SAM) vs {_num(m.get('fit_epoch_erm'))} (ERM); "
                              f"SAM fits fewer noisy labels on "
                              f"{_pct(m.get('frac_epochs_fits_later'))} of the epochs"),
          needs_gpu=True),
    Claim("Andriushchenko 2024", "Figs. 5.6 / 5.14",
          "1-SAM reaches a much lower test loss than ERM and n-SAM on sparse regression with diagonal linear nets.",
          "qualitative (curves), orders of magnitude", "diagonal linear nets, d = 30, n = 20", result=_thesis("fig5.6"),
          measured=lambda m: (f"test loss ERM {_num(m.get('erm_test'))}, n-SAM {_num(m.get('nsam_test'))}, "
                              f"1-SAM {_num(m.get('onesam_test'))}")),
    Claim("Andriushchenko 2024", "Fig. 5.15",
          "Switching GD -> 1-SAM late escapes to a lower test loss; the solutions are linearly connected.",
          "qualitative", "diagonal linear nets", result=_thesis("fig5.15"),
          measured=lambda m: (f"GD {_num(m.get('gd_final'))} -> GD->1-SAM {_num(m.get('gd_to_1sam_final'))}; "
                              f"barrier {_num(m.get('barrier'))}")),
    Claim("Andriushchenko 2024", "Fig. 5.13", "Stochastic variants beat full-batch ones; 1-SAM SGD is the best.",
          "qualitative", "diagonal linear nets", result=_thesis("fig5.13"),
          measured=lambda m: (f"1-SAM SGD {_num(m.get('test_1-SAM SGD'))} vs 1-SAM {_num(m.get('test_1-SAM'))}, "
                              f"GD {_num(m.get('test_GD'))}")),
    Claim("Andriushchenko 2024", "Fig. 5.7", "SAM learns simpler 1-D interpolants, consistent across inits.",
          "qualitative", "12 points, 100 ReLUs, 5 inits", result=_thesis("fig5.7"),
          measured=lambda m: (f"kinks GD {_num(m.get('kinks_gd'))} vs SAM {_num(m.get('kinks_sam'))}; seed spread "
                              f"{_num(m.get('spread_gd'))} vs {_num(m.get('spread_sam'))}")),
    Claim("Andriushchenko 2024", "Figs. 6.2 / 6.11",
          "Large-step SGD: loss plateau while rank and l0 fall; longer large-step phases generalise better.",
          "plateau ~10^-1.5", "diagonal linear nets", result=_thesis("fig6.2"),
          measured=lambda m: (f"plateau 10^{_num(m.get('plateau_log10_loss_median_50'), '.2f')}, test loss small eta "
                              f"{_num(m.get('final_test_loss_small'))} vs 50% {_num(m.get('final_test_loss_50'))}")),
    Claim("Andriushchenko 2024", "Prop. 6.3.2", "SGD on the quadratic toy stabilises in the stated intervals.",
          "F in (eps_o^2, 0.17) theta*^2", "1-D toy", result=_thesis("prop6.3.2"),
          measured=lambda m: f"F in [{_num(m.get('loss_min'))}, {_num(m.get('loss_max'))}]"),
    Claim("Andriushchenko 2024", "Fig. 6.4", "A long large-step warm-up simplifies the 1-D ReLU predictor.",
          "loss plateau ~10^-0.5", "12 points, 100 ReLUs", result=_thesis("fig6.4"),
          measured=lambda m: (f"plateau 10^{_num(m.get('plateau_log10_loss_median_50'), '.2f')}, kinks "
                              f"{_num(m.get('final_kinks_2'))} -> {_num(m.get('final_kinks_50'))}")),
    Claim("Andriushchenko 2024", "Fig. 6.12", "A 500x warm-up over-regularises: the run gets stuck at a high loss.",
          "stuck at ~10^-0.5", "12 points, one init", result=_thesis("fig6.12"),
          measured=lambda m: (f"stuck fraction 400x {_pct(m.get('stuck_fraction_400'))}, 500x "
                              f"{_pct(m.get('stuck_fraction_500'))}, 600x {_pct(m.get('stuck_fraction_600'))}")),
    Claim("Andriushchenko 2024", "Fig. 6.5", "Teacher-student: large steps lower rank and FSC and test loss.",
          "qualitative", "3-layer ReLU, n = 50", result=_thesis("fig6.5"),
          measured=lambda m: (f"test loss small {_num(m.get('final_test_loss_small'))} vs 50% "
                              f"{_num(m.get('final_test_loss_50'))}")),
    Claim("Andriushchenko 2024", "Fig. 6.10", "Large steps cluster two-layer ReLU neurons on teacher directions.",
          "qualitative", "2-layer ReLU", result=_thesis("fig6.10"),
          measured=lambda m: f"angle to teacher {_num(m.get('teacher_angle_deg_small'))} deg (small step)"),
    Claim("Andriushchenko 2024", "Fig. 6.9", "The SDE reproduces SGD's rank/sparsity decrease; gradient flow does not.",
          "qualitative", "diagonal linear nets", result=_thesis("fig6.9"),
          measured=lambda m: (f"rank SGD {_num(m.get('rank_before_decay_SGD'))}, "
                              f"SDE {_num(m.get('rank_before_decay_SDE'))}"
                              f", GF {_num(m.get('rank_before_decay_gradient_flow'))}")),
    Claim("Andriushchenko 2024", "Fig. 7.1",
          "Adaptive sharpness of a linear model falls as its weights are scaled up (hence logit normalisation).",
          "qualitative", "linear model, 2 Gaussians", result=_thesis("fig7.1"),
          measured=lambda m: f"PGD {_num(m.get('pga'))} vs closed form {_num(m.get('closed_form'))} at a = 1"),
    Claim("Andriushchenko 2024", "Fig. 7.7",
          "Over 200 diagonal nets, tr of the adaptive Hessian correlates best with test loss.", "Kendall tau ~ 0.8",
          "200 nets, d = 200", result=_thesis("fig7.7"),
          measured=lambda m: f"tau = {_num(m.get('tau_trace_adaptive'), '+.2f')} ({_num(m.get('kept'), '.0f')} nets)"),
    Claim("Andriushchenko 2024", "Figs. 7.5 / 7.6",
          "Sharpness is mostly determined by the learning rate, not consistently by test error.",
          "tau(sharpness, test error) 0.30 / -0.36 across subgroups", "CIFAR-10 ResNets/ViTs",
          result=_thesis("ch7.mini"),
          measured=lambda m: (f"tau(sharpness, lr) {_num(m.get('tau_sharpness_lr'), '+.2f')}, tau(sharpness, error) "
                              f"{_num(m.get('tau_sharpness_test_error'), '+.2f')}"),
          needs_gpu=True),
    Claim("Andriushchenko 2024", "Lemma 1 / Fig. 2.2", "FGSM-RS shrinks the expected perturbation norm.",
          "~7/255 sqrt(d) at alpha = 1.25 eps", "closed form + Monte Carlo", result=_thesis("fig2.2"),
          measured=lambda m: f"bound at 1.25 eps = {_num(m.get('bound_at_1.25eps_in_255ths'), '.2f')}/255"),
    Claim("Andriushchenko 2024", "Lemma 2 / Fig. 2.9", "High gradient alignment at initialisation (all in [0.7, 1]).",
          ">= 0.7 for eps <= 0.1", "single-layer CNN", result=_thesis("fig2.9"),
          measured=lambda m: (f"alignment >= {_num(m.get('min_cos_finite'))}, final bound >= "
                              f"{_num(m.get('min_bound_final'))}")),
    Claim("Andriushchenko 2024", "Fig. 2.11", "FGSM AT overfits catastrophically; GradAlign prevents it.",
          "PGD accuracy -> ~0 for FGSM", "CIFAR-10 CNN", result=_thesis("fig2.11"),
          measured=lambda m: (f"PGD acc FGSM {_pct(m.get('fgsm_pgd_acc'))}, GradAlign "
                              f"{_pct(m.get('fgsm_gradalign_pgd_acc'))}"), needs_gpu=True),
    # ------------------------------------------------------------------ Yang 2022 (EPIC)
    Claim("Yang 2022", "Table 1", "EPIC lowers attack success of GM / BP / FC to near 0 at little accuracy cost.",
          "GM 45% -> 1%, BP 86% -> 1%, FC 40% -> 0%", "CIFAR-10 ResNet-18, 200 epochs, 100 targets",
          result="yang2022/table1.json",
          measured=lambda m: _epic_table1(m),
          needs_gpu=True),
    Claim("Yang 2022", "Table 2", "Against gradient matching, EPIC-0.1 drops success 25% -> 2.7% (40 epochs).",
          "25% -> 2.7% ± 0.6%, test acc 92.48% -> 90.92%", "CIFAR-10 ResNet-18, 40 epochs",
          result="yang2022/table2.json",
          measured=lambda m: (f"success {_pct(m.get('success_undefended'))} -> {_pct(m.get('success_epic'))}, "
                              f"test acc {_pct(m.get('acc_undefended'))} -> {_pct(m.get('acc_epic'))}"),
          needs_gpu=True, paper_scale_config="yang2022-table2"),
    # ------------------------------------------------------------------ Carnerero-Cano 2021
    Claim("Carnerero-Cano 2021", "Fig. 2 (MNIST)",
          "With lambda learned on validation data the test error stays low as poisoning grows; small lambda fails.",
          "qualitative (curves)", "MNIST 0 vs 8, 512/171 points, 10 reps", result="carnerero-cano2021/fig2.json",
          measured=lambda m: (f"test error at max poisoning: learned lambda {_pct(m.get('err_learned'))}, small "
                              f"lambda {_pct(m.get('err_small'))}")),
    Claim("Carnerero-Cano 2021", "Fig. 2 (d-f)", "The learned lambda grows with the fraction of poisoning points.",
          "qualitative", "MNIST 0 vs 8", result="carnerero-cano2021/fig2-lambda.json",
          measured=lambda m: f"lambda trend {_num(m.get('lambda_trend'), '+.3g')}"),
    # ------------------------------------------------------------------ Anonymous n.d. (course report)
    Claim("Anonymous n.d.", "Foret 2021 Table 1 (as reported)", "SAM lowers CIFAR-10/100 error of WideResNets.",
          "WRN-28-10, 200 epochs, basic aug.: CIFAR-10 3.5% -> 2.7%, CIFAR-100 18.8% -> 16.5%",
          "CIFAR, WideResNets, 200+ epochs", result="anonymous/sam_table1.json",
          measured=lambda m: f"{_pct(m.get('err_sgd'))} -> {_pct(m.get('err_sam'))}", needs_gpu=True),
    Claim("Anonymous n.d.", "Parameter corruption (Sun 2020)",
          "Gradient-based parameter corruption hurts far more than random corruption of the same size.",
          "qualitative", "ResNet-34 CIFAR-10 / ImageNet", result="anonymous/corruption.json",
          measured=lambda m: (f"n={_num(m.get('headline_n'), '.0f')}, l2 eps={_num(m.get('headline_epsilon'), 'g')}, "
                              f"SGD: loss change gradient {_num(m.get('loss_change_gradient'))} vs random "
                              f"{_num(m.get('loss_change_random'))} nats ({_num(m.get('ratio'), '.3g')}x); SAM: "
                              f"{_num(m.get('loss_change_gradient_sam'))} vs {_num(m.get('loss_change_random_sam'))}; "
                              f">= 10x every random draw in {_num(m.get('cells_holding'), '.0f')} of "
                              f"{_num(m.get('cells_tested'), '.0f')} cells (n >= 10), weakest "
                              f"{_num(m.get('min_ratio_vs_max_random'), '.3g')}x")),
)


def _scale_of(doc: dict) -> str:
    """The measured scale from a stored result's settings (dataset, model, seeds) or its ``scale`` field."""
    if doc.get("scale"):
        return str(doc["scale"])
    s = doc.get("settings", {})
    parts = []
    if s.get("dataset"):
        parts.append(str(s["dataset"]))
    if s.get("model"):
        parts.append(str(s["model"]))
    seeds = s.get("seeds")
    if isinstance(seeds, list):
        parts.append(f"{len(seeds)} seeds")
    if s.get("size"):
        parts.append(f"size {s['size']}")
    return ", ".join(parts) or "see the stored result"


def ledger_rows(results: str | Path) -> list[dict]:
    """One dict per claim: work, item, claim, paper, paper_scale, measured, scale, verdict, reason, gpu, source.

    A claim whose stored result is missing is ``not attempted``; one whose file cannot be read says so in
    ``reason`` (and is ``not attempted``).
    """
    results = Path(results)
    rows = []
    for c in CLAIMS:
        row = {"work": c.work, "item": c.item, "claim": c.claim, "paper": c.paper, "paper_scale": c.paper_scale,
               "measured": "-", "scale": "-", "verdict": "not attempted", "reason": "no stored result",
               "gpu": "needs a GPU" if c.needs_gpu else "", "source": c.result or "",
               "config": c.paper_scale_config or ""}
        path = results / c.result if c.result else None
        if path is not None and path.is_file():
            try:
                doc = load_result(path)
            except ValueError as e:
                row["reason"] = f"unreadable stored result: {e}"
            else:
                row["verdict"] = doc["verdict"]
                row["reason"] = doc.get("verdict_reason", "")
                row["scale"] = _scale_of(doc)
                try:
                    row["measured"] = c.measured(doc["metrics"]) if c.measured else "see the stored result"
                except Exception as e:  # noqa: BLE001 - a missing metric must not hide the row
                    row["measured"] = f"(metric missing: {e})"
        rows.append(row)
    return rows


def verdict_counts(rows: list[dict]) -> dict[str, int]:
    """Number of rows per verdict, in :data:`VERDICT_ORDER`."""
    return {v: sum(r["verdict"] == v for r in rows) for v in VERDICT_ORDER}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def build_ledger(results: str | Path) -> str:
    """The ledger page (Markdown) generated from the stored results under ``results``."""
    rows = ledger_rows(results)
    counts = verdict_counts(rows)
    lines = [
        "# Reproductions: the claims ledger",
        "",
        "Generated by `workbench reproduce --report` from the stored results in `results/` — do not edit by hand.",
        "Each row: a headline claim of one of the five works, the paper's number and scale, the number this",
        "workbench measured and at which scale, and the verdict of the stored result (`partial`: the measured",
        "criterion is weaker than the claim, or holds for part of it — the reason says which). `needs a GPU`: the",
        "paper's scale is out of a CPU's reach; where a paper-scale configuration exists,",
        "`workbench reproduce --paper-scale NAME` runs it and prints its expected time first.",
        "",
        "Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + f" ({len(rows)} claims).",
        "",
    ]
    for work in dict.fromkeys(r["work"] for r in rows):
        lines += [f"## [{work}]", "",
                  "| item | claim | paper | paper scale | measured | measured scale | verdict | GPU |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["work"] != work:
                continue
            verdict = f"**{r['verdict']}**" + (f": {r['reason']}" if r["reason"] else "")
            gpu = r["gpu"] + (f" (`--paper-scale {r['config']}`)" if r["config"] else "")
            lines.append("| " + " | ".join(_cell(x) for x in (r["item"], r["claim"], r["paper"], r["paper_scale"],
                                                               r["measured"], r["scale"], verdict, gpu)) + " |")
        lines.append("")
    lines += ["Stored results (one JSON file per measured claim, written by `workbench.reproduce.store.save_result`):",
              ""] + [f"- {r['item']} ([{r['work']}]): `results/{r['source']}`" for r in rows if r["source"]] + [""]
    return "\n".join(lines)


#: Short metric prefixes of the three attacks of [Yang 2022, Table 1].
EPIC_ATTACKS = {"gradient_matching": "gm", "bullseye_polytope": "bp", "feature_collision": "fc"}
_EPIC_LABELS = {"gradient_matching": "Gradient Matching (from scratch)", "bullseye_polytope": "Bullseye Polytope "
                "(transfer)", "feature_collision": "Feature Collision (transfer)"}
#: The paper's l_inf bound for the bounded attacks (GM, BP); FC runs with its soft penalty [Yang 2022, §4.1].
PAPER_EPSILON = 8 / 255
#: The paper's poison budget, a fraction of the training set [Yang 2022, §4.1].
PAPER_BUDGET = 0.01
_EPIC_IMPORTED = "workbench reproduce --report (imported from the EPIC efficacy study)"


def _save_with_scale(rep, path: Path, scale: str, command: str) -> Path:
    """:func:`~workbench.reproduce.store.save_result` ``rep`` to ``path`` with the measured ``scale`` beside it."""
    import json

    from .store import save_result

    save_result(rep, path, command=command)
    doc = load_result(path)
    doc["scale"] = scale
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def _undefended_and_epic(g):
    """The summary rows (undefended, first EPIC defense) of one attack, or ``None`` when either is missing."""
    none, epic = g[g.defense == "None"], g[g.defense.astype(str).str.startswith("EPIC")]
    return None if none.empty or epic.empty else (none.iloc[0], epic.iloc[0])


def _epic_outcome(u, e) -> str:
    """EPIC's outcome against one attack from its summary rows ``u`` (undefended) and ``e`` (EPIC).

    ``"holds"``: success cut at least 5-fold with McNemar p < 0.05 at <= 2 points of accuracy; ``"fails"``: no
    5-fold cut at that accuracy cost; ``"unresolved"``: a cut the trials cannot resolve (or no undefended success).
    """
    if not (e.success <= u.success / 5 and u.test_acc - e.test_acc <= 0.02):
        return "fails"
    return "holds" if e.p_vs_none < 0.05 and u.success > 0 else "unresolved"


def import_epic_results(results: str | Path, source: str | Path | None = None) -> Path | None:
    """Store the EPIC efficacy study's records as the ledger's [Yang 2022] Table 1 result.

    The records are read with :func:`workbench.defenses.efficacy.load_stored_results` and written to
    ``<results>/yang2022/table1.json``; returns that path, or ``None`` when there are no records. Per attack,
    only the records at the budget closest to the paper's 1 % are used.

    Per attack (metric prefix ``gm`` / ``bp`` / ``fc``: ``_success_undefended``, ``_success_epic``, ``_p_vs_none``,
    ``_acc_undefended``, ``_acc_epic``, ``_dropped_epic``, ``_trials``, ``_epsilon`` and ``_linf`` (the bound and the
    largest perturbation, in 1/255 pixel units)), EPIC
    *holds* when it cuts attack success at least 5-fold with an exact McNemar p < 0.05 and loses at most 2 points
    of test accuracy; it *fails* when it does not cut success 5-fold or costs more accuracy; otherwise (a 5-fold cut
    the trials cannot resolve, p >= 0.05) the attack is *unresolved*.

    Verdict: ``not reproduced`` when EPIC fails against a measured attack or holds against none; ``reproduced``
    only when it holds against all three attacks of Table 1, with GM and BP crafted within the paper's l_inf bound
    of 8/255; ``partial`` otherwise, with the reason (an attack not measured, unresolved, or crafted with a larger
    bound).
    The gradient-matching records also give ``<results>/yang2022/table2.json`` ([Yang 2022] Table 2).
    """
    from types import SimpleNamespace

    from ..defenses.efficacy import load_stored_results, summarize

    df, meta = load_stored_results(source)
    if df.empty:
        return None
    df = _paper_budget(df)
    s = summarize(df)
    metrics: dict = {}
    held, failed, unresolved, wider, attacks = [], [], [], [], []
    for attack, g in s.groupby("attack", sort=False):
        pair = _undefended_and_epic(g)
        if pair is None or attack not in EPIC_ATTACKS:
            continue
        u, e = pair
        k = EPIC_ATTACKS[attack]
        eps = float(df.loc[df.attack == attack, "epsilon"].max())
        attacks.append(attack)
        metrics.update({f"{k}_success_undefended": float(u.success), f"{k}_success_epic": float(e.success),
                        f"{k}_p_vs_none": float(e.p_vs_none), f"{k}_acc_undefended": float(u.test_acc),
                        f"{k}_acc_epic": float(e.test_acc), f"{k}_dropped_epic": float(e.dropped),
                        f"{k}_trials": float(u.trials), f"{k}_epsilon": 255 * eps, f"{k}_linf": 255 * float(u.linf)})
        {"fails": failed, "holds": held, "unresolved": unresolved}[_epic_outcome(u, e)].append(attack)
        if attack != "feature_collision" and eps > PAPER_EPSILON + 1e-9:
            wider.append(f"{attack} at epsilon {255 * eps:.0f}/255")
    if not attacks:
        return None
    missing = [a for a in EPIC_ATTACKS if a not in attacks]
    reasons = []
    if held:
        reasons.append("EPIC cuts attack success at least 5-fold (McNemar p < 0.05) at <= 2 points of accuracy for "
                       + ", ".join(held))
    if failed:
        reasons.append("EPIC does not cut success 5-fold, or costs > 2 points of accuracy, for " + ", ".join(failed))
    if unresolved:
        reasons.append("a 5-fold cut the trials cannot resolve (p >= 0.05 or no undefended success) for "
                       + ", ".join(unresolved))
    if wider:
        reasons.append("crafted with a larger bound than the paper's 8/255: " + ", ".join(wider))
    if missing:
        reasons.append("not measured: " + ", ".join(missing))
    verdict = ("not reproduced" if failed or not held else
               "reproduced" if len(held) == len(EPIC_ATTACKS) and not wider else "partial")
    scale = meta.get("dataset", "") + (
        ", " + ", ".join(f"{int(metrics[EPIC_ATTACKS[a] + '_trials'])} targets ({EPIC_ATTACKS[a].upper()})"
                         for a in attacks))
    rep = SimpleNamespace(name="yang2022-table1", claim="[Yang 2022] Table 1", verdict=verdict,
                          verdict_reason="; ".join(reasons), measured=str(meta.get("studies", "")), metrics=metrics,
                          settings={"attacks": attacks, "source": "workbench.defenses.efficacy stored records"},
                          notes=[str(meta.get("not_run", ""))] if meta.get("not_run") else [], seconds=0.0)
    path = _save_with_scale(rep, Path(results) / "yang2022" / "table1.json", scale, _EPIC_IMPORTED)
    _import_epic_table2(results, df, s, meta)
    return path


def _paper_budget(df):
    """Per attack, the records at the poison budget closest to the paper's 1 % ([Yang 2022, §4.1])."""
    if "budget" not in df:
        return df
    keep = []
    for _, g in df.groupby("attack", sort=False):
        b = g["budget"].astype(float)
        keep.append(g[b == b.iloc[(b - PAPER_BUDGET).abs().argmin()]])
    import pandas as pd

    return pd.concat(keep)


def _import_epic_table2(results, df, s, meta) -> Path | None:
    """[Yang 2022] Table 2 (gradient matching from scratch, EPIC-0.1) from the study's GM records, if any.

    A stored ``yang2022/table2.json`` that was not itself imported (e.g. a paper-scale GPU run) is kept.
    Verdict: ``reproduced`` when EPIC-0.1 cuts success at least 5-fold (McNemar p < 0.05) at <= 2 points of
    test accuracy with the paper's 8/255 bound; ``partial`` when that holds with a larger bound; ``not reproduced``
    when there is no 5-fold cut or the trials cannot resolve one (the claim's 25% -> 2.7% is then not shown).
    """
    from types import SimpleNamespace


    path = Path(results) / "yang2022" / "table2.json"
    if path.is_file() and "imported" not in str(load_result(path).get("command", "")):
        return None
    pair = _undefended_and_epic(s[(s.attack == "gradient_matching") & (s.scenario == "scratch")])
    if pair is None:
        return None
    u, e = pair
    eps = float(df.loc[df.attack == "gradient_matching", "epsilon"].max())
    outcome = _epic_outcome(u, e)
    cut, resolved = outcome != "fails", outcome == "holds"
    wider = eps > PAPER_EPSILON + 1e-9
    verdict = "not reproduced" if not (cut and resolved) else ("partial" if wider else "reproduced")
    why = (f"{e.defense} cuts gradient-matching success {100 * u.success:.0f}% -> {100 * e.success:.0f}% "
           f"(McNemar p = {e.p_vs_none:.2g}) at {100 * (u.test_acc - e.test_acc):+.2f} points of test accuracy"
           if cut else f"{e.defense} does not cut success 5-fold at <= 2 points of accuracy")
    if cut and not resolved:
        why += (f"; the trials cannot resolve it (p >= 0.05): the undefended attack succeeds on only "
                f"{int(round(u.success * u.trials))} of {int(u.trials)} targets, far from the paper's 25%")
    if wider:
        why += f"; crafted with epsilon {255 * eps:.0f}/255, not the paper's 8/255"
    metrics = {"success_undefended": float(u.success), "success_epic": float(e.success),
               "p_vs_none": float(e.p_vs_none), "acc_undefended": float(u.test_acc), "acc_epic": float(e.test_acc),
               "dropped_epic": float(e.dropped), "trials": float(u.trials), "epsilon": 255 * eps,
               "epochs": float(df.loc[df.attack == "gradient_matching", "epochs"].max())}
    rep = SimpleNamespace(name="yang2022-table2", claim="[Yang 2022] Table 2", verdict=verdict, verdict_reason=why,
                          measured=str(meta.get("studies", "")), metrics=metrics,
                          settings={"source": "workbench.defenses.efficacy stored records (gradient matching)"},
                          notes=[], seconds=0.0)
    return _save_with_scale(rep, path, f"{meta.get('dataset', '')}, {int(u.trials)} targets, victims from scratch "
                            f"{int(metrics['epochs'])} epochs", _EPIC_IMPORTED)


def _epic_table1(m: dict) -> str:
    parts = []
    for attack, k in EPIC_ATTACKS.items():
        if f"{k}_success_undefended" not in m:
            continue
        bound = "soft penalty" if attack == "feature_collision" else f"epsilon {_num(m.get(k + '_epsilon'), '.0f')}/255"
        parts.append(f"{_EPIC_LABELS[attack]}, {bound}, largest |delta| {_num(m.get(k + '_linf'), '.0f')}/255: success "
                     f"{_pct(m.get(k + '_success_undefended'))} -> {_pct(m.get(k + '_success_epic'))} "
                     f"(exact McNemar p = {_num(m.get(k + '_p_vs_none'), '.2g')}), test acc "
                     f"{_pct(m.get(k + '_acc_undefended'))} -> {_pct(m.get(k + '_acc_epic'))}, "
                     f"{_num(m.get(k + '_dropped_epic'), '.0f')} training examples dropped")
    return "; ".join(parts) or "n/a"


def import_bilevel_results(results: str | Path, source: str | Path | None = None) -> Path | None:
    """Store the bilevel study's records as the ledger's [Carnerero-Cano 2021] Fig. 2 result.

    The records are ``<results>/bilevel/mnist-10k-0v8/records.csv``, written by :mod:`workbench.bilevel.study`;
    the result is ``<results>/carnerero-cano2021/fig2.json``; ``None`` when there are no records.

    Measured at the largest poisoning fraction (means over the repetitions): the test error with the learned λ
    (``rmd``) and with a small fixed λ, and the trend of the learned log λ with the fraction (Kendall τ of the
    per-fraction means). Two results, one per ledger row: ``fig2.json`` is ``reproduced`` when the learned λ's test
    error rises by at most half as much as the small λ's (from no poisoning to the largest fraction), ``partial``
    when it rises less but more than half as much;
    ``fig2-lambda.json`` when log λ grows with the fraction (τ >= 0.5); ``not reproduced`` otherwise.
    """
    import json
    from types import SimpleNamespace

    import pandas as pd


    src = Path(source) if source is not None else Path(results) / "bilevel" / "mnist-10k-0v8"
    if not (src / "records.csv").is_file():
        return None
    d = pd.read_csv(src / "records.csv")
    if not {"rmd", "small"} <= set(d.strategy):
        return None
    g = d.groupby(["strategy", "fraction"]).agg(err=("test_error", "mean"), lam=("log_lam", "mean"))
    rmd, small = g.loc["rmd"].sort_index(), g.loc["small"].sort_index()
    fmax = float(rmd.index.max())
    rise_rmd = float(rmd.err.iloc[-1] - rmd.err.iloc[0])
    rise_small = float(small.err.iloc[-1] - small.err.iloc[0])
    from ..thesis.ch7 import kendall_tau

    tau = kendall_tau(rmd.index.to_numpy(), rmd.lam.to_numpy()) if len(rmd) >= 2 else float("nan")
    err_ok, lam_ok = rise_rmd <= 0.5 * rise_small, tau >= 0.5
    reps = int(d.rep.nunique())
    metrics = {"err_learned": float(rmd.err.iloc[-1]), "err_small": float(small.err.iloc[-1]), "fraction_max": fmax,
               "rise_learned": rise_rmd, "rise_small": rise_small, "lambda_trend": tau,
               "log_lambda_first": float(rmd.lam.iloc[0]), "log_lambda_last": float(rmd.lam.iloc[-1]),
               "reps": float(reps)}
    why_err = (f"from 0 to {fmax:.1%} poisoning the learned lambda's test error rises {rise_rmd:+.2%} vs "
               f"{rise_small:+.2%} for a small lambda" + ("" if err_ok else " (lower, but more than half as much: "
                                                              "the learned lambda mitigates, it does not keep the "
                                                              "error low)" if rise_rmd < rise_small else ""))
    why_lam = (f"log lambda {metrics['log_lambda_first']:.2f} -> {metrics['log_lambda_last']:.2f} as poisoning grows "
               f"(Kendall tau with the fraction {tau:+.2f})")
    settings = (json.loads((src / "settings.json").read_text()).get("settings", {})
                if (src / "settings.json").is_file() else {})
    err_verdict = "reproduced" if err_ok else "partial" if rise_rmd < rise_small else "not reproduced"
    for name, verdict, why in (("fig2.json", err_verdict, why_err),
                               ("fig2-lambda.json", "reproduced" if lam_ok else "not reproduced", why_lam)):
        out = SimpleNamespace(name=f"carnerero-cano2021-{name[:-5]}", claim="[Carnerero-Cano 2021] Fig. 2",
                              verdict=verdict, verdict_reason=why, measured=why,
                              metrics=metrics,
                              settings={"dataset": "mnist-10k 0 vs 8", "model": "L2 logistic regression",
                                        "n_train": settings.get("n_train"), "n_val": settings.get("n_val")},
                              notes=[], seconds=0.0)
        path = _save_with_scale(out, Path(results) / "carnerero-cano2021" / name,
                                f"MNIST 0 vs 8 from mnist-10k, {settings.get('n_train', '?')}/"
                                f"{settings.get('n_val', '?')} train/val, {reps} repetitions",
                                "workbench reproduce --report --import-studies (bilevel study records)")
    return path


def write_ledger(results: str | Path = "results", out: str | Path = "docs/reproductions.md") -> Path:
    """Write :func:`build_ledger` of ``results`` to ``out`` (parents created); returns ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_ledger(results))
    return out
