"""Stages `generators` and `fakes`: build the labelled image set, one file per image.

Every real image of a split appears (a) as its original file and (b) as a "variant" passed
through the shared augmentation and re-encoded in its own container; every fake is derived
from a real image of the SAME split and written in that image's container after the same
shared augmentation. Generator outputs (64 px) are matched by real images down-scaled to the
same sizes and written in the same containers, so size/format cannot separate the classes.
"""
from __future__ import annotations

import csv
import hashlib
import json
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from .augment import augment_shared
from .config import Config
from .generators import sample_generator, train_generator
from .imaging import ContainerSpec, container_of, encode_like, load_grey, resize_float
from .processing import grain_fake, processing_fake
from .splits import read_index
from .tamper import tamper

__all__ = ["FAMILIES", "run_generators", "run_fakes", "read_images", "IMAGE_FIELDS", "split_reals", "plan_derived",
           "plan_rng", "job_rng", "augmented_tamper"]

FAMILIES = ("gan", "vae", "tamper", "processing", "grain")
IMAGE_FIELDS = ["id", "path", "split", "label", "family", "kind", "source", "source_path", "mask", "container"]
# how often each real source is picked as the base of a fake (balances Kermany's 2000 images)
_SOURCE_WEIGHT = {"hannover-png": 0.3, "hannover-jpg": 0.25, "kermany": 0.3, "other-cc": 0.05, "dicom-rg1": 0.1,
                  "sim": 0.35}


def _rng(cfg: Config, *key: object) -> np.random.Generator:
    h = hashlib.sha256(":".join(map(str, (cfg.seed,) + key)).encode()).hexdigest()
    return np.random.default_rng(int(h[:16], 16))


def job_rng(cfg: Config, job_id: str) -> np.random.Generator:
    """The random stream one image job draws from (deterministic in its id)."""
    return _rng(cfg, job_id)


def augmented_tamper(job: dict[str, Any], cfg: Config, rng: np.random.Generator, allow_jpeg: bool,
                     twin: bool = False) -> tuple[np.ndarray, np.ndarray, str, list[str], np.ndarray | None]:
    """The tamper branch of an image job: the edit, then the shared augmentation without its resize
    (the mask keeps its geometry). Returns (image, mask, kind, augmentation ops, twin): with
    ``twin``, also the untouched source image under the same augmentation draws, the reference
    ``models.train.tamper_evidence`` measures the edit against."""
    img = load_grey(job["src"]["path"])
    donor = load_grey(job["donor"]["path"])
    out, mask, kind = tamper(img, donor, rng)
    aug = {**cfg.augment, "p_resize": 0.0}
    state = rng.bit_generator.state
    out, ops = augment_shared(out, aug, rng, allow_jpeg)
    clean = None
    if twin:
        same = np.random.Generator(type(rng.bit_generator)())
        same.bit_generator.state = state
        clean, _ = augment_shared(img, aug, same, allow_jpeg)
    return out, mask, kind, ops, clean


def _gen_training_images(rows: list[dict[str, str]], size: int) -> np.ndarray:
    out = []
    for r in rows:
        # the generators learn from the pack's real radiographs only (not the simulator's)
        if r["split"] == "train" and r["label"] == "real" and r["source"] != "sim":
            img = load_grey(r["path"])
            out.append(resize_float(img, size, size, "box"))
    return np.stack(out)


def run_generators(work: Path, cfg: Config, log: Callable[[str], None]) -> None:
    """Train the GAN and the VAE in parallel (one thread each), for a fixed wall-clock budget."""
    rows = read_index(work / "index.csv")
    gdir = work / "generators"
    gdir.mkdir(parents=True, exist_ok=True)
    data_path = gdir / "train64.npy"
    if not data_path.exists():
        np.save(data_path, _gen_training_images(rows, cfg.generators["size"]))
    ctx = get_context("spawn")
    procs = [ctx.Process(target=_train_one, args=(k, str(data_path), cfg, str(gdir))) for k in ("gan", "vae")]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"generator training process exited with {p.exitcode}; see {gdir}/*.log")
    log("generators trained")


def _train_one(kind: str, data_path: str, cfg: Config, gdir: str) -> None:
    import torch
    torch.set_num_threads(1)
    logf = open(Path(gdir) / f"{kind}.log", "a")

    def log(m: str) -> None:
        logf.write(m + "\n"); logf.flush()
    g = cfg.generators
    budget = {"steps": g["steps"][kind]} if "steps" in g else {"seconds": g["seconds"]}
    train_generator(kind, np.load(data_path), budget, g["batch"],
                    cfg.seed + (1 if kind == "gan" else 2), Path(gdir) / f"{kind}.pt", log)


def _spec_for_generated(rng: np.random.Generator) -> tuple[ContainerSpec, int | None]:
    """Generated-size images (fake AND real) go to PNG or high-quality JPEG alike."""
    if rng.random() < 0.5:
        return ContainerSpec("png", "L"), None
    return ContainerSpec("jpeg", "L"), int(rng.integers(88, 97))


def _job(args: tuple[dict[str, Any], Config, str]) -> dict[str, str]:
    """Create one image file (deterministic in its id); returns its row for images.csv."""
    job, cfg, work = args
    out_dir = Path(work) / "images" / job["split"] / job["family"]
    side = out_dir / f"{job['id']}.json"
    if side.exists():
        return json.loads(side.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = _rng(cfg, job["id"])
    src = job["src"]
    kind, mask, label = "", None, int(job["family"] not in ("real",))
    jpeg_q: int | None = None
    if job["family"] in ("gan", "vae") or job["kind"] == "resized":
        spec, jpeg_q = _spec_for_generated(rng)
        img = job["pixels"]
        allow_jpeg = True
        kind = job["kind"]
    else:
        spec = container_of(src["path"])
        allow_jpeg = spec.kind != "dicom"
        if job["family"] == "tamper":  # augmented inside, without the resize: the mask keeps its geometry
            img, mask, kind, ops, _ = augmented_tamper(job, cfg, rng, allow_jpeg)
        else:
            img = load_grey(src["path"])
            if job["family"] == "processing":
                img, kind = processing_fake(img, rng)
            elif job["family"] == "grain":
                img, kind = grain_fake(img, rng)
            else:
                kind = "variant"
    if mask is None:
        img, ops = augment_shared(img, cfg.augment, rng, allow_jpeg)
    data, suffix = encode_like(img, spec, jpeg_q)
    path = out_dir / f"{job['id']}{suffix}"
    path.write_bytes(data)
    mpath = ""
    if mask is not None:
        mpath = str(out_dir / f"{job['id']}_mask.png")
        Image.fromarray(mask * 255).save(mpath)
    row = {"id": job["id"], "path": str(path), "split": job["split"], "label": str(label),
           "family": job["family"], "kind": "+".join([kind] + ops), "source": src["source"] if src else "generator",
           "source_path": src["path"] if src else "", "mask": mpath, "container": spec.kind}
    side.write_text(json.dumps(row))
    return row


def _pick_sources(reals: list[dict[str, str]], n: int, rng: np.random.Generator) -> list[dict[str, str]]:
    by_src: dict[str, list[dict[str, str]]] = {}
    for r in reals:
        by_src.setdefault(r["source"], []).append(r)
    names = [s for s in _SOURCE_WEIGHT if s in by_src]
    w = np.array([_SOURCE_WEIGHT[s] for s in names])
    w = w / w.sum()
    picks = rng.choice(len(names), size=n, p=w)
    return [by_src[names[i]][int(rng.integers(len(by_src[names[i]])))] for i in picks]


def split_reals(rows: list[dict[str, str]], split: str) -> list[dict[str, str]]:
    """The real images of one split of the index, the bases of that split's derived fakes."""
    return [r for r in rows if r["split"] == split and r["label"] == "real"]


def plan_derived(reals: list[dict[str, str]], split: str, cfg: Config, rng: np.random.Generator,
                 families: tuple[str, ...] = FAMILIES) -> list[dict[str, Any]]:
    """The jobs of the families derived from real images (tamper, processing, grain) of one split:
    a source and a donor per image, drawn from the split's plan stream ``rng`` (tamper first)."""
    n = cfg.fakes["per_family"][split]
    jobs: list[dict[str, Any]] = []
    for fam in ("tamper", "processing", "grain"):
        if fam not in families:
            continue
        for i, (src, donor) in enumerate(zip(_pick_sources(reals, n, rng), _pick_sources(reals, n, rng))):
            jobs.append({"id": f"{split}-{fam}-{i:05d}", "split": split, "family": fam, "kind": fam,
                         "src": src, "donor": donor})
    return jobs


def plan_rng(cfg: Config, split: str) -> np.random.Generator:
    """The plan stream of one split (which sources the fakes of that split derive from)."""
    return _rng(cfg, "plan", split)


def run_fakes(work: Path, cfg: Config, log: Callable[[str], None], families: tuple[str, ...] = FAMILIES,
              workers: int = 2) -> None:
    """Write every image of every split and the table ``images.csv``."""
    rows = read_index(work / "index.csv")
    jobs: list[dict[str, Any]] = []
    out_rows: list[dict[str, str]] = []
    for r in rows:  # originals are used as they are
        fam = "external-gan" if r["split"] == "external" else "real"
        out_rows.append({"id": hashlib.sha1(r["path"].encode()).hexdigest()[:12], "path": r["path"], "split": r["split"],
                         "label": "1" if r["label"] == "synthetic" else "0", "family": fam, "kind": "original",
                         "source": r["source"], "source_path": r["path"], "mask": "",
                         "container": "dicom" if r["path"].endswith(".dcm") else Path(r["path"]).suffix[1:].lower()})
    for split in ("train", "val", "test"):
        reals = split_reals(rows, split)
        rng = plan_rng(cfg, split)
        for i, r in enumerate(reals):
            jobs.append({"id": f"{split}-real-{i:05d}", "split": split, "family": "real", "kind": "variant", "src": r})
        jobs += plan_derived(reals, split, cfg, rng, families)
        ng = cfg.generators["samples_per_split"][split]
        for fam in ("gan", "vae"):
            ck = work / "generators" / f"{fam}.pt"
            if fam not in families or not ck.exists():
                continue
            samples = sample_generator(fam, ck, ng, cfg.seed + {"train": 0, "val": 1, "test": 2}[split])
            for i, s in enumerate(samples):
                up = i % 2 == 1
                pix = resize_float(s, 256, 256, str(rng.choice(["bicubic", "bilinear", "nearest"]))) if up else s
                jobs.append({"id": f"{split}-{fam}-{i:05d}", "split": split, "family": fam,
                             "kind": "upscaled256" if up else "native64", "src": None, "pixels": pix})
        # reals at generator sizes (down-scaled only: up-scaling is a fake trait)
        for i, src in enumerate(_pick_sources(reals, ng, rng)):
            img = load_grey(src["path"])
            size = 64 if i % 2 == 0 or min(img.shape) < 300 else 256
            jobs.append({"id": f"{split}-resized-{i:05d}", "split": split, "family": "real", "kind": "resized",
                         "src": src, "pixels": resize_float(img, size, size, "box")})
    log(f"fakes: {len(jobs)} image jobs")
    ctx = get_context("fork")
    with ctx.Pool(workers) as pool:
        for k, row in enumerate(pool.imap(_job, [(j, cfg, str(work)) for j in jobs], chunksize=8)):
            out_rows.append(row)
            if k % 500 == 0:
                log(f"fakes: {k}/{len(jobs)}")
    with open(work / "images.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=IMAGE_FIELDS)
        w.writeheader()
        w.writerows(out_rows)
    log(f"fakes: wrote {len(out_rows)} rows to images.csv")


def read_images(work: Path) -> list[dict[str, str]]:
    with open(work / "images.csv", newline="") as fh:
        return list(csv.DictReader(fh))
