"""Dataset assembly: exactly W identities x D aligned images, in the ImageFolder layout FR training reads.

Sampling draws more identities than needed (oversampling) because some images fail alignment; an
identity with fewer than D usable images is skipped and the next one (in sorted order across shards)
takes its place. A released dataset is assembled the same way from its imported images.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

from idiff_core.alignment import WRITTEN, output_name, read_manifest
from idiff_core.io import IMAGE_EXTENSIONS, atomic_path, link_or_copy
from idiff_core.released_datasets import GIVEN

STATUS_COLUMN = {"aligned": "detected", "resized": "resized", "dropped": "dropped", "unreadable": "unreadable",
                 GIVEN: "given"}
USABLE = (*WRITTEN, GIVEN)  # statuses with an image to assemble
IDENTITY_COLUMNS = ("identity", "images", "detected", "resized", "dropped", "unreadable", "given", "kept")


def natural_key(name: str) -> list:
    """Sort key that orders '2' before '10' and zero-padded names as usual."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def _collect(aligned_dirs: list, manifests: list) -> dict[str, dict]:
    """Per identity: its shard folder, usable output files (natural order) and status counts."""
    if len(aligned_dirs) != len(manifests):
        raise ValueError(f"got {len(aligned_dirs)} aligned folders but {len(manifests)} manifests; give one per shard")
    identities: dict[str, dict] = {}
    for shard_dir, manifest in zip(aligned_dirs, manifests):
        shard_dir = Path(shard_dir)
        for row in read_manifest(manifest):
            name = row["identity"]
            if not name:
                raise ValueError(f"{manifest}: image {row['path']} is not in an identity folder; "
                                 "assembly needs <shard>/<identity>/<image> inputs")
            entry = identities.setdefault(name, {"shard": shard_dir, "files": [], "images": 0,
                                                 **dict.fromkeys(STATUS_COLUMN.values(), 0)})
            if entry["shard"] != shard_dir:
                raise ValueError(f"identity {name!r} appears in two shards ({entry['shard']} and {shard_dir})")
            if row["status"] not in STATUS_COLUMN:
                raise ValueError(f"{manifest}: unknown status {row['status']!r} for {row['path']}")
            entry["images"] += 1
            entry[STATUS_COLUMN[row["status"]]] += 1
            if row["status"] in USABLE:  # resized only occurs under the resize policy
                path = shard_dir / output_name(row["path"])
                if not path.is_file():
                    raise FileNotFoundError(f"{manifest} lists {row['path']} as {row['status']} but {path} is missing")
                entry["files"].append(path)
    for entry in identities.values():
        entry["files"].sort(key=lambda p: natural_key(p.name))
    return identities


def _remove_stale(out_dir: Path, planned: set[Path]) -> None:
    """Delete images (and then empty folders) a previous run left in `out_dir` that are not planned now."""
    for path in sorted(out_dir.rglob("*"), reverse=True):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and path not in planned:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _write_identity_csv(path: Path, rows: list[dict]) -> None:
    """Per-identity counts (IDENTITY_COLUMNS), one row per sampled identity, written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=IDENTITY_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)


def assemble_dataset(aligned_dirs: list[str | os.PathLike], manifests: list[str | os.PathLike],
                     out_dir: str | os.PathLike, manifest_csv: str | os.PathLike,
                     summary_json: str | os.PathLike, identities: int, images_per_identity: int) -> dict:
    """Build `<out_dir>/<identity>/<k>.png`, k = 0..D-1, for exactly `identities` (W) identities.

    Inputs are the aligned shard folders (`<shard>/<identity>/<j>.png`) with their alignment manifests,
    or a released dataset's imported folder and manifest (`released_datasets`).
    Identities are taken in natural sorted order across shards; one with fewer than D usable images
    is skipped. Writes a per-identity CSV and a summary JSON; returns the summary.
    """
    width, depth = int(identities), int(images_per_identity)
    if width < 1 or depth < 1:
        raise ValueError(f"identities and images_per_identity must be >= 1, got {width} x {depth}")
    found = _collect(aligned_dirs, manifests)
    order = sorted(found, key=natural_key)
    usable = [name for name in order if len(found[name]["files"]) >= depth]
    if len(usable) < width:
        rate = len(usable) / len(order) if order else 0.0
        needed = math.ceil(width / rate) if rate > 0 else None
        advice = (f"sample at least {needed} identities: raise the dataset's `oversample` (extra identities "
                  f"sampled beyond `identities`) to at least {needed - width}"
                  if needed else "no identity has enough usable images: check the alignment manifests")
        raise ValueError(f"found {len(usable)} of {width} identities with >= {depth} usable images "
                         f"(among {len(order)} sampled, usable fraction {rate:.3f}); {advice}")
    chosen = usable[:width]
    out_dir = Path(out_dir)
    plan = {out_dir / name / f"{k}.png": found[name]["files"][k] for name in chosen for k in range(depth)}
    if out_dir.exists():
        _remove_stale(out_dir, set(plan))
    for dst, src in plan.items():
        link_or_copy(src, dst, atomic=True)
    kept = set(chosen)
    rows = [{"identity": name, **{c: found[name][c] for c in IDENTITY_COLUMNS[1:-1]},
             "kept": depth if name in kept else 0} for name in order]
    _write_identity_csv(Path(manifest_csv), rows)
    totals = {c: sum(row[c] for row in rows) for c in IDENTITY_COLUMNS[1:-1]}
    summary = {
        "identities": width, "images_per_identity": depth, "images_written": width * depth,
        "identities_sampled": len(order), "identities_usable": len(usable),
        "identities_skipped_short": len([n for n in order[:order.index(chosen[-1]) + 1] if n not in kept]),
        "images_sampled": totals["images"], "images_detected": totals["detected"],
        "images_resized": totals["resized"], "images_dropped": totals["dropped"],
        "images_unreadable": totals["unreadable"], "images_given": totals["given"],
        "detection_rate": totals["detected"] / totals["images"] if totals["images"] else 0.0,
    }
    with atomic_path(summary_json) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary
