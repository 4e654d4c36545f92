"""The Jigsaw-trained BiLSTM of the PyPI wheel `toxic-comment-classifier` (MIT), run in torch.

The wheel ships Keras 3 weights (`toxic_classifier/model/model.weights.h5`) and a pickled
`keras.src.legacy.preprocessing.text.Tokenizer` (`tokenizer.pickle`); its own module imports
tensorflow, so it is installed with `--no-deps` and never imported. This module reads both files
without keras or tensorflow:

- the tokenizer through a restricted unpickler (only the Tokenizer class, mapped to a stand-in
  that keeps its state, and `OrderedDict`/`defaultdict`/`int` are allowed), then reproduces
  `Tokenizer.texts_to_sequences` (lowercase, every `filters` character -> `split`, split on
  `split`, drop empty words, keep only indices < `num_words`, OOV as the tokenizer says) and
  `pad_sequences(seq, maxlen=100)` with Keras's defaults (padding and truncating "pre": the last
  100 words are kept, zeros in front);
- the weights with h5py into Embedding(20000, 50) -> Bidirectional(LSTM(50, return_sequences))
  -> GlobalMaxPooling1D -> Dense(50, relu) -> [Dropout] -> Dense(6, sigmoid), exactly the graph
  of the wheel's `ToxicCommentClassifier` (no masking: padding steps go through the LSTM and
  the max-pool, as in Keras). Keras's LSTM gates are stacked i, f, c, o like torch's i, f, g, o,
  so kernels only need transposing; Keras has one bias (torch's `bias_hh` is zero).

Outputs, in the wheel's order: toxic, severe_toxic, obscene, threat, insult, identity_hate. The
scorer's toxicity is `toxic`."""

from __future__ import annotations

import collections
import copy
import functools
import importlib.metadata
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.evaluation.scorer_base import file_digest, short_reason
from engine.errors import ScorerError

WHEEL = "toxic-comment-classifier"
PACKAGE_DIR = "toxic_classifier/model"
WEIGHTS_FILE = "model.weights.h5"
TOKENIZER_FILE = "tokenizer.pickle"
CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
MAXLEN, VOCAB_SIZE, EMBEDDING_DIM, UNITS = 100, 20000, 50, 50
BATCH_SIZE = 512


# -- the tokenizer ------------------------------------------------------------------------------
class LegacyTokenizerState:
    """Stands in for keras's legacy `Tokenizer` while unpickling: the pickle's BUILD puts the
    tokenizer's attributes (word_index, filters, lower, split, num_words, oov_token, ...) in
    this object's `__dict__`; nothing of keras runs."""


_ALLOWED_GLOBALS = {
    ("keras.src.legacy.preprocessing.text", "Tokenizer"): LegacyTokenizerState,
    ("keras.preprocessing.text", "Tokenizer"): LegacyTokenizerState,       # older pickles
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "int"): int,
}


class _TokenizerUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"tokenizer pickle refers to {module}.{name}, "
                                         "which is not allowed") from None


class KerasTextTokenizer:
    """`Tokenizer.texts_to_sequences` + `pad_sequences(maxlen)` of keras (legacy preprocessing),
    reimplemented on the tokenizer's pickled state."""

    def __init__(self, state: dict, maxlen: int = MAXLEN):
        if state.get("char_level") or state.get("analyzer") is not None:
            raise ScorerError("the tokenizer uses char_level or a custom analyzer, which this "
                              "reimplementation does not support")
        self.lower = bool(state.get("lower", True))
        self.split = state.get("split", " ")
        self.filters = state.get("filters", "")
        self.num_words = state.get("num_words")
        self.oov_token = state.get("oov_token")
        word_index = state["word_index"]
        self.oov_index = word_index.get(self.oov_token) if self.oov_token is not None else None
        # only the indices texts_to_sequences can emit (< num_words when it is set)
        self.vocab = {w: i for w, i in word_index.items() if not self.num_words or i < self.num_words}
        self._table = str.maketrans({c: self.split for c in self.filters})
        self.maxlen = maxlen

    @classmethod
    def load(cls, path: Path, maxlen: int = MAXLEN) -> "KerasTextTokenizer":
        with open(path, "rb") as handle:
            state = _TokenizerUnpickler(handle).load()
        if not isinstance(state, LegacyTokenizerState) or "word_index" not in vars(state):
            raise ScorerError(f"{path} is not a pickled keras Tokenizer")
        return cls(vars(state), maxlen)

    def words(self, text: str) -> list[str]:
        """keras `text_to_word_sequence` with this tokenizer's filters, lower and split."""
        if self.lower:
            text = text.lower()
        return [w for w in text.translate(self._table).split(self.split) if w]

    def texts_to_sequences(self, texts: Sequence[str]) -> list[list[int]]:
        vocab, oov = self.vocab, self.oov_index
        if self.oov_token is None:
            return [[vocab[w] for w in self.words(t) if w in vocab] for t in texts]
        return [[vocab.get(w, oov) for w in self.words(t)] for t in texts]

    def pad(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """keras `pad_sequences(sequences, maxlen)`: int32, padding="pre", truncating="pre"
        (keeps the last `maxlen` ids), value 0."""
        out = np.zeros((len(sequences), self.maxlen), dtype=np.int64)
        for row, seq in enumerate(sequences):
            if seq:
                kept = seq[-self.maxlen:]
                out[row, self.maxlen - len(kept):] = kept
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.pad(self.texts_to_sequences(texts))


# -- the network --------------------------------------------------------------------------------
def _read_weights(path: Path) -> dict[str, np.ndarray]:
    try:
        import h5py
    except ImportError as exc:
        raise ScorerError(f"scorer 'bilstm' needs h5py: {short_reason(exc)}") from exc
    names = {"embedding": "layers/embedding/vars/0",
             "fw_kernel": "layers/bidirectional/forward_layer/cell/vars/0",
             "fw_recurrent": "layers/bidirectional/forward_layer/cell/vars/1",
             "fw_bias": "layers/bidirectional/forward_layer/cell/vars/2",
             "bw_kernel": "layers/bidirectional/backward_layer/cell/vars/0",
             "bw_recurrent": "layers/bidirectional/backward_layer/cell/vars/1",
             "bw_bias": "layers/bidirectional/backward_layer/cell/vars/2",
             "dense_kernel": "layers/dense/vars/0", "dense_bias": "layers/dense/vars/1",
             "out_kernel": "layers/dense_1/vars/0", "out_bias": "layers/dense_1/vars/1"}
    shapes = {"embedding": (VOCAB_SIZE, EMBEDDING_DIM), "fw_kernel": (EMBEDDING_DIM, 4 * UNITS),
              "fw_recurrent": (UNITS, 4 * UNITS), "fw_bias": (4 * UNITS,),
              "dense_kernel": (2 * UNITS, 50), "dense_bias": (50,),
              "out_kernel": (50, len(CLASSES)), "out_bias": (len(CLASSES),)}
    shapes.update({k.replace("fw_", "bw_"): v for k, v in shapes.items() if k.startswith("fw_")})
    try:
        with h5py.File(path, "r") as f:
            weights = {key: np.asarray(f[name], dtype=np.float32) for key, name in names.items()}
    except (OSError, KeyError) as exc:
        raise ScorerError(f"BiLSTM weights {path} cannot be read: {short_reason(exc)}") from exc
    for key, shape in shapes.items():
        if weights[key].shape != shape:
            raise ScorerError(f"BiLSTM weights {path}: {key} has shape {weights[key].shape}, "
                              f"expected {shape}")
    return weights


def build_network(weights: dict[str, np.ndarray]):
    """The reference torch module (`torch.nn.LSTM(bidirectional=True)`): ids (batch, 100) ->
    six sigmoid probabilities (batch, 6). `FastBiLSTM` computes the same from its parameters."""
    import torch
    from torch import nn

    class BiLSTMClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(VOCAB_SIZE, EMBEDDING_DIM)
            self.lstm = nn.LSTM(EMBEDDING_DIM, UNITS, batch_first=True, bidirectional=True)
            self.dense = nn.Linear(2 * UNITS, 50)
            self.out = nn.Linear(50, len(CLASSES))

        def forward(self, ids):
            states, _ = self.lstm(self.embedding(ids))      # (batch, time, fw ++ bw), like Keras concat
            pooled = states.max(dim=1).values                # GlobalMaxPooling1D over every step
            return torch.sigmoid(self.out(torch.relu(self.dense(pooled))))

    net = BiLSTMClassifier()
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    with torch.no_grad():
        net.embedding.weight.copy_(t(weights["embedding"]))
        for prefix, suffix in (("fw", ""), ("bw", "_reverse")):
            # Keras kernel (in, 4u) with gates i, f, c, o == torch weight_ih (4u, in), gates i, f, g, o
            getattr(net.lstm, f"weight_ih_l0{suffix}").copy_(t(weights[f"{prefix}_kernel"].T))
            getattr(net.lstm, f"weight_hh_l0{suffix}").copy_(t(weights[f"{prefix}_recurrent"].T))
            getattr(net.lstm, f"bias_ih_l0{suffix}").copy_(t(weights[f"{prefix}_bias"]))
            getattr(net.lstm, f"bias_hh_l0{suffix}").zero_()
        net.dense.weight.copy_(t(weights["dense_kernel"].T))
        net.dense.bias.copy_(t(weights["dense_bias"]))
        net.out.weight.copy_(t(weights["out_kernel"].T))
        net.out.bias.copy_(t(weights["out_bias"]))
    return net.eval()


class FastBiLSTM:
    """The same function as `build_network`'s module, computed faster (same weights, results
    equal to float32 rounding, ~3e-7):

    - the input projection `embedding @ W_ih + b` is one table per direction (20000 x 200), so
      each step is a row gather plus one (batch, 50) x (50, 200) matmul;
    - Keras pads in front (`padding="pre"`), so the forward direction first reads only the pad
      id 0 from a zero state: that part of its trajectory is the same for every text and is
      computed once (states and running max after k pad steps, k = 0..100); a batch of texts
      (sorted by length) runs the forward direction only over its longest text's last steps.
      The backward direction reads the words first and its state differs per text through the
      padding after them, so it runs all 100 steps (no shortcut; no masking, as in Keras).
    - gates are reordered i, f, o, g so that one sigmoid and one tanh cover them."""

    def __init__(self, module, device: str = "cpu"):
        import torch

        self.torch, self.device = torch, device
        lstm = module.lstm
        order = torch.cat([torch.arange(0, 2 * UNITS), torch.arange(3 * UNITS, 4 * UNITS),
                           torch.arange(2 * UNITS, 3 * UNITS)])         # i, f, g, o -> i, f, o, g
        with torch.no_grad():
            table = module.embedding.weight.detach()

            def direction(suffix: str):
                w_ih = getattr(lstm, f"weight_ih_l0{suffix}").detach()[order]
                w_hh = getattr(lstm, f"weight_hh_l0{suffix}").detach()[order]
                bias = (getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")).detach()[order]
                return (table @ w_ih.T + bias).contiguous().to(device), w_hh.T.contiguous().to(device)

            self.fw_in, self.fw_rec = direction("")
            self.bw_in, self.bw_rec = direction("_reverse")
            # copies: the cached reference module stays on the CPU
            self.dense, self.out = copy.deepcopy(module.dense).to(device), copy.deepcopy(module.out).to(device)
            # forward direction over k leading pads from the zero state, k = 0..MAXLEN
            h = torch.zeros(1, UNITS, device=device)
            c = torch.zeros(1, UNITS, device=device)
            peak = torch.full((1, UNITS), -torch.inf, device=device)
            hs, cs, peaks = [h], [c], [peak]
            for _ in range(MAXLEN):
                h, c = self._step(self.fw_in[0:1], h, c, self.fw_rec)
                peak = torch.maximum(peak, h)
                hs.append(h), cs.append(c), peaks.append(peak)
            self.pad_h, self.pad_c, self.pad_peak = torch.cat(hs), torch.cat(cs), torch.cat(peaks)

    def _step(self, x, h, c, rec):
        torch = self.torch
        z = torch.addmm(x, h, rec)
        gates = torch.sigmoid(z[:, :3 * UNITS])
        c = torch.addcmul(gates[:, UNITS:2 * UNITS] * c, gates[:, :UNITS], torch.tanh(z[:, 3 * UNITS:]))
        return gates[:, 2 * UNITS:] * torch.tanh(c), c

    def __call__(self, ids, longest: int):
        """ids (batch, MAXLEN) pre-padded; `longest` = the most words of any text in the batch."""
        torch = self.torch
        batch, steps = ids.shape[0], max(1, min(int(longest), MAXLEN))
        first = MAXLEN - steps                      # every text is still padding before this step
        window = ids[:, first:].T                   # (steps, batch), time-major
        xs = self.fw_in[window]
        h = self.pad_h[first].expand(batch, UNITS)
        c = self.pad_c[first].expand(batch, UNITS)
        fw_peak = self.pad_peak[first].expand(batch, UNITS).clone()
        for t in range(steps):
            h, c = self._step(xs[t], h, c, self.fw_rec)
            torch.maximum(fw_peak, h, out=fw_peak)
        xs = self.bw_in[window]
        h = torch.zeros(batch, UNITS, device=self.device)
        c = torch.zeros(batch, UNITS, device=self.device)
        bw_peak = torch.full((batch, UNITS), -torch.inf, device=self.device)
        for t in range(steps - 1, -1, -1):
            h, c = self._step(xs[t], h, c, self.bw_rec)
            torch.maximum(bw_peak, h, out=bw_peak)
        pad = self.bw_in[0].expand(batch, 4 * UNITS)
        for _ in range(first):
            h, c = self._step(pad, h, c, self.bw_rec)
            torch.maximum(bw_peak, h, out=bw_peak)
        pooled = torch.cat([fw_peak, bw_peak], dim=1)
        return torch.sigmoid(self.out(torch.relu(self.dense(pooled))))


# -- finding the wheel's files --------------------------------------------------------------------
def wheel_model_dir() -> Path:
    """The installed wheel's model folder, found through its metadata (not by importing it:
    its module imports tensorflow)."""
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise ScorerError(f"scorer 'bilstm' needs the {WHEEL} wheel: "
                          f"pip install --no-deps {WHEEL}==0.3.0 (scripts/setup.sh does)") from None
    folder = Path(str(dist.locate_file(PACKAGE_DIR)))
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / TOKENIZER_FILE).is_file():
        raise ScorerError(f"{WHEEL} is installed but {folder} lacks {WEIGHTS_FILE} or {TOKENIZER_FILE}")
    return folder


def bilstm_status() -> str:
    """What the `bilstm` scorer needs, checked without loading anything."""
    import importlib.util
    try:
        folder = wheel_model_dir()
    except ScorerError as exc:
        return f"missing: {exc}"
    if importlib.util.find_spec("h5py") is None:
        return "missing: pip install h5py"
    return f"available ({WHEEL} {importlib.metadata.version(WHEEL)}, {folder})"


@functools.lru_cache(maxsize=2)
def _load(folder: str):
    """(tokenizer, reference nn.LSTM module, weights identity) for a model folder; cached
    because unpickling the 210k-word tokenizer takes about a second."""
    path = Path(folder)
    try:
        tokenizer = KerasTextTokenizer.load(path / TOKENIZER_FILE)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as exc:
        raise ScorerError(f"tokenizer {path / TOKENIZER_FILE} cannot be read: {short_reason(exc)}") from exc
    module = build_network(_read_weights(path / WEIGHTS_FILE))
    identity = f"weights sha256:{file_digest(path / WEIGHTS_FILE)}"
    return tokenizer, module, identity


@functools.lru_cache(maxsize=4)
def _fast(folder: str, device: str) -> FastBiLSTM:
    return FastBiLSTM(_load(folder)[1], device)


class _SingleThread:
    """torch at one intra-op thread while scoring on CPU, restored after: each LSTM step is a
    tiny matmul, and on a busy 2-core machine two OpenMP threads made it 20-50x slower than one
    (measured here); one thread is also at least as fast when the machine is idle."""

    def __init__(self, torch, device: str):
        self.torch, self.active, self.before = torch, str(device) == "cpu", 1

    def __enter__(self):
        if self.active:
            self.before = self.torch.get_num_threads()
            self.torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.active and self.before != 1:
            self.torch.set_num_threads(self.before)


class BiLSTMScorer:
    """`bilstm`: the wheel's Keras BiLSTM (Jigsaw 2018 labels) in torch, batched; the score is
    the `toxic` probability."""

    name = "bilstm"
    key = "toxic"

    def __init__(self, model_dir: str | Path | None = None, *, device: str = "cpu",
                 batch_size: int = BATCH_SIZE):
        try:
            import torch
        except ImportError as exc:
            raise ScorerError(f"scorer 'bilstm' needs torch: {short_reason(exc)}") from exc
        folder = Path(model_dir).expanduser().resolve() if model_dir else wheel_model_dir()
        self.tokenizer, self.module, identity = _load(str(folder))
        self.network = _fast(str(folder), str(device))
        self.device, self.batch_size, self._torch = str(device), batch_size, torch
        try:
            wheel = f"{WHEEL} {importlib.metadata.version(WHEEL)}"
        except importlib.metadata.PackageNotFoundError:
            wheel = f"{WHEEL} files at {folder}"
        self.version = f"{wheel}, {identity}, class toxic"

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 6) probabilities in CLASSES order; texts are batched longest first."""
        torch = self._torch
        out = np.zeros((len(texts), len(CLASSES)), dtype=np.float32)
        if not len(texts):
            return out
        sequences = self.tokenizer.texts_to_sequences([t if isinstance(t, str) else str(t) for t in texts])
        ids = self.tokenizer.pad(sequences)
        lengths = np.asarray([len(seq) for seq in sequences])
        order = np.argsort(-lengths, kind="stable")
        with torch.inference_mode(), _SingleThread(torch, self.device):
            for start in range(0, len(texts), self.batch_size):
                chunk = order[start:start + self.batch_size]
                batch = torch.from_numpy(ids[chunk]).to(self.device)
                out[chunk] = self.network(batch, int(lengths[chunk].max())).float().cpu().numpy()
        return out

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.probabilities(texts)[:, 0].astype(float)

    def score_details(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [{name: float(v) for name, v in zip(CLASSES, row)} for row in self.probabilities(texts)]
