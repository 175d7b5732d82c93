"""A trained candidate of any family as a directory a hospital can trust:

- ``spec.yaml``: the spec it was trained from;
- ``state.json``: the candidate's state (family, name, preprocessing settings, task,
  members of a stack or ensemble), plain JSON;
- ``weights.safetensors``: every numeric array (network weights, coefficients,
  preprocessing arrays);
- ``models/*.txt``: text model files in a library's own format (LightGBM);
- ``card.json``: data summary, metrics, calibration, intended use;
- ``manifest.json``: schema version, holomed version, sha256 of every file above and,
  when ``HOLOMED_BUNDLE_KEY`` is set at save time, an HMAC-SHA256 signature of the list.

Saving writes a temporary folder beside the target and renames it into place, so a
bundle is whole or absent. Loading verifies the manifest (any edit, truncation, missing
or unlisted model file is refused, naming the file), and, when ``HOLOMED_BUNDLE_KEY`` is
set, requires a valid signature. It parses YAML/JSON, reads tensors and LightGBM text;
it never unpickles or imports anything from the bundle, and no path it names is used to
read or write outside the bundle (preprocessing caches are switched off on load).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from holomed.errors import BundleError
from holomed.provenance import DEFAULT_USE, run_card, versions  # noqa: F401 (re-exported)
from holomed.spec import load_yaml, parse_spec

SCHEMA_VERSION = 2
KEY_ENV = "HOLOMED_BUNDLE_KEY"
FILES = ("spec.yaml", "state.json", "weights.safetensors", "card.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _signature(files: dict[str, str], key: str) -> str:
    msg = json.dumps(files, sort_keys=True).encode()
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


def _summary(c: Any) -> dict[str, Any]:
    return {
        "family": c.family,
        "candidate": c.name,
        "task": c.task_.name,
        "classes": c.classes_,
        "modalities": {
            n: {"kind": p.kind, "features_in": p.out_dim, "shape": list(p.out_shape)}
            for n, p in c.preprocessors_.items()
        },
    }


def save_bundle(model: Any, path: Path, card: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a bundle at ``path``, replacing an earlier bundle there
    atomically; anything else at ``path`` (a file, a folder that is not a bundle and not
    empty) is refused, never deleted."""
    if not hasattr(model, "task_"):
        raise BundleError("the model is not fitted; call fit() before save()")
    path = Path(path)
    if path.exists() and not (
        (path / "manifest.json").is_file() or (path.is_dir() and not any(path.iterdir()))
    ):
        raise BundleError(
            f"{path}: exists and is not a holomed bundle; save to a new or empty folder "
            "(only an earlier bundle is replaced)"
        )
    meta, arrays, texts = model.to_state()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        tensors = {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in arrays.items()}
        save_file(tensors, str(tmp / "weights.safetensors"))
        spec = model.spec.model_copy(deep=True)
        if "spec" in meta:  # a neural model's own (strategy-resolved) spec
            spec = parse_spec(meta["spec"], where="model spec")
        head = ""
        family, name = str(meta.get("family", "")), str(meta.get("name", ""))
        if family and family != "neural":  # the spec's fusion/training are not this model's
            again = (  # members and weights come from the comparison that chose them
                "holomed fit spec.yaml --from COMPARE_RUN"
                if family in ("stacking", "ensemble")
                else f"holomed fit spec.yaml --fusion {name} --all"
            )
            head = (
                f"# The model in this bundle is the candidate {name!r} ({family}): the fusion\n"
                "# and training settings below do not apply to it. Train it again with:\n"
                f"#   {again}\n"
            )
        (tmp / "spec.yaml").write_text(head + spec.to_yaml())
        state = {"schema_version": SCHEMA_VERSION, **meta}
        (tmp / "state.json").write_text(json.dumps(state, indent=1, allow_nan=False))
        if texts:
            (tmp / "models").mkdir()
            for k, text in texts.items():
                (tmp / "models" / k).write_text(text)
        full_card = {
            "schema_version": SCHEMA_VERSION,
            "intended_use": DEFAULT_USE,
            "dataset": spec.dataset,
            "fusion": model.name,
            **_summary(model),
            "versions": versions(),
            **(card or {}),
        }
        (tmp / "card.json").write_text(json.dumps(full_card, indent=2, default=str))
        files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "holomed": versions()["holomed"],
            "files": files,
        }
        key = os.environ.get(KEY_ENV)
        if key:
            manifest["signature"] = {"hmac_sha256": _signature(files, key)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def verify_bundle(path: Path) -> dict[str, Any]:
    """Check the manifest: every listed file exists with its sha256, every model file is
    listed, the schema is this one, and the signature is valid when a key is set."""
    mpath = path / "manifest.json"
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle folder")
    if not mpath.exists():
        raise BundleError(f"{mpath}: missing; not a holomed bundle (or saved before schema 2)")
    try:
        manifest = json.loads(mpath.read_text())
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(f"{mpath}: not a valid manifest ({err})") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(
            f"{mpath}: bundle schema {manifest.get('schema_version')} is not "
            f"{SCHEMA_VERSION}; re-save it with this holomed version"
        )
    for name in ("spec.yaml", "state.json", "weights.safetensors"):
        if name not in files:
            raise BundleError(f"{path / name}: not listed in the manifest")
    root = path.resolve()
    for name, digest in files.items():
        f = (path / name).resolve()
        if root not in f.parents:
            raise BundleError(f"{mpath}: file {name!r} lies outside the bundle")
        if not f.is_file():
            raise BundleError(f"{path / name}: missing (listed in the manifest)")
        if _sha256(f) != digest:
            raise BundleError(f"{path / name}: changed since the bundle was saved (sha256)")
    for f in sorted(path.rglob("*")):  # nothing unlisted rides along, at any depth
        rel = f.relative_to(path).as_posix()
        if rel != "manifest.json" and not f.is_dir() and rel not in files:
            raise BundleError(f"{f}: not listed in the manifest")
    key = os.environ.get(KEY_ENV)
    if key:
        sig = (manifest.get("signature") or {}).get("hmac_sha256")
        if not sig or not hmac.compare_digest(sig, _signature(files, key)):
            raise BundleError(f"{mpath}: signature missing or invalid for this site's key")
    return manifest


def _no_caches(meta: Any) -> Any:
    """Preprocessing settings without on-disk cache folders (a loaded bundle never
    writes outside itself)."""
    if isinstance(meta, dict):
        return {k: (None if k == "cache_dir" else _no_caches(v)) for k, v in meta.items()}
    if isinstance(meta, list):
        return [_no_caches(v) for v in meta]
    return meta


def read_bundle(path: Path) -> tuple[Any, dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """Verify a bundle written by :func:`save_bundle` and read it: (spec, state with
    cache folders switched off, arrays, texts). Turning these into a candidate is the
    candidate registry's job (``holomed.candidates.load_bundle``)."""
    path = Path(path)
    verify_bundle(path)
    try:
        state = json.loads((path / "state.json").read_text())
    except ValueError as err:
        raise BundleError(f"{path / 'state.json'}: not valid JSON ({err})") from None
    try:
        spec = parse_spec(
            load_yaml((path / "spec.yaml").read_text()), where=str(path / "spec.yaml")
        )
    except yaml.YAMLError as err:
        raise BundleError(f"{path / 'spec.yaml'}: not valid YAML ({err})") from None
    try:
        arrays = {k: v.numpy() for k, v in load_file(str(path / "weights.safetensors")).items()}
    except Exception as err:  # noqa: BLE001 - safetensors raises several types
        raise BundleError(f"{path / 'weights.safetensors'}: unreadable ({err})") from None
    texts = {}
    models = path / "models"
    if models.is_dir():
        texts = {
            str(f.relative_to(models)): f.read_text() for f in models.rglob("*") if f.is_file()
        }
    return spec, _no_caches(state), arrays, texts
