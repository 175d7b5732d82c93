"""Image throughput on the covid_cxr X-rays: images/s decoded (first pass, filling the disk
cache), images/s through a cached transform, images/s through the encoder, and peak
resident memory when the cohort is repeated 1x, 4x, 16x (each repetition in a fresh
process, so its peak is its own).

HOLOMED_DATA=../shared/data python benchmarks/image_throughput.py --out runs/bench/images.json
HOLOMED_DATA=../shared/data python benchmarks/image_throughput.py --lazy \
    --out runs/bench/images_lazy.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import holomed.encoders.image  # noqa: F401  (registers the image encoders)
from holomed.datasets.covid_cxr import COVID_CXR
from holomed.encoders import create_encoder
from holomed.modalities import ModalityData
from holomed.modalities.image import ImagePreprocessor


def cohort(rep: int) -> ModalityData:
    frames, _ = COVID_CXR.frames()
    x = frames["xray"]
    parts = [x.set_axis([f"{i}#{r}" for i in x.index]) for r in range(rep)]
    df = pd.concat(parts)
    return ModalityData("image", df, np.ones(len(df), bool), ["paths"])


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(a: argparse.Namespace) -> dict:
    torch.set_num_threads(a.threads)
    base = cohort(1)
    pre = ImagePreprocessor(size=[a.size, a.size], max_images=a.max_images, cache_dir=a.cache,
                            lazy_mb=0 if a.lazy else None)  # fmt: skip
    t = time.perf_counter()
    pre.fit(base)
    fit_s = time.perf_counter() - t
    out: dict = {"rep": a.rep, "fit_seconds": round(fit_s, 2), "fit_decoded": pre.decoded_}
    data = cohort(a.rep)
    hits0, dec0 = pre.cache_hits_, pre.decoded_
    t = time.perf_counter()
    x = pre.transform(data)
    if a.lazy:  # as training reads it: one batch of patients at a time from the cache
        for s in range(0, len(x), a.batch):
            x.rows(np.arange(s, min(s + a.batch, len(x))))
    dt = time.perf_counter() - t
    n_img = pre.cache_hits_ - hits0 + pre.decoded_ - dec0
    out.update(
        patients=len(data),
        images=int(n_img),
        cache_hits=int(pre.cache_hits_ - hits0),
        decoded=int(pre.decoded_ - dec0),
        transform_images_per_s=round(n_img / dt, 1),
        array_mb=round(x.nbytes / 2**20, 1),
        lazy=bool(a.lazy),
    )
    if a.encode:
        enc = create_encoder(a.encoder, pre.out_dim).eval()
        xt = torch.from_numpy(np.asarray(x[: len(x) // a.rep]))
        n_real = int((xt[:, :, -1].flatten(2).amax(-1) > 0.5).sum())
        with torch.inference_mode():
            enc(xt[:2])  # warm-up
            t = time.perf_counter()
            for s in range(0, len(xt), a.batch):
                enc(xt[s : s + a.batch])
            dt = time.perf_counter() - t
        out.update(encoder=a.encoder, encoder_images=n_real,
                   encoder_images_per_s=round(n_real / dt, 1))  # fmt: skip
    out["peak_rss_mb"] = round(rss_mb(), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--max-images", type=int, default=4)
    ap.add_argument("--encoder", default="efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--out", default="runs/bench/image_throughput.json")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--rep", type=int, default=1)
    ap.add_argument("--encode", action="store_true")
    ap.add_argument("--lazy", action="store_true", help="read batches lazily from the cache")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        cache = a.cache or str(Path(tmp) / "cache")
        # cold pass: every image decoded once and written to the cache
        pre = ImagePreprocessor(size=[a.size, a.size], max_images=a.max_images, cache_dir=cache)
        t = time.perf_counter()
        pre.fit(cohort(1))
        cold = time.perf_counter() - t
        results = {
            "size": a.size,
            "max_images": a.max_images,
            "threads": a.threads,
            "cold_decoded": pre.decoded_,
            "cold_images_per_s": round(pre.decoded_ / cold, 1),
            "runs": [],
        }
        for rep in a.reps:
            cmd = [sys.executable, __file__, "--child", "--rep", str(rep), "--cache", cache,
                   "--size", str(a.size), "--max-images", str(a.max_images),
                   "--encoder", a.encoder, "--batch", str(a.batch),
                   "--threads", str(a.threads)] + (["--lazy"] if a.lazy else [])  # fmt: skip
            if rep == a.reps[0]:
                cmd.append("--encode")
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results["runs"].append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(results["runs"][-1]))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}))


if __name__ == "__main__":
    main()
