"""Image-text alignment and report drafts on COVID CXR (X-rays <-> case notes), on the
spec's 5 person-level folds: every patient with an X-ray and a note is held out once.

    HOLOMED_DATA=/path/to/shared/data python benchmarks/align_covid.py
    # also fine-tune EfficientNet's last 1x1 convolution, for comparison:
    HOLOMED_DATA=... python benchmarks/align_covid.py --tunes projection conv_head

One thread (torch and BLAS). Writes ``benchmarks/results/generative/align_covid.json``
(every run's results; the first tune is the headline) and ``align_covid.png``: recall@k
of the aligned model, the TF-IDF ridge baseline and a random ranking in both directions,
zero-shot AUROC beside the linear probe's, and draft scores beside random reports.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from holomed.threads import set_threads

ROOT = Path(__file__).resolve().parents[1]


def curve(ranks: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ks = np.arange(1, int(gallery.max()) + 1)
    got = np.array([(ranks <= k).mean() for k in ks])
    rnd = np.array([np.mean(np.minimum(k, gallery) / gallery) for k in ks])
    return ks, got, rnd


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = res["retrieval"]["ranks"]
    gallery = np.asarray(r["gallery"])
    fig, ax = plt.subplots(1, 4, figsize=(17, 4.2))
    for a, way, ridge, title in (
        (ax[0], "image_to_text", "tfidf_ridge_image_to_text", "X-ray -> note"),
        (ax[1], "text_to_image", "tfidf_ridge_text_to_image", "note -> X-ray"),
    ):
        ks, got, rnd = curve(np.asarray(r[way]), gallery)
        _, rid, _ = curve(np.asarray(r[ridge]), gallery)
        a.plot(ks, got, "o-", ms=3, label="aligned (MiniLM + EfficientNet heads)")
        a.plot(ks, rid, "s--", ms=3, label="TF-IDF -> ridge -> frozen image features")
        a.plot(ks, rnd, "k:", label="random ranking (k/N)")
        a.axvline(5, color="0.8", lw=0.8)
        a.set_xlabel("k (gallery: the fold's held-out patients)")
        a.set_ylabel("recall@k")
        a.set_title(f"{title}, {len(gallery)} held-out patients")
        a.set_ylim(0, 1.02)
        a.legend(fontsize=7, loc="lower right")

    def bars(a, items, title, ylim):
        for i, (_name, rec, color) in enumerate(items):
            lo, hi = rec["ci"]
            a.bar(i, rec["mean"], color=color)
            a.errorbar(
                i, rec["mean"], yerr=[[rec["mean"] - lo], [hi - rec["mean"]]], color="k", capsize=4
            )
        a.set_xticks(range(len(items)), [n for n, _, _ in items], fontsize=8)
        a.set_title(title)
        a.set_ylim(*ylim)

    if "zero_shot" in res:
        bars(
            ax[2],
            [
                ("zero-shot\n(prompts)", res["zero_shot"]["auroc"], "tab:blue"),
                ("linear probe\n(same embeddings)", res["linear_probe"]["auroc"], "tab:orange"),
            ],
            "COVID-19 vs other: AUROC, 95 % CI",
            (0, 1),
        )
        ax[2].axhline(0.5, color="k", ls=":", lw=0.8)
    d = res["drafts"]
    bars(
        ax[3],
        [
            ("ROUGE-L\nretrieved", d["rouge_l"]["retrieved"], "tab:blue"),
            ("ROUGE-L\nrandom", d["rouge_l"]["random"], "0.6"),
            ("MiniLM cos\nretrieved", d["minilm_cosine"]["retrieved"], "tab:green"),
            ("MiniLM cos\nrandom", d["minilm_cosine"]["random"], "0.75"),
        ],
        f"drafts vs real notes (BLEU-4 {d['bleu4']['retrieved']['mean']:.1f} vs "
        f"{d['bleu4']['random']['mean']:.1f})",
        (0, 0.7),
    )
    fig.suptitle(
        "COVID CXR image-text alignment, 5 person-level folds (label confounded with source: "
        "a pipeline test, not a clinical result)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline(res: dict) -> dict:
    r = res["retrieval"]
    out = {}
    for way in ("image_to_text", "text_to_image"):
        for m in ("aligned", "tfidf_ridge"):
            s = r[way][m]
            out[f"{way}/{m}"] = {
                k: round(s[k]["mean"], 3)
                for k in ("recall@1", "recall@5", "recall@10", "median_rank")
            }
        out[f"{way}/random"] = {
            k: round(r[way]["aligned"][k]["random"], 3)
            for k in ("recall@1", "recall@5", "recall@10", "median_rank")
        }
    if "zero_shot" in res:
        out["zero_shot_auroc"] = res["zero_shot"]["auroc"]
        out["probe_auroc"] = res["linear_probe"]["auroc"]
    out["rouge_l"] = res["drafts"]["rouge_l"]
    out["runtime_s"] = res["runtime_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=str(ROOT / "examples" / "covid_cxr.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generative"))
    ap.add_argument("--tunes", nargs="+", default=["projection"])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--n-boot", type=int, default=1000)
    a = ap.parse_args()
    if not os.environ.get("HOLOMED_DATA"):
        raise SystemExit("set HOLOMED_DATA to the folder holding covid_cxr_multimodal/")
    set_threads(1)
    from holomed.generative.align import evaluate_alignment
    from holomed.provenance import versions
    from holomed.runfiles import write_json
    from holomed.spec import load_spec

    spec = load_spec(a.spec)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for tune in a.tunes:
        t0 = time.perf_counter()
        res = evaluate_alignment(spec, seed=a.seed, n_boot=a.n_boot, tune=tune, progress=print)
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        runs[tune] = res
        print(tune, headline(res), flush=True)
    main_tune = a.tunes[0]
    record = {
        "benchmark": "align_covid",
        "command": "HOLOMED_DATA=... python benchmarks/align_covid.py "
        + " ".join(["--tunes", *a.tunes]),
        "threads": 1,
        "headline_tune": main_tune,
        "summary": {t: headline(r) for t, r in runs.items()},
        "runs": runs,
        "versions": versions(),
        "caveat": "COVID-19 and non-COVID images and notes come from different publications: "
        "the label and the text style are confounded with the source. A pipeline test, not a "
        "clinical result.",
    }
    write_json(out / "align_covid.json", record)
    plot(runs[main_tune], out / "align_covid.png")
    print(f"wrote {out / 'align_covid.json'} and {out / 'align_covid.png'}")


if __name__ == "__main__":
    main()
