"""Stage `loso`: leave-one-source-out, i.e. how the detector treats a hospital it never saw.

Leave-one-family-out asks whether the detector spots a kind of fake it never trained on; the
external evaluation also brings REAL radiographs from other hospitals and devices, so this stage
asks the mirror question. Each run trains the detector (``loso.steps``, like the LOFO runs)
without one group of real sources: their real images AND every fake derived from them are left
out (:func:`.fit.train_detector` ``exclude_sources``; the generators' output stays). A reference
run with nothing left out, of the same length, separates "unseen source" from "short run".

Each run is then scored image by image through the agent's chain (decode -> grid tiles -> model
-> the shipped aggregate): its 1 % FPR threshold comes from the real validation images of the
sources that run saw (at most ``loso.val_reals``); per source group we report the real test
images' false-positive rate and median logit, and the AUC / TPR of the test fakes made from that
group's images. This is the figure that tells a site what to expect before it enrols.

Site calibration (what ``edge-agent learn`` offers a device, edge_agent/site_calibration.py):
from N authentic validation images of a held-out group (``loso.calibration_n``, ``loso.calibration_draws``
random draws each) the threshold is raised by the largest excess of their 50/75/90 % logit
percentiles over the run's reference validation reals, and scored on that group's test images
against the run's own threshold; a plain median shift is reported beside it.

Runs may be spread over two processes (run ``--stage loso`` twice): a run being trained holds an
``flock`` on ``loso-detector-<group>.lock`` and the other process takes the next group. Scoring
happens in the process that finds every run complete; scores are memoised by checkpoint sha256.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from edge_agent.manifest import sha256_file
from edge_agent.site_calibration import QUANTILES, raise_by

from .config import Config
from .evaluate import _auc, thresholds_from_reals
from .fakes import read_images
from .fit import load_detector, train_detector
from .imaging import load_grey
from .scoring import aggregate, image_tiles, tile_scores, torch_runner

__all__ = ["DEFAULT_LOSO", "train_loso", "score_loso", "render_loso"]

# Used when the config has no ``loso:`` section (configs up to 1.5.0 predate this stage).
DEFAULT_LOSO: dict[str, Any] = {
    "steps": 2000,
    "groups": {"hannover": ["hannover-jpg", "hannover-png"], "kermany": ["kermany"], "sim": ["sim"]},
    "val_reals": 400,
    "calibration_n": [10, 20, 50, 0],  # 0 = every validation real image of the site
    "calibration_draws": 20,
    "tag": "loso",  # checkpoint names <tag>-detector-<group>-last.pt (another recipe: another tag)
}
REFERENCE = "none"


def _settings(cfg: Config) -> dict[str, Any]:
    return {**DEFAULT_LOSO, **(cfg.loso or {})}


def _runs(cfg: Config) -> dict[str, frozenset[str]]:
    groups = _settings(cfg)["groups"]
    return {REFERENCE: frozenset(), **{g: frozenset(s) for g, s in groups.items()}}


def _finished(ck: Path, steps: int) -> bool:
    return ck.exists() and torch.load(ck, weights_only=False)["step"] >= steps


def train_loso(work: Path, cfg: Config, log: Callable[[str], None]) -> None:
    """Train every run not yet complete and not being trained by another process."""
    steps = int(_settings(cfg)["steps"])
    for group, excluded in _runs(cfg).items():
        tag = f"{_settings(cfg)['tag']}-detector-{group}"
        ck = work / f"{tag}-last.pt"
        if _finished(ck, steps):
            continue
        with open(work / f"{tag}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"loso: {group} is being trained by another process, next")
                continue
            log(f"loso: training without {sorted(excluded) or 'nothing (reference)'}")
            train_detector(work, cfg, log, tag=tag, exclude_sources=excluded, steps=steps)
            # the run is complete: no process needs its lock again (a late one resumes at the
            # last step and stops at once), so do not leave an empty file behind
            Path(lock.name).unlink(missing_ok=True)


def _complete(work: Path, cfg: Config) -> dict[str, Path] | None:
    steps = int(_settings(cfg)["steps"])
    cks = {g: work / f"{_settings(cfg)['tag']}-detector-{g}-last.pt" for g in _runs(cfg)}
    return cks if all(_finished(ck, steps) for ck in cks.values()) else None


def _aggregate_of(work: Path, cfg: Config) -> tuple[str, int]:
    """``loso.aggregate`` ([method, k]) if set, else the shipped model's (eval.json of this
    version), else the shipped manifest's."""
    if "aggregate" in (cfg.loso or {}):
        method, k = cfg.loso["aggregate"]
        return str(method), int(k)
    ev = work / f"eval-{cfg.version}" / "eval.json"
    if ev.exists():
        a = json.loads(ev.read_text())["aggregate"]
        return a["method"], int(a["topk"])
    man = Path("models") / f"{cfg.name}-{cfg.version}" / "manifest.json"
    t = json.loads(man.read_text())["tiling"]
    return t["aggregate"], int(t["topk"])


def _logits(rows: list[dict[str, str]], cks: dict[str, Path], method: str, k: int, tile: int, max_tiles: int,
            log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    """Image logit of every row under every run (each image decoded once)."""
    runners = {g: torch_runner(load_detector(ck)) for g, ck in cks.items()}
    out: dict[str, dict[str, float]] = {g: {} for g in cks}
    for i, r in enumerate(rows):
        tiles, _ = image_tiles(load_grey(r["path"]), tile, max_tiles)
        for g, run in runners.items():
            out[g][r["id"]] = aggregate(tile_scores(tiles, run)[0], method, k)
        if (i + 1) % 200 == 0:
            log(f"loso: scored {i + 1}/{len(rows)} images")
    return out


def _group_metrics(reals: np.ndarray, fakes: np.ndarray, thr: float) -> dict[str, float]:
    y = np.r_[np.zeros(len(reals)), np.ones(len(fakes))]
    return {"n_real": int(len(reals)), "n_fake": int(len(fakes)),
            "median_real_logit": float(np.median(reals)),
            "fpr": float((reals >= thr).mean()),
            "tpr": float((fakes >= thr).mean()) if len(fakes) else float("nan"),
            "auc": _auc(y, np.r_[reals, fakes])}


def _calibration(site_val: np.ndarray, ref: np.ndarray, thr: float, reals: np.ndarray, fakes: np.ndarray,
                 ns: list[int], draws: int, seed: int) -> dict[str, Any]:
    """The agent's site calibration (edge_agent/site_calibration.py) from N authentic site images
    drawn at random: threshold raised by max(0, max over QUANTILES of site_q - reference_q); beside
    it, for comparison, the plain median shift in both directions."""
    rng = np.random.default_rng(seed)
    ref_q = np.quantile(ref, QUANTILES)
    out: dict[str, Any] = {"global": {"fpr": float((reals >= thr).mean()), "tpr": float((fakes >= thr).mean())}}
    for n in ns:
        n_eff = len(site_val) if n == 0 or n >= len(site_val) else n
        rule: dict[str, list[float]] = {"fpr": [], "tpr": [], "offset": []}
        median: dict[str, list[float]] = {"fpr": [], "tpr": []}
        for _ in range(draws if n_eff < len(site_val) else 1):
            pick = site_val[rng.choice(len(site_val), size=n_eff, replace=False)]
            off = raise_by(np.quantile(pick, QUANTILES).tolist(), ref_q.tolist())  # the agent's rule itself
            rule["offset"].append(off)
            rule["fpr"].append(float((reals >= thr + off).mean())); rule["tpr"].append(float((fakes >= thr + off).mean()))
            d = float(np.median(pick) - ref_q[0])
            median["fpr"].append(float((reals >= thr + d).mean())); median["tpr"].append(float((fakes >= thr + d).mean()))
        out[f"n{'all' if n == 0 else n}"] = {
            "n": n_eff, "draws": len(rule["fpr"]), "offset_median": float(np.median(rule["offset"])),
            "fpr_mean": float(np.mean(rule["fpr"])), "fpr_p90": float(np.quantile(rule["fpr"], 0.9)),
            "tpr_mean": float(np.mean(rule["tpr"])),
            "median_shift": {"fpr_mean": float(np.mean(median["fpr"])), "fpr_p90": float(np.quantile(median["fpr"], 0.9)),
                             "tpr_mean": float(np.mean(median["tpr"]))}}
    return out


def score_loso(work: Path, cfg: Config, log: Callable[[str], None]) -> dict[str, Any] | None:
    """Score the complete runs; writes ``eval-<version>/loso.json`` (and into eval.json when
    present). None when not every run is complete or another process is scoring them."""
    cks = _complete(work, cfg)
    if cks is None:
        log("loso: not every run is complete yet (another process may still train one); rerun --stage loso --force")
        return None
    with open(work / f"{_settings(cfg)['tag']}-scoring.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("loso: another process is scoring the runs")
            return None
        scored = _score(work, cfg, cks, log)
        Path(lock.name).unlink(missing_ok=True)
        return scored


def _score(work: Path, cfg: Config, cks: dict[str, Path], log: Callable[[str], None]) -> dict[str, Any]:
    st = _settings(cfg)
    method, k = _aggregate_of(work, cfg)
    runs = _runs(cfg)
    rows = read_images(work)
    group_of = {s: g for g, ss in st["groups"].items() for s in ss}
    val_reals = [r for r in rows if r["split"] == "val" and r["label"] == "0"]
    test = [r for r in rows if r["split"] == "test" and (r["label"] == "0" or r["source"] in group_of)]
    memo_path = work / f"{st['tag']}-scores.json"
    memo = json.loads(memo_path.read_text()) if memo_path.exists() else {}
    key = hashlib.sha256(json.dumps([sorted((g, sha256_file(c)) for g, c in cks.items()), method, k,
                                     [r["id"] for r in val_reals + test]]).encode()).hexdigest()
    if key not in memo:
        memo = {key: _logits(val_reals + test, cks, method, k, cfg.tiles["tile"], cfg.tiles["max_tiles"], log)}
        memo_path.write_text(json.dumps(memo))
    lg = memo[key]
    res: dict[str, Any] = {"steps": int(st["steps"]), "aggregate": [method, k], "groups": st["groups"], "runs": {}}
    for run, excluded in runs.items():
        seen = [r for r in val_reals if r["source"] not in excluded]
        pick = np.random.default_rng(cfg.seed).choice  # the same draw procedure for every run
        seen = [seen[i] for i in sorted(pick(len(seen), size=min(int(st["val_reals"]), len(seen)), replace=False))]
        ref = np.array([lg[run][r["id"]] for r in seen])
        thr = thresholds_from_reals(ref)["suspicious_logit"]
        entry: dict[str, Any] = {"excluded": sorted(excluded), "threshold_logit": thr, "n_val_real": len(seen),
                                 "val_real_median_logit": float(np.median(ref)), "sources": {}}
        by_group: dict[str, tuple[list[float], list[float]]] = {}
        for r in test:
            g = group_of.get(r["source"], "other (" + r["source"] + ")")
            by_group.setdefault(g, ([], []))[int(r["label"])].append(lg[run][r["id"]])
        for g, (re_, fa) in sorted(by_group.items()):
            if re_:
                entry["sources"][g] = _group_metrics(np.array(re_), np.array(fa), thr)
        # site calibration of the held-out group (and, in the reference run, of every group: what it
        # does to a site the model knows)
        entry["calibration"] = {}
        for g in ([run] if run != REFERENCE else list(st["groups"])):
            site_val = np.array([lg[run][r["id"]] for r in val_reals if group_of.get(r["source"]) == g])
            re_, fa = by_group[g]
            entry["calibration"][g] = _calibration(site_val, ref, thr, np.array(re_), np.array(fa),
                                                   list(st["calibration_n"]), int(st["calibration_draws"]), cfg.seed)
        res["runs"][run] = entry
        log(f"loso: {run}: " + ", ".join(f"{g} FPR {v['fpr']:.3f} AUC {v['auc']:.3f}" for g, v in entry["sources"].items()))
    ev = work / f"eval-{cfg.version}"
    ev.mkdir(parents=True, exist_ok=True)
    (ev / "loso.json").write_text(json.dumps(res, indent=1))
    if (ev / "eval.json").exists():
        full = json.loads((ev / "eval.json").read_text())
        full["loso"] = res
        (ev / "eval.json").write_text(json.dumps(full, indent=1))
    return res


def _p(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f} %"


def render_loso(res: dict[str, Any]) -> str:
    """The report's section (markdown) from ``loso.json``."""
    L = ["## Leave-one-source-out: real images from a hospital or device the detector never saw\n",
         f"Runs of {res['steps']} detector steps (like the LOFO runs), each without one group of real sources "
         "(its real images and every fake derived from them); `none` is the reference run of the same length. "
         "Threshold: 1 % FPR on the real validation images of the sources the run saw. Per group: false-positive "
         "rate and median logit of its real test images; AUC and TPR of the test fakes made from its images. "
         "Reproduce: `python -m models.train --data DATA --work WORK --stage loso`, started twice (the second process "
         "trains the next run; whichever finds all runs complete scores them; ~25 min on 2 cores).\n",
         "| run (held out) | group | real FPR @1 % thr | median real logit (thr) | AUC own fakes | TPR own fakes |",
         "|---|---|---|---|---|---|"]
    for run, e in res["runs"].items():
        for g, v in e["sources"].items():
            mark = " **(unseen)**" if g == run else ""
            L.append(f"| {run} | {g}{mark} | {_p(v['fpr'])} | {v['median_real_logit']:+.2f} ({e['threshold_logit']:+.2f}) | "
                     f"{v['auc']:.3f} | {_p(v['tpr'])} |")
    L.append("\nSite calibration as `edge-agent learn` does it (edge_agent/site_calibration.py): the threshold raised by "
             "max(0, max over the 50/75/90 % percentiles of (site - reference)) of the model's logits on N authentic "
             "validation images of the site vs the run's reference validation reals; mean over random draws of N "
             "(p90 = 90th percentile of the FPR over draws), scored on that site's test images. Last column: a plain "
             "median shift in both directions, for comparison.\n")
    cols = [k for k in next(iter(next(iter(res["runs"].values()))["calibration"].values())) if k != "global"]
    ro = "n20" if "n20" in cols else cols[-1]
    L.append("| run | site | shipped thr: FPR / TPR | " + " | ".join(f"N={k[1:]}: FPR (p90) / TPR" for k in cols)
             + f" | median shift, N={ro[1:]}: FPR / TPR |")
    L.append("|---|---|---|" + "---|" * (len(cols) + 1))
    for run, e in res["runs"].items():
        for g, c in e["calibration"].items():
            cells = [f"{_p(c[k]['fpr_mean'])} ({_p(c[k]['fpr_p90'])}) / {_p(c[k]['tpr_mean'])}" for k in cols]
            ms = c[ro]["median_shift"]
            L.append(f"| {run} | {g}{' **(unseen)**' if g == run else ''} | {_p(c['global']['fpr'])} / "
                     f"{_p(c['global']['tpr'])} | " + " | ".join(cells) + f" | {_p(ms['fpr_mean'])} / {_p(ms['tpr_mean'])} |")
    return "\n".join(L) + "\n"
