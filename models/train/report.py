"""Render REPORT.md from eval.json (pure: dicts in, markdown out)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Config

__all__ = ["render_report"]


def _f(x: Any, nd: int = 4) -> str:
    try:
        return f"{float(x):.{nd}f}"
    except (TypeError, ValueError):
        return "n/a"


def _pct(x: Any) -> str:
    try:
        return f"{100 * float(x):.1f}%"
    except (TypeError, ValueError):
        return "n/a"


_LAYERS = """## The forensic layers beside the model and their fusion (issue 6)

The agent does not rely on this model alone: imaging physics, the device's fingerprint, DICOM metadata
and capture signatures are fused with its logit. The ablation for this model (each layer alone and
fused, per fake family, leave-one-family-out, on the real DICOMs and on the simulator's panels, and
false positives on sources never used for fitting) is `docs/fusion-ablation.md`, written by
`python -m benchmarks.fit_fusion --index <work>/images.csv` with the installed model; the fusion
it fits on the validation split ships as `models/fusion-1.json`. Each layer's own validation:
`docs/forensics.md`.
"""


def _method(cfg: Config, work: Path) -> str:
    cfgname = "config-v0.yaml" if cfg.version == "0.1.0" else "config.yaml"
    wd = f"runs/{work.name}"
    return f"""## How the data and the model were made

* **Real data**: Hannover (PNG 640 px and JPEG 2000 px, one patient in one split only), Kermany 224 px,
  other-cc, pydicom-data RG1 (all 4 encodings, training). Split by patient: train / val (real-only
  thresholds + aggregate choice) / test ({cfg.split['val']:.0%} / {cfg.split['test']:.0%} of the patients of each
  source). RG3 (all 4 encodings) never enters training.
* **Format chain**: every image, real or fake, is decoded by `edge_agent.decode.decode_path` (the agent's
  decoder). Fakes are derived from real images of the same split and re-encoded in the SAME container as
  their source (PNG stays 8-bit PNG, JPEG keeps the source's quantisation tables and chroma subsampling,
  DICOM keeps its header and BitsStored). Each real image is also used as an "augmented variant" through the
  same chain; the shared augmentation ({_augment_text(cfg)}) is applied
  to both classes with the same probabilities. Generator outputs (64 px, and bicubic/bilinear/nearest
  up-scaled to 256 px) are matched by real images down-scaled to 64/256 px in the same containers.
* **Fake families** (label = family): `gan` (DCGAN, transposed convolutions), `vae` (conv VAE, bilinear
  up-sampling decoder), both trained here ({_gen_budget(cfg)}) on the real training split at
  {cfg.generators['size']} px (they are weak generators: blurry/noisy samples); `tamper` (copy-move, splicing,
  inpainting removal, CT-GAN-style nodule injection, half of them with a real-noise touch-up; masks kept);
  `processing` (up-sampling traces 1.6-4x, over-smoothing + signal-independent noise, too-clean textures);
  `grain` (uniform signal-independent grain sigma 1.2-4.5%, white or slightly correlated, and the opposite
  direction: edge-preserving over-smoothing). External: the 7 third-party GAN PNGs of the pack (never trained on).
* **Detector**: residual stem inside the ONNX graph (NPR of Tan et al. CVPR 2024 + 3x3 high-pass residual,
  per-tile normalisation by mean |residual| over the textured pixels, standardised intensity, and a gate
  that sends exactly flat tiles to logit -4 = "no evidence"), conv3x3/s2 + 7
  depthwise-separable blocks, 1x1 CAM head, logit = CAM mean. Trained on native-grid tiles ({cfg.detector['steps']}
  steps, batch {cfg.detector['batch']}, 90% of the steps on 128 px crops, the rest on full 256 px tiles), class- and
  group-balanced sampling, plus a dense CAM loss (weight {float(cfg.detector.get('dense_weight', 0.3)):g}): every CAM cell of a real tile -> real, of a tampered tile -> fake only inside the mask (whole-image fakes: tile loss only).
{_sim_text(cfg)}

## Reproduce

```
python -m models.train --data /work/shared/data --work {wd} --config models/train/{cfgname} --threads 1
# the same, stage by stage (each resumable; a finished stage is skipped via {wd}/.<stage>[-<version>].done):
#   --stage index, generators, fakes, tiles, detector, baseline, lofo, export, evaluate, compare, ship
# faster on 2 cores: run `--stage baseline --stage lofo` in a second process next to `--stage detector --stage export`
# leave-one-source-out (not in the default run: four more detectors; run it in two processes at once):
#   --stage loso, then --stage ship to render its section
python -m pytest -q tests/test_detector_export.py
```
Every figure in this report comes from `{wd}/eval-{cfg.version}/eval.json`, written by `--stage evaluate`
(test/val/DICOM/precisions/robustness/confounds/pointing game) and `--stage compare` (baseline, LOFO, ROC plot);
this file is rendered from it by `--stage ship`. Seeds: config `seed` ({cfg.seed}); config sha256 `{cfg.sha256[:16]}...`.
The data stages reproduce (the image lists have the manifest's sha256s, and the file-facts
regression below comes out the same to the last digit); a retrained network reproduces the
figures on hundreds of images within a second seed's spread, not those on a handful (the external
GAN images, the pointing game): 1.9.0's own rerun is in docs/candidates/xray-npr-1.9.0.md.
"""


def _augment_text(cfg: Config) -> str:
    """The shared augmentation as the config sets it (models/train/augment.py)."""
    a = cfg.augment
    q, z = a.get("jpeg_quality", [70, 95]), a.get("resize", [0.9, 1.1])
    return f"JPEG q{q[0]}-{q[1]}, {z[0]:g}-{z[1]:g}x resize, mild Poisson-Gaussian noise"


def _export_text(sim: dict[str, Any]) -> str:
    """How many simulated images are 8-bit exports (models/train/simdata.py defaults)."""
    from .simdata import EXPORT_FRACTION, EXPORT_JPEG_QUALITY

    share = float(sim.get("export_fraction", EXPORT_FRACTION))
    lo, hi = sim.get("export_jpeg_quality", EXPORT_JPEG_QUALITY)
    return f"{share:.0%} as 8-bit exports (half PNG, half JPEG q{lo}-{hi})"


def _sim_text(cfg: Config) -> str:
    if not cfg.simulated:
        return "* **Physics simulator**: not used by this recipe."
    c = cfg.simulated
    return (f"* **Physics-simulated real-like radiographs** (`models/train/simdata.py`, built on "
            f"`edge_agent.forensics.simulator`): {c.get('train', 0)} / {c.get('val', 0)} / {c.get('test', 0)} images "
            "(train / val / test), each from its own random panel (gain/offset maps, defects, row noise, blur, "
            "electronic noise), dose over two decades, chest or extremity anatomy, collimation (sometimes blanked), "
            "device presentation processing (multi-scale unsharp masking, windowing, tone curve), 10-16 bit DICOM "
            f"CR/DX in MONOCHROME1 or 2, {_export_text(c)}. They join the real class (source `sim`) and "
            "are a base for the tamper/processing/grain fakes like every other real source; the generators are "
            "trained on the pack's real images only.")


def _targets(ev: dict[str, Any], cfg: Config) -> str:
    """Issue-3 targets, each marked met / NOT met from the measured numbers."""
    t = ev.get("test_fp32", {})
    fams = [k for k in t if k != "all"]
    rows = []

    def row(name: str, value: str, ok: bool | None) -> None:
        rows.append(f"| {name} | {value} | {'met' if ok else 'NOT met' if ok is not None else 'not measured'} |")
    if fams:
        worst = min(fams, key=lambda k: t[k]["auc"])
        row("AUC >= 0.99 within each family (test)", f"min {_f(t[worst]['auc'])} ({worst})", t[worst]["auc"] >= 0.99)
        row("TPR >= 90% at 1% FPR (all test fakes, val threshold)", _pct(t["all"]["tpr_at_1pct_fpr_valthr"]),
            t["all"]["tpr_at_1pct_fpr_valthr"] >= 0.9)
    lofo = ev.get("lofo", {})
    if lofo:
        worst = min(lofo, key=lambda k: lofo[k]["detector"]["auc"])
        row("LOFO AUC >= 0.90", f"min {_f(lofo[worst]['detector']['auc'])} ({worst})", lofo[worst]["detector"]["auc"] >= 0.9)
        better = [f for f in lofo if "baseline" in lofo[f] and lofo[f]["detector"]["auc"] > lofo[f]["baseline"]["auc"]]
        worst_b = max((lofo[f]["baseline"]["auc"] for f in lofo if "baseline" in lofo[f]), default=float("nan"))
        row("better than the baseline on held-out families",
            f"{len(better)}/{len(lofo)} families (baseline LOFO AUC at most {_f(worst_b, 3)})",
            len(better) == len(lofo))
    else:
        row("LOFO AUC >= 0.90", "n/a", None)
    pg = ev.get("pointing_game")
    row("pointing game >= 80%", _pct(pg["strict"]) + " strict / " + _pct(pg["tol_one_cam_cell"]) + " tol." if pg else "n/a",
        (pg["strict"] >= 0.8) if pg else None)
    d = ev.get("dicom", [])
    if d:
        fp = [x["file"] for x in d if x["verdict"] != "authentic"]
        row("no false positive on the 8 real DICOMs", f"{len(d) - len(fp)}/{len(d)} authentic", not fp)
    c = ev.get("compute", {})
    if "baseline_gmac_per_image" in c:
        r = c["baseline_gmac_per_image"] / c["detector_gmac_per_tile"]
        r4 = c["baseline_gmac_per_image"] / (4 * c["detector_gmac_per_tile"])
        n = int(cfg.tiles["max_tiles"])
        big = n * c["detector_gmac_per_tile"] / c["baseline_gmac_per_image"]
        rows.append(f"| at most 1/5 of the baseline's compute | {r:.1f}x less per 256 px tile vs per baseline image; "
                    f"{r4:.1f}x less per 512x512 slice (4 tiles); {big:.1f}x MORE per radiograph of 2048x2048 px or more "
                    f"({n} tiles, the most read per image) | "
                    f"{'met' if r4 >= 5 and big <= 0.2 else 'met per tile only, NOT per slice or radiograph' if r >= 5 else 'NOT met'} |")
    row("< 2 M parameters, well under 0.5 GMAC per tile", f"{c.get('detector_params')} params, "
        f"{_f(c.get('detector_gmac_per_tile'), 4)} GMAC", c.get("detector_params", 9e9) < 2e6)
    return "## Targets (issue 3)\n\n| target | measured | status |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def _gen_budget(cfg: Config) -> str:
    g = cfg.generators
    if "steps" in g:
        return ", ".join(f"{k} {v} steps" for k, v in g["steps"].items())
    return f"{g['seconds']} s of wall clock each"


def render_report(cfg: Config, ev: dict[str, Any], manifest: dict[str, Any], decisions: dict[str, str],
                  times: dict[str, float], work: Path) -> str:
    L: list[str] = []
    a = L.append
    a(f"# {cfg.name} {cfg.version}: evaluation report\n")
    a("Generated by `python -m models.train ... --stage ship` from `eval.json`; every number below is "
      "image-level (decode -> native-grid tiles -> model -> "
      f"`{manifest['tiling']['aggregate']}` k={manifest['tiling']['topk']}) unless it says otherwise.\n")
    t = ev.get("test_fp32", {})
    a(_targets(ev, cfg))
    a("## Test split, ONNX FP32 (patients never used for training or thresholds)\n")
    a("| family | n fake | n real | ROC-AUC | TPR @1% FPR (val thr) | TPR @0.1% FPR (val thr) | real FPR at the 1% thr |")
    a("|---|---|---|---|---|---|---|")
    for k, v in t.items():
        a(f"| {k} | {v['n_fake']} | {v['n_real']} | {_f(v['auc'])} | {_pct(v['tpr_at_1pct_fpr_valthr'])} | "
          f"{_pct(v['tpr_at_0.1pct_fpr_valthr'])} | {_pct(v['fpr_at_1pct_valthr'])} |")
    if "external_gan" in ev:
        e = ev["external_gan"]
        a(f"| external third-party GAN samples (pack's synthetic/, never trained on) | {e['n_fake']} | {e['n_real']} | "
          f"{_f(e['auc'])} | {_pct(e['tpr_at_1pct_fpr_valthr'])} | {_pct(e['tpr_at_0.1pct_fpr_valthr'])} | |")
    if ev.get("simulator_generated"):
        for kname, v in ev["simulator_generated"].items():
            a(f"| external: simulator generator-like `{kname}` (never trained on) | {v['n']} | all | {_f(v['auc_vs_all_real_test'])} "
              f"| {_pct(v['flagged_suspicious'])} | {_pct(v['flagged_synthetic'])} | |")
    a("")
    if ev.get("test_fp32_kinds"):
        a("Per recipe inside each family (its fakes against all real test images; which recipes the detector misses):\n")
        a("| family:recipe | n fake | ROC-AUC | TPR @1% FPR (val thr) |")
        a("|---|---|---|---|")
        for k, v in ev["test_fp32_kinds"].items():
            a(f"| {k} | {v['n_fake']} | {_f(v['auc'])} | {_pct(v['tpr_at_1pct_fpr_valthr'])} |")
        a("")
    if ev.get("real_sources"):
        a("False positives among the real test images, per source and kind (`variant` = the shared augmentation, "
          "`resized` = down-scaled to generator size; `sim` = physics-simulated panels, one panel per image, none seen "
          "in training):\n")
        a("| real source:kind | n | median logit | flagged suspicious (1% thr) | flagged synthetic (0.1% thr) |")
        a("|---|---|---|---|---|")
        for kname, v in ev["real_sources"].items():
            a(f"| {kname} | {v['n']} | {_f(v['median_logit'], 2)} | {_pct(v['flagged_suspicious'])} | {_pct(v['flagged_synthetic'])} |")
        a("")
    th = ev["thresholds"]
    a(f"Thresholds (from {th['n_val_real']} real validation images only): suspicious = {_f(th['suspicious'], 6)} "
      f"(logit {_f(th['suspicious_logit'])}), synthetic = {_f(th['synthetic'], 6)} (logit {_f(th['synthetic_logit'])}).\n")
    a("Aggregate chosen on the validation split (fakes + reals): " + ", ".join(
        f"{k}: AUC {_f(v['val_auc'])} / TPR@1% {_pct(v['val_tpr_at_1pct'])}" for k, v in ev["aggregate"]["candidates"].items()) + "\n")
    a("![ROC](roc.png)\n")
    if "baseline_test" in ev:
        b = ev["baseline_test"]
        c = ev["compute"]
        a("## Baseline: ordinary small CNN on the whole image resized to 224x224 (same images, same splits)\n")
        a(f"Compute: detector {c['detector_params']} parameters, {_f(c['detector_gmac_per_tile'], 4)} GMAC per 256 px tile "
          f"(a 512x512 CT slice = 4 tiles = {_f(4 * c['detector_gmac_per_tile'], 3)} GMAC); baseline {c['baseline_params']} "
          f"parameters, {_f(c['baseline_gmac_per_image'], 3)} GMAC per image. Ratio per tile vs per image: "
          f"{_f(c['baseline_gmac_per_image'] / c['detector_gmac_per_tile'], 1)}x.\n")
        a("| family | detector AUC | baseline AUC | detector TPR@1% | baseline TPR@1% |")
        a("|---|---|---|---|---|")
        for k in t:
            if k in b:
                a(f"| {k} | {_f(t[k]['auc'])} | {_f(b[k]['auc'])} | {_pct(t[k]['tpr_at_1pct_fpr_valthr'])} | {_pct(b[k]['tpr_at_1pct_fpr_valthr'])} |")
        a("")
    if ev.get("lofo"):
        a(f"## Leave-one-family-out (runs of detector {cfg.lofo['steps']} steps vs {cfg.detector['steps']}; "
          f"baseline {cfg.lofo_baseline_steps} vs {cfg.baseline['steps']} steps)\n")
        a("Train without family X, test on all test images of X vs the fixed subset of real test images; thresholds at 1% FPR "
          "from that run's scores on 300 real validation images.\n")
        a("| held-out family | detector AUC | detector TPR@1% | baseline AUC | baseline TPR@1% |")
        a("|---|---|---|---|---|")
        for f, e in ev["lofo"].items():
            bd = e.get("baseline", {})
            a(f"| {f} | {_f(e['detector']['auc'])} | {_pct(e['detector']['tpr_at_1pct_fpr_valthr'])} | "
              f"{_f(bd.get('auc'))} | {_pct(bd.get('tpr_at_1pct_fpr_valthr'))} |")
        a("")
    if ev.get("loso"):
        from .loso import render_loso
        a(render_loso(ev["loso"]))
    if ev.get("robustness"):
        a("## Robustness (same test subset; perturbation applied to both classes, "
          "re-encoded, decoded by the agent's decoder; thresholds fixed on clean validation)\n")
        a("| perturbation | AUC | TPR @1% thr | real FPR @1% thr |")
        a("|---|---|---|---|")
        for k, v in ev["robustness"].items():
            a(f"| {k} | {_f(v['auc'])} | {_pct(v['tpr_at_1pct_fpr_valthr'])} | {_pct(v['fpr_at_1pct_valthr'])} |")
        a("")
    if ev.get("precisions"):
        ps = ev.get("precisions_subset", {})
        a(f"## Precisions (fixed test subset: {ps.get('n_real')} real + {ps.get('n_fake')} fake images; FP32 thresholds)\n")
        a("| model | AUC | TPR@1% (FP32 val thr) | TPR@1% FPR (ROC on subset) | max abs tile-logit diff vs FP32 | max score on the 8 DICOMs | latency per 512x512 slice (4 tiles, 2 threads, shared CPU) |")
        a("|---|---|---|---|---|---|---|")
        for k, v in ev["precisions"].items():
            a(f"| {k} | {_f(v['auc'])} | {_pct(v['tpr_at_1pct_fpr_valthr'])} | {_pct(v.get('tpr_at_1pct_fpr_oracle'))} | "
              f"{_f(v.get('max_abs_logit_diff_vs_fp32'), 3)} | {_f(v.get('dicom_max_score'))} | {_f(v['latency_ms_per_512_slice'], 2)} ms |")
        a("\nShipping decisions: " + "; ".join(f"{k}: {v}" for k, v in decisions.items()) + ".\n")
    if ev.get("pointing_game"):
        p = ev["pointing_game"]
        a(f"## Pointing game (tampered test images, n={p['n']})\n")
        a(f"CAM peak inside the tamper mask: {_pct(p['strict'])} strict; {_pct(p['tol_one_cam_cell'])} with a one-CAM-cell "
          f"({cfg.tiles['tile'] // 16} px) tolerance.\n")
    if ev.get("dicom"):
        a("## The 8 real pydicom-data CR radiographs\n")
        a("| file | used in training? | score | verdict | tiles |")
        a("|---|---|---|---|---|")
        for d in ev["dicom"]:
            a(f"| {d['file']} | {'yes (RG1)' if d['split'] == 'train' else 'no (held out)'} | {_f(d['score'], 6)} | {d['verdict']} | {d['tiles']} |")
        a("")
    a(_LAYERS)
    if ev.get("confounds"):
        c = ev["confounds"]
        a("## Format-confound check (file facts only, no pixels)\n")
        a(f"Logistic regression on (log file size, width, height, bit depth, container, colour mode), fit on the "
          f"{c['n_train']} training files, test ROC-AUC {_f(c['logreg_test_auc'])}; depth-3 tree {_f(c['tree_test_auc'])} "
          f"({c['n_test']} test files). Single features (best direction): " +
          ", ".join(f"{k} {_f(v, 3)}" for k, v in c["single_feature_best_direction_auc"].items()) + ".\n")
        if c.get("within_source_logreg_auc"):
            a("Within one source (fakes derived from that source vs its real images, same containers), the same "
              "logistic regression reaches: " + ", ".join(f"{k} {_f(v, 3)}" for k, v in c["within_source_logreg_auc"].items())
              + ". The pooled AUC above comes mostly from the source MIX (most real test images are Kermany RGB "
              "JPEGs, while fakes are spread over sources by design), not from how a given image is encoded; file size "
              "also tracks content (added grain compresses worse, smoothing better), which is the signal itself. "
              "The detector never sees file facts: it gets decoded grey tiles only.\n")
    if times:
        a("## Stage wall times of the shipped recipe (2 CPU cores shared with other jobs)\n")
        a("| stage | seconds |")
        a("|---|---|")
        for k, v in times.items():
            a(f"| {k} | {v:.0f} |")
        a(f"\nSum: {sum(times.values()) / 60:.1f} min of stage time (some stages ran in parallel processes; see "
          "the notes for superseded runs).\n")
    a(_method(cfg, work))
    extra = work / f"eval-{cfg.version}" / "notes.md"
    if extra.exists():
        a(extra.read_text())
    return "\n".join(L) + "\n"
