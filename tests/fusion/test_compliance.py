"""One compliance suite for every fusion strategy in the registry (the timm / sklearn
pattern): registering a strategy is enough to have it tested here.

For every strategy (and several of its options) and every imputation mode:
output shapes, finite outputs under any missing pattern (a patient with no modality
included), absent values never read (at fusion, network and model level),
determinism under a seed, save -> load round trip, and finite gradients when absent
rows hold NaN. Also: the ``Imputer``, modality weights and modality dropout.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from holomed.candidates import load
from holomed.encoders import Encoded, create_encoder, encoder_names
from holomed.encoders.base import example_input
from holomed.fusion import IMPUTATIONS, Imputer, fusion_names, get_fusion
from holomed.fusion.late import COMBINES
from holomed.model import Model
from holomed.network import MultimodalNet
from holomed.training import modality_dropout

# -- cases, driven by the registry -------------------------------------------------

# Extra options per strategy, so their branches are checked too. A strategy missing
# from this table is still tested with its defaults ({}).
VARIANTS: dict[str, list[dict]] = {
    "late": [{"combine": c} for c in COMBINES] + [{"head_layers": 0}],
    "hybrid": [{}, {"combine": "weighted"}, {"groups": [["a", "b"], ["c"]]}],
    "guided": [{}, {"mode": "cross_attention"}, {"guide": "c"}],
    "attention": [{}, {"layers": 2, "heads": 2}],
    "gradual": [{}, {"order": ["c", "a"]}],
}
CASES = [
    pytest.param(
        name, opts, id=name + ("" if not opts else "-" + "-".join(map(str, opts.values())))
    )
    for name in fusion_names()
    for opts in VARIANTS.get(name, [{}])
]
STRATEGIES = fusion_names()
DIMS = {"a": 6, "b": 5, "c": 7}
B, T, HIDDEN = 10, 3, 16
FILLS = [float("nan"), 1e9, "random"]


def test_registry_is_not_empty_and_covers_the_design():
    names = fusion_names()
    for expected in ("early", "late", "joint", "gradual", "guided", "attention", "hybrid"):
        assert expected in names
    assert {"none", "mean", "learned", "reconstruct"} <= set(IMPUTATIONS)


# -- helpers -------------------------------------------------------------------------


def patterns() -> dict[str, dict[str, torch.Tensor]]:
    """Named presence patterns over B patients and the modalities of DIMS."""
    g = torch.Generator().manual_seed(1)
    rnd = torch.rand(B, len(DIMS), generator=g) < 0.5
    rnd[0] = True  # everything
    rnd[1] = False  # nothing at all
    rnd[2] = torch.tensor([True, False, False])  # one modality each
    rnd[3] = torch.tensor([False, True, False])
    rnd[4] = torch.tensor([False, False, True])
    out = {
        "all": {n: torch.ones(B, dtype=torch.bool) for n in DIMS},
        "random": {n: rnd[:, i].clone() for i, n in enumerate(DIMS)},
        "b_absent_for_all": {
            n: (torch.zeros(B, dtype=torch.bool) if n == "b" else rnd[:, i].clone())
            for i, n in enumerate(DIMS)
        },
        "nobody": {n: torch.zeros(B, dtype=torch.bool) for n in DIMS},
    }
    return out


def fill_absent(v: torch.Tensor, absent: torch.Tensor, fill) -> torch.Tensor:
    """``v`` with rows ``absent`` set to ``fill``; ``"random"``: large random values."""
    v = v.clone()
    if fill == "random":
        g = torch.Generator().manual_seed(123)
        v[absent] = torch.randn(v[absent].shape, generator=g) * 1e3
    else:
        v[absent] = fill
    return v


def encoded(present, fill=0.0, tokens=False, seed=0, requires_grad=False):
    """Random embeddings (and tokens) whose absent rows hold ``fill``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, d in DIMS.items():
        e = fill_absent(torch.randn(B, d, generator=g), ~present[n], fill)
        t = fill_absent(torch.randn(B, T, d, generator=g), ~present[n], fill) if tokens else None
        if requires_grad:
            e.requires_grad_(True)
        out[n] = Encoded(e, t)
    return out


def build(name, opts, imputation, n_outputs=1):
    torch.manual_seed(0)
    return get_fusion(name)(
        dict(DIMS), n_outputs, hidden=HIDDEN, dropout=0.1, imputation=imputation, **opts
    )


def run(fusion, enc, present, train=False, seed=0):
    """Output and aux loss of ``fusion`` (in training mode of a copy, so buffers such as
    the mean imputer's running mean start equal in every call), fixed dropout seed."""
    f = copy.deepcopy(fusion) if train else fusion
    f.train(train)
    torch.manual_seed(seed)
    with torch.set_grad_enabled(train):  # no graph kept on ``fusion`` (deepcopy needs that)
        out = f(enc, present)
    return out, f.aux_loss, f


# -- fusion level --------------------------------------------------------------------


@pytest.mark.parametrize("imputation", IMPUTATIONS)
@pytest.mark.parametrize(("name", "opts"), CASES)
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_output_shape(name, opts, imputation, n_outputs):
    fusion = build(name, opts, imputation, n_outputs)
    present = patterns()["random"]
    out, _, _ = run(fusion, encoded(present), present)
    assert out.shape == (B, fusion.out_dim)
    if fusion.decision_level:
        assert fusion.out_dim == n_outputs
    else:
        assert fusion.out_dim == HIDDEN
    assert out.dtype == torch.float32


@pytest.mark.parametrize("imputation", IMPUTATIONS)
@pytest.mark.parametrize(("name", "opts"), CASES)
def test_finite_under_any_missing_pattern(name, opts, imputation):
    fusion = build(name, opts, imputation)
    for pname, present in patterns().items():
        for tokens in (False, True):
            for train in (False, True):
                out, aux, _ = run(fusion, encoded(present, tokens=tokens), present, train)
                assert torch.isfinite(out).all(), (pname, tokens, train)
                assert aux is None or torch.isfinite(aux), (pname, tokens, train)


@pytest.mark.parametrize("imputation", IMPUTATIONS)
@pytest.mark.parametrize(("name", "opts"), CASES)
def test_absent_values_are_never_read(name, opts, imputation):
    """Absent rows filled with 0, NaN, +-1e9, inf or random values: same outputs (and
    same auxiliary loss), in eval and in training mode (same dropout seed)."""
    fusion = build(name, opts, imputation)
    for pname in ("random",):  # has patients with all, one and no modality
        present = patterns()[pname]
        for tokens in (False, True):
            for train in (False, True):
                ref, ref_aux, _ = run(fusion, encoded(present, 0.0, tokens), present, train)
                for fill in FILLS:
                    out, aux, _ = run(fusion, encoded(present, fill, tokens), present, train)
                    where = (pname, tokens, train, fill)
                    torch.testing.assert_close(out, ref, rtol=0, atol=0, msg=str(where))
                    if ref_aux is None:
                        assert aux is None, where
                    else:
                        torch.testing.assert_close(aux, ref_aux, rtol=0, atol=0, msg=str(where))


@pytest.mark.parametrize("imputation", IMPUTATIONS)
@pytest.mark.parametrize(("name", "opts"), CASES)
def test_absent_patient_does_not_shift_others(name, opts, imputation):
    """Each patient's output is the same alone as in a batch (eval mode)."""
    fusion = build(name, opts, imputation).eval()
    present = patterns()["random"]
    enc = encoded(present, tokens=True)
    with torch.no_grad():
        full = fusion(enc, present)
        for i in (0, 1, 2, 5):
            one = fusion(
                {n: Encoded(e.embedding[i : i + 1], e.tokens[i : i + 1]) for n, e in enc.items()},
                {n: p[i : i + 1] for n, p in present.items()},
            )
            torch.testing.assert_close(one[0], full[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("imputation", IMPUTATIONS)
@pytest.mark.parametrize(("name", "opts"), CASES)
def test_gradients_finite_when_absent_rows_hold_nan(name, opts, imputation):
    fusion = build(name, opts, imputation).train()
    present = patterns()["random"]
    enc = encoded(present, float("nan"), tokens=True, requires_grad=True)
    torch.manual_seed(0)
    out = fusion(enc, present)
    loss = out.square().mean() + (fusion.aux_loss if fusion.aux_loss is not None else 0.0)
    loss.backward()
    grads = [p.grad for p in fusion.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    for p_name, p in fusion.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), p_name
    for n, e in enc.items():
        if e.embedding.grad is not None:
            assert torch.isfinite(e.embedding.grad).all(), n
            # an absent row's value has no influence, so it receives no gradient
            assert (e.embedding.grad[~present[n]] == 0).all(), n


@pytest.mark.parametrize("imputation", IMPUTATIONS)
@pytest.mark.parametrize(("name", "opts"), CASES)
def test_modality_weights_sum_to_one_over_present(name, opts, imputation):
    fusion = build(name, opts, imputation).eval()
    for pname, present in patterns().items():
        with torch.no_grad():
            fusion(encoded(present, float("nan")), present)
        w = fusion.attention_weights
        if w is None:
            continue
        groups = getattr(fusion, "groups", None) or [[n] for n in fusion.names]
        gp = torch.stack([torch.stack([present[n] for n in g], 1).any(1) for g in groups], 1)
        assert w.shape == gp.shape, pname
        assert torch.isfinite(w).all() and (w >= 0).all() and (w <= 1 + 1e-6).all(), pname
        if imputation == "none" or fusion.decision_level:
            # weights over the present modalities only; a patient with none has none
            some = gp.any(1)
            torch.testing.assert_close(w[some].sum(1), torch.ones(int(some.sum())), msg=pname)
            assert (w[~some] == 0).all(), pname
            assert (w[~gp] == 0).all(), f"{pname}: weight on an absent modality"
        else:
            # imputed modalities take part, so every patient's weights sum to 1
            torch.testing.assert_close(w.sum(1), torch.ones(B), msg=pname)


@pytest.mark.parametrize("imputation", IMPUTATIONS)
def test_attention_weights_are_readable_and_respond_to_input(imputation):
    fusion = build("attention", {}, imputation).eval()
    present = patterns()["all"]
    with torch.no_grad():
        fusion(encoded(present, seed=0), present)
        w0 = fusion.attention_weights.clone()
        fusion(encoded(present, seed=1), present)
    assert w0.shape == (B, len(DIMS))
    assert not torch.equal(w0, fusion.attention_weights)  # per patient, not a constant


# -- network level (encoders + fusion + head) -----------------------------------------


def net_inputs(present, fill, in_dims, seed=0, shapes=None):
    g = torch.Generator().manual_seed(seed)
    x = {}
    for n, d in in_dims.items():
        shape = shapes[n] if shapes else (d,)
        x[n] = fill_absent(torch.randn(B, *shape, generator=g), ~present[n], fill)
    return x


VECTOR_ENCODERS = [e for e in encoder_names() if example_input(e)[1] == (9,)]
SHAPED_ENCODERS = [e for e in encoder_names() if example_input(e)[1] != (9,)]


def _net(name, imputation, encoder):
    """Three modalities through ``encoder``: vectors of 8, 4 and 12 features, or three
    copies of the encoder's declared example input (sequences, images, sets)."""
    if encoder in VECTOR_ENCODERS:
        in_dims, shapes = {"a": 8, "b": 4, "c": 12}, None
        enc = {n: (encoder, {"out_dim": 6} if encoder != "identity" else {}) for n in in_dims}
        sizes = None
    else:
        d, shape = example_input(encoder)
        in_dims = {"a": d, "b": d, "c": d}
        shapes = {n: shape for n in in_dims}
        enc = {n: (encoder, {}) for n in in_dims}
        sizes = {n: int(np.prod(shape)) for n in in_dims}
    torch.manual_seed(0)
    net = MultimodalNet(
        in_dims,
        enc,
        name,
        {"hidden": HIDDEN, "dropout": 0.1, "imputation": imputation},
        3,
        in_sizes=sizes,
    )
    return net, in_dims, shapes


@pytest.mark.parametrize("imputation", IMPUTATIONS)
@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("encoder", VECTOR_ENCODERS)
def test_network_shapes_and_nan_safety(name, imputation, encoder):
    _network_checks(name, imputation, encoder)


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("encoder", SHAPED_ENCODERS)
def test_network_shapes_and_nan_safety_sequence_and_image_encoders(name, encoder):
    """Encoders of sequences, signals, notes and images under every strategy (one
    imputation mode: the modes differ only in the fusion, checked above)."""
    _network_checks(name, "mean", encoder)


def _network_checks(name, imputation, encoder):
    net, in_dims, shapes = _net(name, imputation, encoder)
    for pname, present in patterns().items():
        net.eval()
        with torch.no_grad():
            ref = net(net_inputs(present, 0.0, in_dims, shapes=shapes), present)
            assert ref.shape == (B, 3)
            assert torch.isfinite(ref).all(), pname
            for fill in FILLS:
                out = net(net_inputs(present, fill, in_dims, shapes=shapes), present)
                torch.testing.assert_close(out, ref, rtol=0, atol=0, msg=f"{pname} {fill}")
        net.train()
        net.zero_grad()
        torch.manual_seed(0)
        out = net(net_inputs(present, float("nan"), in_dims, shapes=shapes), present)
        extras = list(net.aux_losses) + (
            [net.fusion.aux_loss] if net.fusion.aux_loss is not None else []
        )
        loss = out.square().mean() + sum(extras, torch.zeros(()))
        assert torch.isfinite(loss), pname
        loss.backward()
        for p_name, p in net.named_parameters():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all(), (pname, p_name)


@pytest.mark.parametrize("encoder", encoder_names())
def test_encoder_contract(encoder):
    torch.manual_seed(0)
    in_dim, shape = example_input(encoder)
    e = create_encoder(encoder, in_dim)
    assert isinstance(e.out_dim, int)
    for train in (False, True):
        e.train(train)
        out = e(torch.randn(5, *shape))
        assert out.embedding.shape == (5, e.out_dim) and torch.isfinite(out.embedding).all()
        if out.tokens is not None:
            assert out.tokens.shape[0] == 5 and out.tokens.shape[-1] == e.out_dim
        assert e(torch.zeros(0, *shape)).embedding.shape == (0, e.out_dim)  # empty batch


# -- model level (preprocessing + training + persistence) ----------------------------

# Fits dominate the suite's time, so the model level runs three imputation modes:
# 'learned' differs from 'mean' only by a trained token (a plain parameter, saved like
# any other) and is covered at the fusion and network levels above.
MODEL_IMPUTATIONS = ("none", "mean", "reconstruct")
_FITS: dict[tuple, Model] = {}


def fitted(spec, cohort, name, imputation, seed=0, again=False) -> Model:
    if not get_fusion(name).imputes:  # the spec refuses imputation for these: none
        imputation = "none"
    key = (name, imputation, seed)
    if again or key not in _FITS:
        s = spec.with_fusion(name, imputation=imputation)
        train = cohort.subset(np.nonzero(cohort.split == "train")[0])
        m = Model(s, seed=seed).fit(train)
        if again:
            return m
        _FITS[key] = m
    return _FITS[key]


def with_patient_without_data(cohort):
    """The cohort with patient 0 lacking every modality and patient 1 lacking all but
    clinical (on top of the synthetic missingness)."""
    pres = {k: v.copy() for k, v in cohort.presence().items()}
    for k in pres:
        pres[k][0] = False
        if k != "clinical":
            pres[k][1] = False
    return cohort.with_presence(pres)


@pytest.mark.parametrize("imputation", MODEL_IMPUTATIONS)
@pytest.mark.parametrize("name", STRATEGIES)
def test_model_predictions_shape_and_finite(tiny_spec, tiny_cohort, name, imputation):
    m = fitted(tiny_spec, tiny_cohort, name, imputation)
    c = with_patient_without_data(tiny_cohort)
    assert not any(p[0] for p in c.presence().values())
    proba = m.predict_proba(c)
    assert proba.shape == (len(c), 2)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    assert m.predict(c).shape == (len(c),)


@pytest.mark.parametrize("imputation", MODEL_IMPUTATIONS)
@pytest.mark.parametrize("name", STRATEGIES)
def test_model_never_reads_absent_raw_values(tiny_spec, tiny_cohort, name, imputation):
    """(1) Absent rows' raw values replaced in the cohort itself (NaN, 1e9, text) ->
    same predictions. (2) The preprocessed inputs' absent rows set to NaN or 1e9 and
    fed to ``net_`` directly -> same logits as with zeros."""
    m = fitted(tiny_spec, tiny_cohort, name, imputation)
    c = with_patient_without_data(tiny_cohort)
    ref = m.predict_proba(c)
    for fill in (float("nan"), 1e9, -1e9):
        mods = {}
        for k, md in c.modalities.items():
            vals = md.values.copy()
            num = [col for col in vals.columns if vals[col].dtype.kind == "f"]
            vals.loc[~md.present, num] = fill
            txt = [col for col in vals.columns if col not in num]
            vals.loc[~md.present, txt] = "never-seen"
            mods[k] = dataclasses.replace(md, values=vals)
        bad = dataclasses.replace(c, modalities=mods)
        np.testing.assert_array_equal(m.predict_proba(bad), ref, err_msg=f"fill {fill}")

    x, present = m._arrays(c)
    pt = {k: torch.as_tensor(v) for k, v in present.items()}
    m.net_.eval()

    def logits(fill):
        xt = {
            k: torch.as_tensor(np.where(present[k][:, None], v, fill), dtype=torch.float32)
            for k, v in x.items()
        }
        with torch.no_grad():
            return m.net_(xt, pt)

    zero = logits(0.0)
    assert torch.isfinite(zero).all()
    for fill in (float("nan"), 1e9, float("inf")):
        torch.testing.assert_close(logits(fill), zero, rtol=0, atol=0, msg=f"fill {fill}")


@pytest.mark.parametrize("imputation", MODEL_IMPUTATIONS)
@pytest.mark.parametrize("name", STRATEGIES)
def test_model_deterministic_under_seed(tiny_spec, tiny_cohort, name, imputation):
    a = fitted(tiny_spec, tiny_cohort, name, imputation)
    b = fitted(tiny_spec, tiny_cohort, name, imputation, again=True)
    pa, pb = a.predict_proba(tiny_cohort), b.predict_proba(tiny_cohort)
    np.testing.assert_array_equal(pa, pb)
    for k, v in a.net_.state_dict().items():
        torch.testing.assert_close(v, b.net_.state_dict()[k], rtol=0, atol=0, msg=k)
    if imputation == "none":  # the check can fail: another seed, another model
        other = fitted(tiny_spec, tiny_cohort, name, imputation, seed=1, again=True)
        assert not np.allclose(pa, other.predict_proba(tiny_cohort))


@pytest.mark.parametrize("imputation", MODEL_IMPUTATIONS)
@pytest.mark.parametrize("name", STRATEGIES)
def test_model_save_load_round_trip(tiny_spec, tiny_cohort, name, imputation, tmp_path):
    m = fitted(tiny_spec, tiny_cohort, name, imputation)
    m.save(tmp_path / "bundle")
    assert not list((tmp_path / "bundle").glob("*.pkl"))
    back = load(tmp_path / "bundle")
    expected = imputation if get_fusion(name).imputes else "none"
    assert back.fusion_name == name and back.spec.fusion.imputation == expected
    c = with_patient_without_data(tiny_cohort)
    np.testing.assert_array_equal(back.predict_proba(c), m.predict_proba(c))
    for k, v in m.net_.state_dict().items():  # buffers too (e.g. the mean imputer's)
        torch.testing.assert_close(back.net_.state_dict()[k], v, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("name", STRATEGIES)
def test_model_gradients_finite_with_nan_inputs(tiny_spec, tiny_cohort, name):
    m = fitted(tiny_spec, tiny_cohort, name, "reconstruct")
    net = copy.deepcopy(m.net_).train()
    c = with_patient_without_data(tiny_cohort)
    x, present = m._arrays(c)  # absent rows are NaN here
    assert all(np.isnan(x[k][~present[k]]).all() for k in x)
    xt = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in x.items()}
    pt = {k: torch.as_tensor(v) for k, v in present.items()}
    out = net(xt, pt)
    aux = [*net.aux_losses] + ([net.fusion.aux_loss] if net.fusion.aux_loss is not None else [])
    loss = m.task_.loss(out, torch.as_tensor(c.y)) + sum(aux, torch.zeros(()))
    loss.backward()
    n_grads = 0
    for p_name, p in net.named_parameters():
        if p.grad is not None:
            n_grads += 1
            assert torch.isfinite(p.grad).all(), p_name
    assert n_grads > 0


# -- regressions: each bug found gets the test that would have caught it ------------


def test_hybrid_rejects_groups_naming_unknown_modalities():
    """A typo in ``groups`` is an error, not a silently dropped modality."""
    with pytest.raises(ValueError, match="zzz"):
        build("hybrid", {"groups": [["a", "zzz"], ["b", "c"]]}, "none")


def test_save_load_after_fusion_override_with_strategy_options(
    make_tiny_spec, tiny_cohort, tmp_path
):
    """``Model(spec, fusion=other)``: the bundle must not hand the spec's strategy-specific
    options (``combine`` of ``late``) to the other strategy on load."""
    spec = make_tiny_spec(fusion={"name": "late", "options": {"combine": "weighted"}})
    m = Model(spec, fusion="joint").fit(tiny_cohort)
    m.save(tmp_path / "b")
    back = load(tmp_path / "b")
    np.testing.assert_array_equal(back.predict_proba(tiny_cohort), m.predict_proba(tiny_cohort))


# -- the Imputer -------------------------------------------------------------------


def _emb(present, fill=float("nan"), seed=0):
    return {n: e.embedding for n, e in encoded(present, fill, seed=seed).items()}


def test_imputer_none_zeros_absent_rows_keeps_present():
    present = patterns()["random"]
    emb = _emb(present)
    out, aux = Imputer(DIMS, "none")(emb, present)
    assert aux is None
    for n in DIMS:
        assert (out[n][~present[n]] == 0).all()
        torch.testing.assert_close(out[n][present[n]], emb[n][present[n]])


def test_imputer_mean_tracks_present_rows_only_and_fills_absent():
    present = patterns()["random"]
    imp = Imputer(DIMS, "mean", momentum=1.0).train()
    emb = _emb(present, 1e9)
    imp(emb, present)
    for n in DIMS:
        torch.testing.assert_close(getattr(imp, f"mean_{n}"), emb[n][present[n]].mean(0))
    imp.eval()
    before = {n: getattr(imp, f"mean_{n}").clone() for n in DIMS}
    out, aux = imp(_emb(present, float("nan"), seed=3), present)
    assert aux is None
    for n in DIMS:
        assert torch.equal(getattr(imp, f"mean_{n}"), before[n])  # eval: no update
        torch.testing.assert_close(
            out[n][~present[n]], before[n].expand(int((~present[n]).sum()), -1)
        )
    # momentum: the running mean moves part of the way
    imp2 = Imputer(DIMS, "mean", momentum=0.1).train()
    imp2(emb, present)
    torch.testing.assert_close(imp2.mean_a, 0.1 * emb["a"][present["a"]].mean(0))
    # the running mean is saved with the model (a buffer)
    assert "mean_a" in imp2.state_dict()


def test_imputer_learned_token_fills_absent_and_is_trained():
    present = patterns()["random"]
    imp = Imputer(DIMS, "learned").train()
    with torch.no_grad():
        for n in DIMS:
            imp.tokens[n].fill_(0.5)
    out, _ = imp(_emb(present), present)
    for n in DIMS:
        assert (out[n][~present[n]] == 0.5).all()
    sum(o.sum() for o in out.values()).backward()
    for n in DIMS:
        assert imp.tokens[n].grad is not None
        torch.testing.assert_close(
            imp.tokens[n].grad, torch.full((DIMS[n],), float((~present[n]).sum()))
        )


def test_imputer_reconstruct_guesses_from_others_with_aux_loss():
    present = patterns()["random"]
    torch.manual_seed(0)
    imp = Imputer(DIMS, "reconstruct", hidden=8).train()
    emb = _emb(present)
    out, aux = imp(emb, present)
    assert aux is not None and torch.isfinite(aux) and aux > 0
    for n in DIMS:
        assert torch.isfinite(out[n]).all()
        torch.testing.assert_close(out[n][present[n]], emb[n][present[n]])
        assert not (out[n][~present[n]] == 0).all()  # a guess, not zeros
    # a guess depends on the other present modalities, not on the absent value
    emb2 = _emb(present, 1e9)
    out2, aux2 = imp(emb2, present)
    for n in DIMS:
        torch.testing.assert_close(out2[n], out[n])
    torch.testing.assert_close(aux2, aux)
    # guesses change with the present modalities' values
    out3, _ = imp(_emb(present, seed=5), present)
    i = int(torch.nonzero(~present["a"] & (present["b"] | present["c"]))[0, 0])
    assert not torch.allclose(out3["a"][i], out["a"][i])
    imp.eval()
    assert imp(emb, present)[1] is None  # no auxiliary loss outside training


# -- modality dropout --------------------------------------------------------------


@pytest.mark.parametrize("p", [0.3, 0.7, 0.99])
def test_modality_dropout_never_removes_all_modalities(p):
    g = torch.Generator().manual_seed(0)
    n = 2000
    pres = torch.rand(n, 4, generator=g) < 0.6
    pres[:20] = False  # patients with nothing stay with nothing
    present = {f"m{i}": pres[:, i].clone() for i in range(4)}
    new = modality_dropout(present, p, torch.Generator().manual_seed(1))
    newm = torch.stack([new[f"m{i}"] for i in range(4)], 1)
    assert newm.dtype == torch.bool and newm.shape == pres.shape
    assert not (newm & ~pres).any(), "dropout added a modality"
    had = pres.any(1)
    assert newm[had].any(1).all(), "a patient lost every modality"
    assert not newm[~had].any()
    dropped = float((pres & ~newm).sum() / pres.sum())
    assert dropped > 0.01, "dropout dropped (almost) nothing"
    if p < 0.9:  # at high p most patients would lose all and keep theirs instead
        assert dropped > p / 3
    # seeded: the same generator seed gives the same masks
    again = modality_dropout(present, p, torch.Generator().manual_seed(1))
    assert all(torch.equal(again[k], new[k]) for k in new)
    # the input masks are left untouched
    assert torch.equal(torch.stack([present[f"m{i}"] for i in range(4)], 1), pres)


def test_modality_dropout_zero_is_identity():
    present = patterns()["random"]
    assert modality_dropout(present, 0.0) is present
