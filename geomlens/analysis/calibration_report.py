"""summary.json content of the calibration (`geomlens.analysis.calibration`): the fields every
result record gets (``temperature``, ``overall.jsd_calibrated``, ``calibration``), the uniform
reference record, and their definitions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from geomlens.analysis.calibration import UNIFORM, CalibrationResult
from geomlens.analysis.config import AnalyzeConfig
from geomlens.metrics.stats import bootstrap_ci


def ci(values: np.ndarray, cfg: AnalyzeConfig) -> dict[str, float]:
    """{mean, ci_low, ci_high}: the mean over segments and its 95% percentile bootstrap CI."""
    mean, lo, hi = bootstrap_ci(np.asarray(values, dtype=np.float64), n_bootstrap=cfg.n_bootstrap,
                                seed=cfg.seed)
    return {"mean": float(mean), "ci_low": float(lo), "ci_high": float(hi)}


def _select(frame: pd.DataFrame, key: tuple) -> pd.DataFrame:
    if frame.empty:
        return frame
    hidden, target, score = key
    if score == UNIFORM:
        return frame[frame.score == UNIFORM]
    return frame[(frame.hidden == hidden) & (frame.target == target) & (frame.score == score)]


def add_calibration(entry: dict[str, Any], cal: CalibrationResult | None, cfg: AnalyzeConfig) -> None:
    """Give one result record its ``temperature`` (None when not calibrated), its
    ``overall``/``per_domain`` ``jsd_calibrated`` and its ``calibration`` counts."""
    key = (entry["hidden"], entry["target"], entry["score"])
    fit = None if cal is None else cal.fits.get(key)
    entry["temperature"] = None if fit is None else fit.tau
    if cal is None:
        return
    entry["calibration"] = dict(cal.counts)
    if fit is not None:
        entry["calibration"].update(fit_jsd=fit.jsd, at_search_bound=fit.at_bound,
                                    n_evals=fit.n_evals)
    rows = _select(cal.per_segment, key)
    if rows.empty:
        return
    entry["overall"]["jsd_calibrated"] = ci(rows["jsd_calibrated"].to_numpy(), cfg)
    for dom, sub in rows.groupby("domain", sort=True):
        if str(dom) in entry.get("per_domain", {}):
            entry["per_domain"][str(dom)]["jsd_calibrated"] = ci(sub["jsd_calibrated"].to_numpy(), cfg)


def uniform_record(cal: CalibrationResult, cfg: AnalyzeConfig) -> dict[str, Any]:
    """The reference record: score "uniform", hidden and target None, temperature None,
    ``jsd`` over every segment, ``jsd_calibrated`` over the eval sample."""
    uni = cal.uniform
    entry: dict[str, Any] = {"hidden": None, "target": None, "score": UNIFORM,
                             "n_segments": int(len(uni)),
                             "overall": {"jsd": ci(uni["jsd"].to_numpy(), cfg)},
                             "per_domain": {str(dom): {"jsd": ci(sub["jsd"].to_numpy(), cfg)}
                                            for dom, sub in uni.groupby("domain", sort=True)},
                             "controls": {}}
    add_calibration(entry, cal, cfg)
    return entry


def calibration_definitions(cfg: AnalyzeConfig) -> dict[str, str]:
    """The definitions of the calibration fields (summary.json ``definitions``)."""
    if not cfg.calibrate:
        return {"temperature": "null: calibration off (calibrate = false)"}
    sample = lambda k: "all positions" if k is None else f"{k} positions"  # noqa: E731
    return {
        "calibration_split": "segments shuffled (torch.randperm, seed = seed + 11); the first "
                             f"round({cfg.calibration_fraction} n) (>= 1, <= n - 1) fit the "
                             "temperatures, the others evaluate them; runs with one segment are "
                             "not calibrated",
        "calibration_sample": f"fit: {sample(cfg.calibration_positions)} of the calibration "
                              f"segments, eval: {sample(cfg.calibration_eval_positions)} of the "
                              "evaluation segments, uniformly without replacement (same "
                              "generator); p and s recomputed from the stored d_model vectors "
                              "with the model's unembed and soft-cap and the analysis's scores",
        "temperature": "tau minimising the mean over the fit sample of JSD(p || softmax(s/tau)), "
                       "s = the logits of the score's q (tau = 1 gives the raw jsd): grid over "
                       "ln tau, one point per decade from tau0/10 to 10 tau0, tau0 = median "
                       "std(s)/std(ln p), extended to at most 10^6 tau0 while the best point is "
                       "at an edge (calibration.at_search_bound), then bounded Brent between the "
                       "best point's neighbours to 0.01 in ln tau",
        "jsd_calibrated": f"JSD(p || softmax(s/tau)) in {cfg.jsd_base} on the eval sample: mean "
                          "per evaluation segment, then mean over evaluation segments with a 95% "
                          f"percentile bootstrap CI over them ({cfg.n_bootstrap} resamples)",
        "uniform": "reference record (hidden/target null): JSD(p || uniform over the vocabulary); "
                   "jsd over every position and segment like the scores' jsd, jsd_calibrated "
                   "over the eval sample (a uniform q does not depend on tau; temperature null)",
    }
