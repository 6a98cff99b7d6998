"""Is a rebuilt work folder the data a shipped model was trained on?

    python -m models.train.data_check --work runs/w9 --model models/xray-npr-1.9.0

The manifest records the sha256 of the real-image index (``index.csv``), of the list of every image
the stages made (``images.csv``, with their paths: rebuild in a folder of the same name, from the same
directory) and, from 2026-12-08 on, of their contents (:func:`images_content_sha256`: every image
and tamper mask file, by id). The data stages are seeded, so the same command on the same data
folder should give the same three; this says which match. Exit status 0 when every recorded hash matches, 1 when one differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from edge_agent.manifest import sha256_file

from .fakes import read_images

__all__ = ["images_content_sha256", "check"]


def images_content_sha256(work: Path) -> str:
    """One sha256 over the contents of every file ``images.csv`` lists (image and mask), in id
    order: ``id``, the image file's sha256 and the mask's (or nothing), one line each. The files are
    read where ``images.csv`` says, as the training stages read them: paths relative to the folder
    the stages ran from (run this from there). The paths themselves are not hashed (they are in
    ``images_csv_sha256``). Raises FileNotFoundError naming a listed file that is not there."""
    h = hashlib.sha256()
    for row in sorted(read_images(work), key=lambda r: r["id"]):
        for key in ("path", "mask"):
            if row[key] and not Path(row[key]).is_file():
                raise FileNotFoundError(f"{row[key]} ({row['id']}'s {key} in {work / 'images.csv'}) is not there: "
                                        "run from the folder the stages ran from, or rebuild the fakes")
        mask = sha256_file(Path(row["mask"])) if row["mask"] else ""
        h.update(f"{row['id']} {sha256_file(Path(row['path']))} {mask}\n".encode())
    return h.hexdigest()


def check(work: Path, manifest: dict) -> dict[str, str]:
    """``{what: "match" | "differs" | "not recorded"}`` for the three data hashes."""
    recorded = manifest.get("training_data", {})
    out = {}
    for key, compute in (("manifest_sha256", lambda: sha256_file(work / "index.csv")),
                         ("images_csv_sha256", lambda: sha256_file(work / "images.csv")),
                         ("images_content_sha256", lambda: images_content_sha256(work))):
        if key not in recorded:
            out[key] = "not recorded"
            continue
        try:
            out[key] = "match" if compute() == recorded[key] else "differs"
        except FileNotFoundError as exc:
            out[key] = f"differs ({exc})"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="the rebuilt work folder (index.csv, images.csv)")
    ap.add_argument("--model", type=Path, required=True, help="the shipped model's folder (manifest.json)")
    args = ap.parse_args(argv)
    manifest = json.loads((args.model / "manifest.json").read_text())
    result = check(args.work, manifest)
    for key, verdict in result.items():
        print(f"{key}: {verdict}")
    if result["images_content_sha256"] == "not recorded":
        try:
            print(f"images_content_sha256 of {args.work}: {images_content_sha256(args.work)}")
        except FileNotFoundError as exc:
            print(f"images_content_sha256 of {args.work}: cannot be computed ({exc})")
            return 1
    return 1 if any(v.startswith("differs") for v in result.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
