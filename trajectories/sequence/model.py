"""The torch network of the sequence model: embeddings, a causal backbone, and its heads.

Each position sees the token, the state the person is in, and time features. The backbone is a
small pre-norm causal transformer (default) or a GRU; both can run step by step for sampling
(a key/value cache, a hidden state). Heads read the history ``h`` and, for everything about the
next event, ``h`` joined with the next event's code: next code (categorical, end marks
included), gap to it (zero or a mixture of log-normals, Shchur et al. 2020), the end of
follow-up (bins of absolute time, so exact administrative dates stay exact), its value (a
Gaussian mixture on the code's standardised scale) and its duration (zero or log-normal
mixture, right-censored where the end of follow-up cut it).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from torch import nn

from trajectories.disclosure import MIN_CELL
from trajectories.sequence.tokenizer import FEATURES

NEGATIVE = -1.0e4
"""Logit given to masked choices (finite, so that an unseen held-out move scores very low
instead of making the loss infinite)."""
LOG_SIGMA_RANGE = (-6.0, 3.0)


class SequenceConfig(BaseModel):
    """Hyperparameters of the network, its training and its sampler (saved with the model)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    architecture: Literal["transformer", "gru"] = "transformer"
    d_model: int = Field(64, ge=8, le=2048)
    n_layers: int = Field(2, ge=1, le=24)
    n_heads: int = Field(4, ge=1, le=64)
    feedforward: int = Field(128, ge=8)
    dropout: float = Field(0.0, ge=0, lt=1)
    gap_components: int = Field(8, ge=1, le=64, description="log-normal mixture size (gaps)")
    value_components: int = Field(4, ge=1, le=64, description="Gaussian mixture size (values)")
    numeric_bins: int = Field(16, ge=1, le=256, description="quantile bins of numeric statics")
    end_bins: int = Field(32, ge=1, le=1024, description="quantile bins of end of follow-up")
    max_epochs: int = Field(20, ge=1)
    patience: int = Field(3, ge=1, description="epochs without validation gain before stopping")
    batch_tokens: int = Field(2048, ge=64, description="padded tokens per training batch")
    learning_rate: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = Field(0, ge=0)
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N' or 'auto'")
    mixed_precision: bool = Field(True, description="bfloat16 autocast on CUDA (not on CPU)")
    batch_size: int = Field(10000, ge=1, description="persons sampled together",
                            validation_alias=AliasChoices("batch_size", "sample_batch_size"))
    max_events: int | None = Field(
        None, ge=1, description="events cap per sampled person (default: twice training's)")
    min_cell: int = Field(MIN_CELL, ge=1, description="fewest persons behind any level, bin, "
                          "code or range end of the vocabulary (small-cell rule)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient norm clip (per person "
                                 "under DP-SGD, per batch otherwise)")
    epsilon: float | None = Field(None, gt=0, description="DP-SGD target epsilon; None: "
                                  "ordinary training")
    delta: float | None = Field(None, gt=0, lt=1, description="DP-SGD delta (default: "
                                "min(1e-5, n ** -1.1) for n training persons)")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="DP-SGD privacy accountant")
    dp_batch_persons: int = Field(64, ge=1, description="expected persons per DP-SGD step "
                                  "(Poisson sampling rate: this over the training persons)")

    @model_validator(mode="after")
    def _heads_divide(self) -> SequenceConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads "
                             f"({self.n_heads})")
        if self.delta is not None and self.epsilon is None:
            raise ValueError("delta applies only with epsilon (DP-SGD)")
        return self


def time_features(gap: torch.Tensor, time: torch.Tensor, entry: torch.Tensor,
                  room: torch.Tensor, value: torch.Tensor, has_value: torch.Tensor,
                  time_scale: float) -> torch.Tensor:
    """The per-token input features (..., FEATURES) as float32: log gap, log time, log time in
    the current state, time / scale, log time left before the site's longest follow-up, the
    standardised value (0 where none) and whether there is one."""
    log_scale = math.log1p(time_scale)
    return torch.stack([
        torch.log1p(gap) / log_scale,
        torch.log1p(time) / log_scale,
        torch.log1p((time - entry).clamp_min(0)) / log_scale,
        time / time_scale,
        torch.log1p(room.clamp_min(0)) / log_scale,
        value.clamp(-10, 10),
        has_value.to(value.dtype),
    ], dim=-1).float()


# -- mixtures -----------------------------------------------------------------------------------


def _split(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits, mean, log_sigma = params.float().chunk(3, dim=-1)
    return F.log_softmax(logits, -1), mean, log_sigma.clamp(*LOG_SIGMA_RANGE)


def mixture_log_prob(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Log density of ``x`` under Gaussian mixtures with parameters (..., 3K)."""
    log_w, mean, log_sigma = _split(params)
    z = (x.unsqueeze(-1) - mean) * torch.exp(-log_sigma)
    return torch.logsumexp(log_w - 0.5 * z * z - log_sigma - 0.5 * math.log(2 * math.pi), -1)


def mixture_log_survival(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Log P(X > x) under Gaussian mixtures (for right-censored observations)."""
    log_w, mean, log_sigma = _split(params)
    z = (x.unsqueeze(-1) - mean) * torch.exp(-log_sigma)
    return torch.logsumexp(log_w + torch.special.log_ndtr(-z), -1)


def mixture_log_cdf(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Log P(X <= x) under Gaussian mixtures (the normaliser of a truncated density)."""
    log_w, mean, log_sigma = _split(params)
    z = (x.unsqueeze(-1) - mean) * torch.exp(-log_sigma)
    return torch.logsumexp(log_w + torch.special.log_ndtr(z), -1)


def truncated_mixture_sample(params: torch.Tensor, upper: torch.Tensor,
                             generator: torch.Generator) -> torch.Tensor:
    """One draw from each Gaussian mixture (rows, 3K) conditioned on X <= ``upper`` (rows,):
    a component by its mass below ``upper``, then an inverse-CDF draw truncated there."""
    logits, mean, log_sigma = params.double().chunk(3, dim=-1)
    sigma = torch.exp(log_sigma.clamp(*LOG_SIGMA_RANGE))
    bound = (upper.double().unsqueeze(-1) - mean) / sigma
    component = categorical_sample(torch.log_softmax(logits, -1) + torch.special.log_ndtr(bound),
                                   generator).unsqueeze(-1)
    u = torch.rand(upper.shape, generator=generator, device=upper.device, dtype=torch.float64)
    below = torch.special.ndtr(bound.gather(-1, component).squeeze(-1))
    z = torch.special.ndtri((u * below).clamp(1e-300, 1.0))
    return mean.gather(-1, component).squeeze(-1) + sigma.gather(-1, component).squeeze(-1) * z


def mixture_sample(params: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw from each Gaussian mixture (rows, 3K) -> (rows,): the component by inverse
    CDF, then a normal draw."""
    logits, mean, log_sigma = params.float().chunk(3, dim=-1)
    cumulative = torch.softmax(logits, -1).cumsum(-1)
    u = torch.rand((logits.shape[0], 1), generator=generator, device=logits.device)
    component = (u > cumulative).sum(-1, keepdim=True).clamp_max(logits.shape[-1] - 1)
    mu = mean.gather(-1, component).squeeze(-1)
    sigma = torch.exp(log_sigma.gather(-1, component).squeeze(-1).clamp(*LOG_SIGMA_RANGE))
    noise = torch.randn(mu.shape, generator=generator, device=mu.device)
    return mu + sigma * noise


def categorical_sample(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A categorical draw per row from unnormalised log probabilities, by inverse CDF (one
    uniform per row; masked choices, with zero probability, are never drawn)."""
    cumulative = torch.softmax(logits.float(), -1).double().cumsum(-1)
    u = torch.rand((logits.shape[0], 1), generator=generator, device=logits.device,
                   dtype=torch.float64) * cumulative[:, -1:]
    return (u >= cumulative).sum(-1).clamp_max(logits.shape[-1] - 1)


# -- backbones ----------------------------------------------------------------------------------


class _Block(nn.Module):
    """Pre-norm causal self-attention and feed-forward, with a single-step path for sampling.

    Attention is multi-query (Shazeer 2019): every head shares one key and one value
    projection, so the sampling cache holds d_model / n_heads numbers per position and
    layer instead of 2 d_model, which keeps batched sampling off the memory-bandwidth wall.
    """

    def __init__(self, config: SequenceConfig):
        super().__init__()
        d = config.d_model
        self.heads, self.head_size = config.n_heads, d // config.n_heads
        self.dropout = config.dropout
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, d + 2 * self.head_size)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, config.feedforward), nn.GELU(),
                                nn.Linear(config.feedforward, d), nn.Dropout(config.dropout))

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries (batch, heads, time, size); shared keys and values (batch, 1, time, size)."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split([d, self.head_size, self.head_size], dim=-1)
        return (q.view(b, t, self.heads, self.head_size).transpose(1, 2), k.unsqueeze(1),
                v.unsqueeze(1))

    def _finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = attended.shape
        x = x + self.out(attended.transpose(1, 2).reshape(b, t, -1))
        return x + self.ff(self.norm2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        shape = (-1, self.heads, -1, -1)
        drop = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k.expand(shape), v.expand(shape),
                                                  is_causal=True, dropout_p=drop)
        return self._finish(x, attended)

    def step(self, x: torch.Tensor, cache: list[torch.Tensor], position: int) -> torch.Tensor:
        q, k, v = self._qkv(x)
        cache[0][:, position] = k[:, 0, 0]
        cache[1][:, position] = v[:, 0, 0]
        keys, values = cache[0][:, :position + 1], cache[1][:, :position + 1]
        # The heads of the one new position act as queries over the shared keys (two batched
        # matrix products: faster on the CPU than the fused kernel for a single query).
        scores = torch.bmm(q[:, :, 0], keys.transpose(1, 2)) * self.head_size ** -0.5
        attended = torch.bmm(torch.softmax(scores, -1), values)
        return self._finish(x, attended.unsqueeze(2))


class Transformer(nn.Module):
    """A stack of causal blocks; ``step`` appends one position using a key/value cache."""

    def __init__(self, config: SequenceConfig):
        super().__init__()
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.head_size = config.d_model // config.n_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def start(self, batch: int, device: torch.device, dtype: torch.dtype) -> list:
        return [[torch.zeros(batch, 64, self.head_size, device=device, dtype=dtype)
                 for _ in range(2)] for _ in self.blocks]

    def step(self, x: torch.Tensor, cache: list, position: int) -> torch.Tensor:
        if position >= cache[0][0].shape[1]:
            for layer in cache:
                for i, tensor in enumerate(layer):
                    layer[i] = torch.cat([tensor, torch.zeros_like(tensor)], dim=1)
        x = x.unsqueeze(1)
        for block, layer in zip(self.blocks, cache, strict=True):
            x = block.step(x, layer, position)
        return x.squeeze(1)

    @staticmethod
    def select(cache: list, index: torch.Tensor, position: int) -> list:
        """The cache of the persons at ``index``."""
        return [[tensor[index] for tensor in layer] for layer in cache]


class GRU(nn.Module):
    """A multi-layer GRU; its hidden state is the sampling cache."""

    def __init__(self, config: SequenceConfig):
        super().__init__()
        self.gru = nn.GRU(config.d_model, config.d_model, num_layers=config.n_layers,
                          batch_first=True, dropout=config.dropout if config.n_layers > 1 else 0)
        self.layers, self.size = config.n_layers, config.d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]

    def start(self, batch: int, device: torch.device, dtype: torch.dtype) -> list:
        return [torch.zeros(self.layers, batch, self.size, device=device, dtype=dtype)]

    def step(self, x: torch.Tensor, cache: list, position: int) -> torch.Tensor:
        out, cache[0] = self.gru(x.unsqueeze(1), cache[0])
        return out.squeeze(1)

    @staticmethod
    def select(cache: list, index: torch.Tensor, position: int) -> list:
        return [cache[0][:, index].contiguous()]


# -- the network ---------------------------------------------------------------------------------


class EventSequenceNet(nn.Module):
    """Embeddings, backbone and heads; sizes come from the vocabulary."""

    def __init__(self, config: SequenceConfig, vocab_size: int, n_states: int, n_bins: int):
        super().__init__()
        d = config.d_model
        self.token = nn.Embedding(vocab_size, d)
        self.state = nn.Embedding(n_states + 1, d)
        self.features = nn.Linear(FEATURES, d)
        self.backbone = Transformer(config) if config.architecture == "transformer" else GRU(
            config)
        self.norm = nn.LayerNorm(d)
        self.mark = nn.Linear(d, vocab_size)
        self.joint = nn.Linear(d, d)
        self.target = nn.Embedding(vocab_size, d)
        self.condition = nn.Sequential(nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        gap = 1 + 3 * config.gap_components
        self.sizes = [gap, max(n_bins, 1), 3 * config.value_components, gap]
        self.heads = nn.Linear(d, sum(self.sizes))

    def embed(self, tokens: torch.Tensor, states: torch.Tensor, feats: torch.Tensor):
        """Input vectors: token + current state (0: none) + a projection of time features."""
        return self.token(tokens) + self.state(states) + self.features(feats)

    def forward(self, tokens, states, feats) -> torch.Tensor:
        """History vectors (batch, time, d) of whole sequences (causal)."""
        return self.norm(self.backbone(self.embed(tokens, states, feats)))

    def step(self, tokens, states, feats, cache: list, position: int) -> torch.Tensor:
        """The history vector (batch, d) after one more token, updating ``cache``."""
        x = self.embed(tokens, states, feats)
        return self.norm(self.backbone.step(x, cache, position))

    def conditioned(self, history: torch.Tensor, next_token: torch.Tensor) -> torch.Tensor:
        """The history joined with the next event's code (a linear layer on both, written as
        a projection of the history plus a learnt vector per code), read by the event heads."""
        return self.condition(self.joint(history) + self.target(next_token))

    def attributes(self, cond: torch.Tensor) -> list[torch.Tensor]:
        """Parameters of the event heads from conditioned vectors: gap (zero logit + mixture),
        end-of-follow-up bin logits, value mixture, duration (zero logit + mixture)."""
        return list(self.heads(cond).float().split(self.sizes, dim=-1))
