"""``image``: 2D images (X-ray, PNG/JPEG/DICOM) or 3D volumes (CT/MR, NIfTI or DICOM
series), several per patient (views, sequences, follow-ups) treated as a set, or, with
``as_channels``, co-acquired sequences stacked as the channels of one image.

The modality's frame is indexed by patient id with a column ``paths``: the list of a
patient's image files (a DICOM series is a folder). From files, ``read`` takes a table
with an id column and a path column (``options.path_column``, default ``path``); a
patient may have several rows (one per image); relative paths resolve against the
table's folder, then the spec's. With ``source: dicomweb://host/path`` the images come
from a PACS (:mod:`holomed.io.dicomweb`, ``options.dicomweb``): each patient's studies
are fetched into a local folder, and patients it could not serve are reported by
``check`` with their reason.

``check`` probes every file without decoding pixels (header of DICOM/NIfTI, PIL's
integrity check of PNG/JPEG) and reports each missing or unreadable file (``scope:
value``, with the file); a patient loses the modality only when none of its images is
usable. Pixels are decoded lazily, at ``transform`` time, only for present rows; a
file that passed the probe but whose pixels cannot be decoded (truncated pixel data) is
then an error naming the file, never a silently blank image.

:class:`ImagePreprocessor` (fitted on training patients only), per image:

1. read (:mod:`holomed.io.images`); volumes with an affine turned to RAS (``ras``);
2. intensity: ``window: [lo, hi]`` (e.g. CT in HU) clipped and scaled to [0, 1]; or
   ``zscore: true`` (per image); or, by default, ``percentile: [p_lo, p_hi]`` (default
   ``[0.5, 99.5]``, suited to X-rays whose grey levels have no physical unit) clipped
   and scaled to [0, 1];
3. geometry: with ``spacing`` (mm, one per axis or one for all) the image is resampled
   with its physical extent kept and centre-cropped / zero-padded to ``size``; without
   it, it is resized to ``size`` (bilinear / trilinear, antialiased in 2D). ``size`` is
   ``[H, W]`` or ``[D, H, W]`` (default ``[224, 224]`` for 2D, ``[64, 64, 64]`` for 3D);
4. standardised with the training pixels' mean and sd (fitted), so 0 is the training
   mean (the baseline of the attributions).

Registration of co-acquired images (MR sequences, PET/CT, 2D views too): with
``register: rigid`` or ``affine`` (default ``null``: none), every image of a patient's
set but the reference, ``register_reference`` (default 0: the patient's first usable
image, in table order), is registered to it between steps 1 and 2
(:func:`holomed.io.images.register_image`: SimpleITK, Mattes mutual information, so it
works across contrasts; a 3-level pyramid; a fixed sampling seed and one thread, so it
is reproducible; started from the shared scanner coordinates). The moving image is
resampled onto the reference's grid (the reference read, turned to RAS and, with
``spacing``, resampled to it) and then goes through steps 2-3 like the reference, so
both end on the same voxels. The transform of each image is kept in ``registration_``
(``{patient id: [record, ...]}``, each record with ``image`` (its index in the set),
``type``, ``matrix``, ``translation_mm``, ``rotation_deg``, ITK's parameters, the grid
``spacing``, the metric before / after and the seconds it took; see
:func:`~holomed.io.images.register_image`); a patient without the reference slot keeps
its images in scanner space, recorded as ``skipped``. A summary over the training
patients (counts, median / max translation and rotation) is ``registration_summary_``,
saved with the state. A registration that fails (no overlap, a constant image) is an
error naming the file. ``registered_`` counts registrations run (not read from cache).

Channels of one image (``as_channels``; default ``null``: a set). Co-acquired volumes
(MR T1 / T2 / FLAIR, PET + CT) can be stacked as the channels of ONE image instead of
kept as set elements: ``as_channels: [T1, T2, FLAIR]`` names the ``K`` channels, in the
order of a patient's rows in the table (the k-th row is channel k; a sequence a patient
lacks needs its row with an empty path to keep the later ones in place); with the reader
option ``options.channel_column: <column>`` each row names its channel and images are
matched by name. ``as_channels: true`` names ``max_images`` channels (default: the most
images a training patient has) ``ch0``, ``ch1``, ... by position.

Every image goes through steps 1-3 on its own (intensity scaled per image, so each
sequence gets its own scale), and all must land on the same voxels before they are
stacked: with ``register`` every channel is registered onto the reference channel's grid
(``register_reference``: an index or a channel name; a patient without that channel
uses its first one); without ``register`` every channel must already be on the
reference's grid (same voxel counts after turning to RAS and, with ``spacing``,
resampling to it: images that differ only in voxel size need ``spacing``), and one
that is not is a :class:`~holomed.errors.CohortError` naming the patient and both files
(voxel counts are compared, not affines: images of one grid are taken as
co-registered).

Output per patient ``(1, K + 1, *size)``: the ``K`` channels and ONE presence channel
for the image as a whole. Standardisation is per channel (``mean_`` / ``sd_`` of shape
``(K,)``, over the training patients that have that channel; a channel none has is an
error). A patient lacking some channel(s) keeps the modality with those channels 0 (the
training mean); each is in the cohort's report (``scope: value``: ``no image for channel
'FLAIR'; filled with 0 ...`` or the unusable file's reason), in ``missing_channels_``
(``{patient id: {channel: reason}}``, the patients processed so far) counted by
:meth:`~ImagePreprocessor.channel_report`, and over the training patients in
``channel_summary_`` (saved with the state); a patient with no usable image loses the
modality as before. Images beyond the ``K`` channels, or named for an unknown or an
already filled channel, are left out and reported when the cohort is checked
(``truncated_`` counts images beyond ``K`` at ``transform``; an unchecked frame with
such a name is an error).

Feature names name the channel (``img0:T2:z3:y7:x1``), so attributions say which
sequence mattered (:meth:`~ImagePreprocessor.channel_importance` sums them per channel).
``out_dim`` is ``K + 1``: ``cnn2d`` / ``cnn3d`` read the ``K`` channels with their first
convolution; ``efficientnet_lite0`` takes ``K`` = 1 or 3 (read as R, G, B) and refuses
other counts. The names enter the cache key (``as_channels`` in the settings), and each
cached image keeps its grid next to it, so the grid check needs no decoding either.

Steps 1-3 depend on the settings only, not on the fit: their result is cached on disk
(``cache_dir``; key = sha256 of the file's bytes + the settings, which include
``register`` / ``register_reference`` and ``as_channels`` when set, + for a registered
image the reference's bytes), so a second transform decodes nothing; a registered image's
record is cached next to its array. ``cache_hits_`` / ``cache_misses_`` count lookups;
``decoded_`` counts images decoded.

Memory: with a ``cache_dir``, a transform whose array would exceed ``lazy_mb`` MB (default
1024; ``null`` = never) returns a :class:`LazyImages` instead of the array. Training and
prediction then read one batch of patients at a time from the cache, so peak memory does
not grow with the cohort; code that needs the whole array still gets it with
``np.asarray``.

Output (the set layout; for ``as_channels`` see above) ``(n, max_images, C + 1, H, W)``
(or ``(..., D, H, W)``) float32: ``C`` image channels (``gray``) and a presence channel
(``image_present``: 1 on a real image, 0 on a padding slot, whose pixels are 0 too). A
patient's first ``max_images`` images are kept (default: the most any training patient
has, at most 16; ``truncated_`` counts the images left out). Rows of absent patients are
NaN. ``feature_names_out_`` names every element (``img0:gray:y12:x40``) so attributions
can be read per pixel; ``out_dim`` (what encoders are built for) is the channel count
``C + 1``.
"""

# One idea per file: reading (the table of files, probing a file without decoding it),
# check (which files a patient can use), channels (as_channels slots, element names),
# steps (intensity and geometry of one image), cache (the disk cache), registration,
# loading (steps 1-3 of a patient's images, through the cache), features (flat
# features), preprocessor (ImagePreprocessor, LazyImages).

from __future__ import annotations

from holomed.modalities.base import ModalityKind, register_modality
from holomed.modalities.image.cache import CACHE_VERSION
from holomed.modalities.image.channels import (
    CHANNELS,
    FILLED,
    MAX_IMAGES,
    NO_IMAGE,
    PRESENT,
    UNUSABLE,
    ElementNames,
    channel_names,
)
from holomed.modalities.image.check import check_images
from holomed.modalities.image.features import STATS
from holomed.modalities.image.preprocessor import ImagePreprocessor, LazyImages
from holomed.modalities.image.reading import NONFINITE, probe, read_images
from holomed.modalities.image.registration import REGISTER_RECIPE, REGISTER_SEED

__all__ = [
    "CACHE_VERSION",
    "CHANNELS",
    "FILLED",
    "IMAGE",
    "MAX_IMAGES",
    "NONFINITE",
    "NO_IMAGE",
    "PRESENT",
    "REGISTER_RECIPE",
    "REGISTER_SEED",
    "STATS",
    "UNUSABLE",
    "ElementNames",
    "ImagePreprocessor",
    "LazyImages",
    "channel_names",
    "check_images",
    "probe",
    "read_images",
]

IMAGE = register_modality(
    ModalityKind(
        "image",
        read=read_images,
        check=check_images,
        preprocessor=ImagePreprocessor,
        default_encoder="cnn2d",
    )
)
