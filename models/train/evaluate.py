"""Stage `evaluate`: image-level metrics on held-out data, exactly through the agent's chain.

Everything is scored per IMAGE (decode -> grid tiles -> model -> aggregate), never per tile:
thresholds come from the real-only validation split (1% and 0.1% FPR), metrics from the test
split (patients never used for training or thresholds), the third-party GAN samples and the
eight pydicom-data CR files. Results go to ``eval-<version>/eval.json`` (+ ROC plot); the
report is rendered from that file by the `ship` stage.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from edge_agent.decode import decode_path
from edge_agent.manifest import sha256_file
from edge_agent.site_calibration import QUANTILES

from .augment import poisson_gaussian
from .config import Config
from .detector import count_macs
from .fakes import FAMILIES, read_images
from .fit import _baseline_arrays, load_baseline, load_detector
from .imaging import container_of, encode_like, load_grey, load_grey_bytes, resize_float
from .scoring import Runner, aggregate, cam_peak_hit, image_tiles, ort_runner, ov_runner, tile_scores, torch_runner

__all__ = ["evaluate_all", "compare_all", "thresholds_from_reals", "sub_kind"]

AGGS = (("mean", 1), ("max", 1), ("topk_mean", 2), ("topk_mean", 4))


def _sig(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def thresholds_from_reals(real_logits: np.ndarray) -> dict[str, float]:
    """Logit thresholds at 1% and 0.1% FPR on real-only images (higher empirical quantile)."""
    s = np.sort(real_logits)
    q = lambda f: float(s[min(len(s) - 1, int(np.ceil((1 - f) * len(s))) - 1)])  # noqa: E731
    sus = q(0.01)
    syn = max(q(0.001), sus)
    # strictly above the quantile real image: ">= threshold" must reject it
    return {"suspicious_logit": float(np.nextafter(sus, np.inf)), "synthetic_logit": float(np.nextafter(syn, np.inf))}


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else float("nan")


class _TileCache:
    """Decoded grid tiles per image id, so several models score identical inputs. Kept in float32,
    exactly the agent's input: float16 (up to 1.5.0) moved image logits by up to 0.19 (median 0.02)
    and the 1 % threshold by 0.01 logits; float32 costs at most ~3 GiB (the 1536 test images)."""

    def __init__(self, tile: int, max_tiles: int) -> None:
        self.tile, self.max_tiles = tile, max_tiles
        self.d: dict[str, tuple[np.ndarray, list[tuple[int, int]]]] = {}

    def get(self, row: dict[str, str]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        if row["id"] not in self.d:
            t, o = image_tiles(load_grey(row["path"]), self.tile, self.max_tiles)
            self.d[row["id"]] = (np.asarray(t, np.float32), o)
        return self.d[row["id"]]


def _score(rows: list[dict[str, str]], runner: Runner, cache: _TileCache, pointing: bool = False
           ) -> tuple[dict[str, np.ndarray], dict[str, tuple[bool, bool]]]:
    out: dict[str, np.ndarray] = {}
    hits: dict[str, tuple[bool, bool]] = {}
    for r in rows:
        tiles, origins = cache.get(r)
        lo, cam = tile_scores(tiles, runner)
        out[r["id"]] = lo
        if pointing and r["mask"]:
            hits[r["id"]] = (cam_peak_hit(cam, origins, cache.tile, r["mask"], 0),
                             cam_peak_hit(cam, origins, cache.tile, r["mask"], cache.tile // 16))
    return out, hits


def _agg(tl: dict[str, np.ndarray], rows: list[dict[str, str]], method: str, k: int) -> np.ndarray:
    return np.array([aggregate(tl[r["id"]], method, k) for r in rows])


def _metrics(y: np.ndarray, s: np.ndarray, thr: dict[str, float]) -> dict[str, float]:
    fake, real = s[y == 1], s[y == 0]
    fpr, tpr, _ = roc_curve(y, s) if len(set(y.tolist())) == 2 else (np.array([0]), np.array([0]), None)
    return {"auc": _auc(y, s), "n_fake": int(len(fake)), "n_real": int(len(real)),
            "tpr_at_1pct_fpr_valthr": float((fake >= thr["suspicious_logit"]).mean()) if len(fake) else float("nan"),
            "tpr_at_0.1pct_fpr_valthr": float((fake >= thr["synthetic_logit"]).mean()) if len(fake) else float("nan"),
            "fpr_at_1pct_valthr": float((real >= thr["suspicious_logit"]).mean()) if len(real) else float("nan"),
            "fpr_at_0.1pct_valthr": float((real >= thr["synthetic_logit"]).mean()) if len(real) else float("nan"),
            "tpr_at_1pct_fpr_oracle": float(np.interp(0.01, fpr, tpr))}


def _family_table(rows: list[dict[str, str]], s: np.ndarray, thr: dict[str, float]) -> dict[str, Any]:
    y = np.array([int(r["label"]) for r in rows])
    fam = np.array([r["family"] for r in rows])
    table = {"all": _metrics(y, s, thr)}
    for f in sorted(set(fam[y == 1])):
        m = (y == 0) | (fam == f)
        table[f] = _metrics(y[m], s[m], thr)
    return table


def sub_kind(row: dict[str, str]) -> str:
    """The recipe inside a fake family, without its random parameters or the shared augmentation:
    ``copy_move+touchup``, ``upsample``, ``uniform_grain``, ``native64`` ... (``kind`` column of
    images.csv, e.g. ``upsample2.3-bicubic+jpeg85``)."""
    tokens = row["kind"].split("+")
    if row["family"] in ("gan", "vae"):  # native64 / upscaled256: the size is the recipe
        return tokens[0]
    head = re.sub(r"\d.*$", "", tokens[0].split("-")[0]) or tokens[0]
    if row["family"] == "tamper" and "touchup" in tokens:
        return f"{head}+touchup"
    return head


def _kind_table(rows: list[dict[str, str]], s: np.ndarray, thr: dict[str, float]) -> dict[str, Any]:
    """Per family and recipe: each recipe's fakes against all real images of the split (what a
    family's AUC averages over: tells which recipe the detector misses)."""
    y = np.array([int(r["label"]) for r in rows])
    keys = np.array([f"{r['family']}:{sub_kind(r)}" if r["label"] == "1" else "" for r in rows])
    return {k: _metrics(y[(y == 0) | (keys == k)], s[(y == 0) | (keys == k)], thr)
            for k in sorted(set(keys[y == 1].tolist()))}


def _real_source_table(rows: list[dict[str, str]], s: np.ndarray, thr: dict[str, float]) -> dict[str, Any]:
    """False-positive rate of the real test images per source and kind (original / variant / resized)."""
    out: dict[str, Any] = {}
    for i, r in enumerate(rows):
        if r["label"] != "0":
            continue
        key = f"{r['source']}:{r['kind'].split('+')[0]}"
        out.setdefault(key, []).append(float(s[i]))
    table = {}
    for key, v in sorted(out.items()):
        a = np.array(v)
        table[key] = {"n": len(a), "median_logit": float(np.median(a)),
                      "flagged_suspicious": float((a >= thr["suspicious_logit"]).mean()),
                      "flagged_synthetic": float((a >= thr["synthetic_logit"]).mean())}
    return table


def _simulator_generated(real_logits: np.ndarray, runner: Runner, thr: dict[str, float], method: str, k: int,
                         cfg: Config, per_kind: int = 12) -> dict[str, Any]:
    """Generator-like renders of the physics simulator (never trained on): anatomy without a detector.

    Kinds from :func:`edge_agent.forensics.simulator.generated_like`: uniform grain, too smooth,
    up-sampled + grain, and an adaptive attacker adding Poisson-Gaussian noise through a blur.
    """
    from edge_agent.forensics.simulator import generated_like
    rng = np.random.default_rng(cfg.seed + 99)
    out: dict[str, Any] = {}
    for kind in ("uniform_grain", "too_smooth", "upsampled", "physics_noise"):
        sc = []
        for _ in range(per_kind):
            img = generated_like(rng, (int(rng.integers(560, 1100)) // 2 * 2, int(rng.integers(560, 1100)) // 2 * 2), kind)
            t_, _o = image_tiles(img, cfg.tiles["tile"], cfg.tiles["max_tiles"])
            sc.append(aggregate(tile_scores(t_, runner)[0], method, k))
        a = np.array(sc)
        y = np.r_[np.zeros(len(real_logits)), np.ones(len(a))]
        out[kind] = {"n": len(a), "auc_vs_all_real_test": _auc(y, np.r_[real_logits, a]),
                     "flagged_suspicious": float((a >= thr["suspicious_logit"]).mean()),
                     "flagged_synthetic": float((a >= thr["synthetic_logit"]).mean())}
    return out


def _transform(row: dict[str, str], name: str) -> np.ndarray:
    """Robustness perturbations, re-encoded and decoded by the agent's decoder."""
    img = load_grey(row["path"])
    rng = np.random.default_rng(abs(hash((row["id"], name))) % 2**32)
    if name.startswith("jpeg"):
        from .imaging import ContainerSpec
        data, _ = encode_like(img, ContainerSpec("jpeg", "L"), int(name[4:]))
        return load_grey_bytes(data)
    if name.startswith("resize"):
        f = float(name[6:])
        img = resize_float(img, max(8, round(img.shape[0] * f)), max(8, round(img.shape[1] * f)), "bicubic")
    elif name == "noise_pg0.008":
        img = poisson_gaussian(img, 0.008, rng)
    elif name == "noise_awgn0.01":
        img = np.clip(img + rng.standard_normal(img.shape).astype(np.float32) * 0.01, 0, 1)
    data, _ = encode_like(img, container_of(row["path"]))
    return load_grey_bytes(data)


def _latency(runner: Runner, tile: int, n_tiles: int = 4, reps: int = 30) -> float:
    x = np.random.default_rng(0).random((n_tiles, 1, tile, tile), dtype=np.float32)
    runner(x)
    t = time.perf_counter()
    for _ in range(reps):
        runner(x)
    return (time.perf_counter() - t) / reps


def evaluate_all(work: Path, cfg: Config, log: Callable[[str], None]) -> None:
    ev = work / f"eval-{cfg.version}"
    ev.mkdir(parents=True, exist_ok=True)
    exp = work / f"export-{cfg.version}"
    tile, mt = cfg.tiles["tile"], cfg.tiles["max_tiles"]
    rows = read_images(work)
    val = [r for r in rows if r["split"] == "val"]
    test = [r for r in rows if r["split"] == "test"]
    external = [r for r in rows if r["split"] == "external"]
    dicoms = [r for r in rows if r["source"].startswith("dicom") and r["kind"] == "original"]
    cache = _TileCache(tile, mt)
    from edge_agent.tiling import FLAT_FRACTION
    res: dict[str, Any] = {"version": cfg.version, "config_sha256": cfg.sha256, "flat_fraction": FLAT_FRACTION}
    from .confounds import confound_report
    res["confounds"] = confound_report(rows)
    log(f"evaluate: confounds {res['confounds']}")
    # bulk scoring single-threaded (the CPU is shared; oversubscribed OpenMP threads spin-wait),
    # latency measured separately with the agent's 2 threads
    fp32 = ort_runner(exp / "model-fp32.onnx", threads=1)

    # --- validation: aggregate choice (val fakes) and thresholds (val REALS only) ---
    t0 = time.time()
    vl, _ = _score(val, fp32, cache)
    yv = np.array([int(r["label"]) for r in val])
    agg_choice = {}
    for m, k in AGGS:
        s = _agg(vl, val, m, k)
        thr = thresholds_from_reals(s[yv == 0])
        agg_choice[f"{m}{k if m == 'topk_mean' else ''}"] = {"val_auc": _auc(yv, s),
                                                             "val_tpr_at_1pct": float((s[yv == 1] >= thr["suspicious_logit"]).mean())}
    best = max(AGGS, key=lambda mk: (round(agg_choice[f"{mk[0]}{mk[1] if mk[0] == 'topk_mean' else ''}"]["val_tpr_at_1pct"], 3),
                                     agg_choice[f"{mk[0]}{mk[1] if mk[0] == 'topk_mean' else ''}"]["val_auc"]))
    method, k = best
    sv = _agg(vl, val, method, k)
    thr = thresholds_from_reals(sv[yv == 0])
    res["aggregate"] = {"method": method, "topk": k, "candidates": agg_choice}
    res["thresholds"] = {**thr, "suspicious": float(_sig(thr["suspicious_logit"])), "synthetic": float(_sig(thr["synthetic_logit"])),
                         "n_val_real": int((yv == 0).sum()), "reference_logit_quantiles": {str(q): float(np.quantile(sv[yv == 0], q)) for q in QUANTILES}}
    log(f"evaluate: val done ({time.time() - t0:.0f} s); aggregate {method}/{k}; thresholds {res['thresholds']}")
    cache.d.clear()

    # --- test: fp32 per family, pointing game ---
    tl, hits = _score(test + external, fp32, cache, pointing=True)
    st = _agg(tl, test, method, k)
    res["test_fp32"] = _family_table(test, st, thr)
    res["test_fp32_kinds"] = _kind_table(test, st, thr)
    ext_rows = [r for r in test if r["label"] == "0"] + external
    res["external_gan"] = _metrics(np.array([int(r["label"]) for r in ext_rows]), _agg(tl, ext_rows, method, k), thr)
    res["pointing_game"] = {"n": len(hits), "strict": float(np.mean([h[0] for h in hits.values()])) if hits else float("nan"),
                            "tol_one_cam_cell": float(np.mean([h[1] for h in hits.values()])) if hits else float("nan")}
    yt = np.array([int(r["label"]) for r in test])
    np.save(ev / "test_scores_fp32.npy", np.stack([yt, st]))
    res["test_families"] = sorted({r["family"] for r in test})
    log(f"evaluate: test fp32 AUC {res['test_fp32']['all']['auc']:.4f}, pointing {res['pointing_game']}")
    res["real_sources"] = _real_source_table(test, st, thr)
    res["simulator_generated"] = _simulator_generated(st[yt == 0], fp32, thr, method, k, cfg)
    log(f"evaluate: real sources {res['real_sources']}; simulator generator-like {res['simulator_generated']}")
    # --- DICOM radiographs ---
    dl, _ = _score(dicoms, fp32, cache)
    res["dicom"] = []
    for r in dicoms:
        a = aggregate(dl[r["id"]], method, k)
        verdict = "synthetic" if a >= thr["synthetic_logit"] else "suspicious" if a >= thr["suspicious_logit"] else "authentic"
        res["dicom"].append({"file": Path(r["path"]).name, "split": r["split"], "score": float(_sig(a)), "logit": float(a),
                             "verdict": verdict, "tiles": int(len(dl[r["id"]]))})
    log(f"evaluate: dicom {[(d['file'], round(d['score'], 4), d['verdict']) for d in res['dicom']]}")
    # --- fixed test subset for the costlier comparisons (precisions, robustness, LOFO reals) ---
    rng = np.random.default_rng(cfg.seed)
    reals = [r for r in test if r["label"] == "0"]
    real_sub = [reals[i] for i in sorted(rng.choice(len(reals), size=min(200, len(reals)), replace=False))]
    sub = list(real_sub)
    for f in FAMILIES:
        fr = [r for r in test if r["family"] == f]
        sub += [fr[i] for i in sorted(rng.choice(len(fr), size=min(20, len(fr)), replace=False))] if fr else []
    ys = np.array([int(r["label"]) for r in sub])
    s_sub = _agg(tl, sub, method, k)
    fp32_sub = _metrics(ys, s_sub, thr)
    # --- other precisions (same subset; INT8 rule uses AUC and TPR@1% FPR at the FP32 threshold) ---
    prec: dict[str, Path] = {"onnx-int8": exp / "model-int8.onnx", "onnx-int8-floatstem": exp / "model-int8-floatstem.onnx",
                             "openvino-fp32": exp / "openvino" / "model-fp32.xml", "openvino-int8": exp / "openvino" / "model-int8.xml"}
    res["precisions_subset"] = {"n_real": int((ys == 0).sum()), "n_fake": int((ys == 1).sum())}
    res["precisions"] = {"onnx-fp32": {"auc": fp32_sub["auc"], "tpr_at_1pct_fpr_valthr": fp32_sub["tpr_at_1pct_fpr_valthr"],
                                       "tpr_at_1pct_fpr_oracle": fp32_sub["tpr_at_1pct_fpr_oracle"],
                                       "dicom_max_score": float(_sig(max(aggregate(dl[r["id"]], method, k) for r in dicoms))),
                                       "latency_ms_per_512_slice": 1000 * _latency(ort_runner(exp / "model-fp32.onnx", threads=2), tile)}}
    for name, p in prec.items():
        if not p.exists():
            continue
        runner = ov_runner(p, threads=1) if p.suffix == ".xml" else ort_runner(p, threads=1)
        runner2 = ov_runner(p, threads=2) if p.suffix == ".xml" else ort_runner(p, threads=2)
        tq, _ = _score(sub, runner, cache)
        m_q = _metrics(ys, _agg(tq, sub, method, k), thr)
        dq, _ = _score(dicoms, runner, cache)
        res["precisions"][name] = {"auc": m_q["auc"], "tpr_at_1pct_fpr_valthr": m_q["tpr_at_1pct_fpr_valthr"],
                                   "tpr_at_1pct_fpr_oracle": m_q["tpr_at_1pct_fpr_oracle"],
                                   "max_abs_logit_diff_vs_fp32": float(max(np.abs(tq[r["id"]] - tl[r["id"]]).max() for r in sub)),
                                   "dicom_max_score": float(_sig(max(aggregate(dq[r["id"]], method, k) for r in dicoms))),
                                   "latency_ms_per_512_slice": 1000 * _latency(runner2, tile)}
        log(f"evaluate: {name} {res['precisions'][name]}")
    # --- robustness (subset) ---
    res["robustness"] = {"clean": fp32_sub}
    if cfg.export.get("int8", True):
        for tname in ("jpeg90", "jpeg75", "resize0.9", "resize1.1", "noise_pg0.008", "noise_awgn0.01"):
            perturbed = []
            for r in sub:
                t_, _o = image_tiles(_transform(r, tname), tile, mt)
                perturbed.append(aggregate(tile_scores(t_, fp32)[0], method, k))
            res["robustness"][tname] = _metrics(ys, np.array(perturbed), thr)
            log(f"evaluate: robustness {tname} auc {res['robustness'][tname]['auc']:.4f}")
    det = load_detector(work / f"detector-{cfg.version}-last.pt")
    res["compute"] = {"detector_params": int(sum(p.numel() for p in det.parameters())),
                      "detector_gmac_per_tile": count_macs(det, tile) / 1e9}
    res["subset_ids"] = [r["id"] for r in real_sub]
    (ev / "eval.json").write_text(json.dumps(res, indent=1))
    _plot(ev)
    log("evaluate: wrote eval.json")


def _plot(ev: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, label in (("test_scores_fp32.npy", "xray-npr (tiles, native grid)"),
                        ("test_scores_baseline.npy", "baseline CNN (whole image 224 px)")):
        p = ev / name
        if p.exists():
            y, s = np.load(p)
            fpr, tpr, _ = roc_curve(y.astype(int), s)
            ax.plot(np.maximum(fpr, 1e-4), tpr, label=f"{label}, AUC {_auc(y.astype(int), s):.3f}")
    ax.set_xscale("log"); ax.set_xlim(1e-3, 1); ax.set_ylim(0, 1.01)
    ax.axvline(0.01, ls=":", c="grey"); ax.axvline(0.001, ls=":", c="grey")
    ax.set_xlabel("false-positive rate (real test images, log)"); ax.set_ylabel("true-positive rate")
    ax.set_title("Held-out test split, image level"); ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout(); fig.savefig(ev / "roc.png", dpi=110)


def compare_all(work: Path, cfg: Config, log: Callable[[str], None]) -> None:
    """Stage `compare`: baseline and leave-one-family-out runs, added to eval.json."""
    ev = work / f"eval-{cfg.version}"
    res = json.loads((ev / "eval.json").read_text())
    tile, mt = cfg.tiles["tile"], cfg.tiles["max_tiles"]
    method, k = res["aggregate"]["method"], res["aggregate"]["topk"]
    rows = read_images(work)
    val = [r for r in rows if r["split"] == "val"]
    test = [r for r in rows if r["split"] == "test"]
    by_id = {r["id"]: r for r in rows}
    real_sub = [by_id[i] for i in res["subset_ids"]]
    cache = _TileCache(tile, mt)
    # --- baseline (whole image at 224) ---
    bl_ck = work / "baseline-last.pt"
    if bl_ck.exists():
        import torch
        bl = load_baseline(bl_ck)
        res["compute"]["baseline_params"] = int(sum(p.numel() for p in bl.parameters()))
        res["compute"]["baseline_gmac_per_image"] = count_macs(bl, cfg.baseline["size"]) / 1e9
        def bscore(split: str) -> tuple[np.ndarray, list[dict[str, str]], np.ndarray]:
            arr, rr = _baseline_arrays(work, cfg, split)
            with torch.no_grad():
                s = np.concatenate([bl(torch.from_numpy(arr[i:i + 64].astype(np.float32))[:, None]).numpy()
                                    for i in range(0, len(arr), 64)])
            return s, rr, np.array([int(r["label"]) for r in rr])
        sbv, _, ybv = bscore("val")
        bthr = thresholds_from_reals(sbv[ybv == 0])
        sbt, rbt, ybt = bscore("test")
        res["baseline_test"] = _family_table(rbt, sbt, bthr)
        np.save(ev / "test_scores_baseline.npy", np.stack([ybt, sbt]))
        log(f"evaluate: baseline test AUC {res['baseline_test']['all']['auc']:.4f}")
    # --- leave-one-family-out ---
    res["lofo"] = {}
    # LOFO checkpoints are shared by every model version of a work folder: their scores are
    # memoised by (checkpoint sha256, aggregate, real subset), so a new version does not redo them.
    memo_path = work / "lofo-scores.json"
    memo = json.loads(memo_path.read_text()) if memo_path.exists() else {}
    for f in FAMILIES:
        ck = work / f"lofo-detector-{f}-last.pt"
        if not ck.exists():
            continue
        bck = work / f"lofo-baseline-{f}-last.pt"
        key = hashlib.sha256(json.dumps([sha256_file(ck), sha256_file(bck) if bck.exists() else "", method, k,
                                         res["subset_ids"]]).encode()).hexdigest()
        if key in memo:
            res["lofo"][f] = memo[key]
            log(f"evaluate: LOFO {f}: memoised ({key[:12]})")
            continue
        runner = torch_runner(load_detector(ck))
        vr_all = [r for r in val if r["label"] == "0"]
        vr = [vr_all[i] for i in sorted(np.random.default_rng(cfg.seed).choice(len(vr_all), size=min(300, len(vr_all)), replace=False))]
        vs, _ = _score(vr, runner, _TileCache(tile, mt))
        th_f = thresholds_from_reals(_agg(vs, vr, method, k))
        tr = real_sub + [r for r in test if r["family"] == f]
        ts, _ = _score(tr, runner, cache)
        y = np.array([int(r["label"]) for r in tr])
        entry = {"detector": _metrics(y, _agg(ts, tr, method, k), th_f)}
        if bck.exists():
            import torch
            bl = load_baseline(bck)
            arr_v = _baseline_arrays(work, cfg, "val")[0]
            with torch.no_grad():
                sv_b = np.concatenate([bl(torch.from_numpy(arr_v[i:i + 64].astype(np.float32))[:, None]).numpy()
                                       for i in range(0, len(arr_v), 64)])
                arr_t, rt = _baseline_arrays(work, cfg, "test")
                st_b = np.concatenate([bl(torch.from_numpy(arr_t[i:i + 64].astype(np.float32))[:, None]).numpy()
                                       for i in range(0, len(arr_t), 64)])
            rv_rows = _baseline_arrays(work, cfg, "val")[1]
            yvb = np.array([int(r["label"]) for r in rv_rows])
            th_b = thresholds_from_reals(sv_b[yvb == 0])
            sub_ids = set(res["subset_ids"])
            m = np.array([r["id"] in sub_ids or r["family"] == f for r in rt])
            entry["baseline"] = _metrics(np.array([int(r["label"]) for r in rt])[m], st_b[m], th_b)
        res["lofo"][f] = memo[key] = entry
        memo_path.write_text(json.dumps(memo, indent=1))
        log(f"evaluate: LOFO {f}: {entry}")
    (ev / "eval.json").write_text(json.dumps(res, indent=1))
    _plot(ev)
    log("compare: updated eval.json")
