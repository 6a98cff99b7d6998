"""Confound check: can a trivial classifier separate real from fake by file facts alone?

Features per file, read from the container only (no pixels): log file size, width, height,
bits stored, container (PNG / JPEG / DICOM), colour mode. A logistic regression and a
depth-3 decision tree are fit on the training images and scored on the test images. AUC near
0.5 means the format chain does not leak the label; high AUC would mean a shortcut exists
(the data README's warning), which the detector could exploit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

__all__ = ["file_facts", "confound_report"]


def file_facts(path: str) -> list[float]:
    p = Path(path)
    size = p.stat().st_size
    if path.endswith(".dcm"):
        import pydicom
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return [np.log10(size), ds.Columns, ds.Rows, int(ds.BitsStored), 0, 0, 1, 0]
    with Image.open(p) as im:
        w, h = im.size
        return [np.log10(size), w, h, 16 if im.mode.startswith("I") else 8, float(im.format == "PNG"),
                float(im.format == "JPEG"), 0, float(im.mode not in ("L", "I;16", "I"))]


def confound_report(rows: list[dict[str, str]]) -> dict[str, Any]:
    tr = [r for r in rows if r["split"] == "train"]
    te = [r for r in rows if r["split"] == "test"]
    Xtr = np.array([file_facts(r["path"]) for r in tr]); ytr = np.array([int(r["label"]) for r in tr])
    Xte = np.array([file_facts(r["path"]) for r in te]); yte = np.array([int(r["label"]) for r in te])
    sc = StandardScaler().fit(Xtr)
    lr = LogisticRegression(max_iter=2000, class_weight="balanced").fit(sc.transform(Xtr), ytr)
    dt = DecisionTreeClassifier(max_depth=3, class_weight="balanced", random_state=0).fit(Xtr, ytr)
    names = ["log10_file_size", "width", "height", "bits", "is_png", "is_jpeg", "is_dicom", "is_rgb"]
    single = {}
    for i, n in enumerate(names):
        if len(set(Xte[:, i])) > 1:
            a = roc_auc_score(yte, Xte[:, i])
            single[n] = float(max(a, 1 - a))
    p = lr.predict_proba(sc.transform(Xte))[:, 1]
    src = np.array([r["source"] for r in te])
    within = {}
    for s_ in sorted(set(src)):
        m = src == s_
        if len(set(yte[m])) == 2:
            within[str(s_)] = float(roc_auc_score(yte[m], p[m]))
    return {"within_source_logreg_auc": within,
            "logreg_test_auc": float(roc_auc_score(yte, lr.predict_proba(sc.transform(Xte))[:, 1])),
            "tree_test_auc": float(roc_auc_score(yte, dt.predict_proba(Xte)[:, 1])),
            "single_feature_best_direction_auc": single, "n_train": len(tr), "n_test": len(te)}
