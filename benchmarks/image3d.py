"""3D images at 128^3: seconds per volume to load a NIfTI (nibabel), reorient to RAS,
resample to the target spacing (scipy), scale and crop-or-pad to 128^3, then encode it
with ``cnn3d``; also one training step (forward + backward) per volume. The volumes are
generated (CT-like noise with a sphere) at a typical abdominal-CT geometry, 180 x 180 x
120 voxels of 0.8 x 0.8 x 2.5 mm, so the resampling to 1.25 mm isotropic is real work.
No clinical data is involved: this measures the pipeline, not a model.

python benchmarks/image3d.py --volumes 6 --threads 2 --out runs/bench/image3d.json
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

import holomed.encoders.image  # noqa: F401  (registers the image encoders)
from holomed.encoders import create_encoder
from holomed.modalities import ModalityData
from holomed.modalities.image import ImagePreprocessor


def write_volumes(folder: Path, n: int, shape: tuple[int, ...], spacing: tuple[float, ...]):
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing, strict=True)],
                             indexing="ij")  # fmt: skip
    paths = []
    for i in range(n):
        c = [s * sp / 2 + rng.normal(0, 10) for s, sp in zip(shape, spacing, strict=True)]
        ball = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < 40.0**2
        v = rng.normal(-100, 40, shape).astype(np.float32) + 150 * ball
        affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS-like, reoriented
        p = folder / f"vol{i}.nii.gz"
        nib.save(nib.Nifti1Image(v.astype(np.int16), affine), p)
        paths.append([str(p)])
    return pd.DataFrame({"paths": paths}, index=[f"V{i}" for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--volumes", type=int, default=6)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--spacing", type=float, default=1.25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/bench/image3d.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    shape, spacing = (180, 180, 120), (0.8, 0.8, 2.5)
    with tempfile.TemporaryDirectory() as tmp:
        frame = write_volumes(Path(tmp), a.volumes, shape, spacing)
        data = ModalityData("image", frame, np.ones(len(frame), bool), ["paths"])
        pre = ImagePreprocessor(size=[a.size] * 3, spacing=a.spacing, window=[-200, 200],
                                cache_dir=str(Path(tmp) / "cache"))  # fmt: skip
        t = time.perf_counter()
        pre.fit(data)  # decodes, resamples and caches every volume once
        load_s = (time.perf_counter() - t) / a.volumes
        t = time.perf_counter()
        x = pre.transform(data)  # from the disk cache
        cached_s = (time.perf_counter() - t) / a.volumes
        enc = create_encoder("cnn3d", pre.out_dim)
        xt = torch.from_numpy(x)
        enc.eval()
        with torch.inference_mode():
            enc(xt[:1])
            t = time.perf_counter()
            for i in range(len(xt)):
                enc(xt[i : i + 1])
            encode_s = (time.perf_counter() - t) / a.volumes
        enc.train()
        opt = torch.optim.AdamW(enc.parameters(), 1e-3)
        t = time.perf_counter()
        for i in range(len(xt)):
            opt.zero_grad()
            enc(xt[i : i + 1]).embedding.square().mean().backward()
            opt.step()
        step_s = (time.perf_counter() - t) / a.volumes
    res = {
        "volumes": a.volumes,
        "input_shape": list(shape),
        "input_spacing_mm": list(spacing),
        "target_spacing_mm": a.spacing,
        "output_shape": list(x.shape[1:]),
        "threads": a.threads,
        "seconds_per_volume": {
            "load_resample_scale_cache": round(load_s, 3),
            "load_from_cache": round(cached_s, 3),
            "encode_cnn3d": round(encode_s, 3),
            "load_resample_encode": round(load_s + encode_s, 3),
            "train_step_cnn3d": round(step_s, 3),
        },
        "encoder_parameters": sum(p.numel() for p in enc.parameters()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
