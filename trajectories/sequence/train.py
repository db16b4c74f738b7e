"""Training of the sequence network: padded batches of similar length, the loss of every head,
a held-out split with early stopping, seeded and deterministic on the CPU.

The static prefix is shown in a fresh random order in every epoch, so that the network learns
each static variable given any others: the sampler can then fix some (conditions) and draw the
rest from their conditional distribution.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trajectories import progress
from trajectories.errors import TrajectoriesError
from trajectories.sequence.model import (
    NEGATIVE,
    EventSequenceNet,
    SequenceConfig,
    mixture_log_cdf,
    mixture_log_prob,
    mixture_log_survival,
    time_features,
)
from trajectories.sequence.tokenizer import BOS, FEATURES, PAD, Tokens, Vocabulary

MIN_IMPROVEMENT = 1e-3
"""Validation loss gain (per target) that counts as an improvement for early stopping."""


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when present) as a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrajectoriesError(f"device: {name!r} is not 'cpu', 'cuda', 'cuda:N' or 'auto'"
                                ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrajectoriesError(f"device: {name!r} asked for, but no CUDA device is available "
                                "(use 'cpu' or 'auto')")
    if device.type not in ("cpu", "cuda"):
        raise TrajectoriesError(f"device: {name!r} is not supported; use 'cpu', 'cuda' or 'auto'")
    return device


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch inside a forked random state (global state is left as found); deterministic
    algorithms on the CPU."""
    devices = [device.index or 0] if device.type == "cuda" else []
    previous = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)


# -- batches -------------------------------------------------------------------------------------


def site_column(vocab: Vocabulary) -> int:
    """Position of the site among the static variables."""
    return next(i for i, v in enumerate(vocab.statics) if v.name == "site")


def longest_follow_up(vocab: Vocabulary) -> np.ndarray:
    """Per token: the longest follow-up seen at a site token's site (elsewhere: overall)."""
    longest = np.full(vocab.size, vocab.time_scale)
    site = vocab.statics[site_column(vocab)]
    longest[site.first_token:site.first_token + site.n_tokens] = [
        vocab.site_followup.get(level, vocab.time_scale) for level in site.levels]
    return longest


@dataclass
class Tables:
    """Constant tensors of the loss: allowed-token masks and the end bins' bounds."""

    masks: torch.Tensor
    bin_low: torch.Tensor
    bin_high: torch.Tensor
    first_code: int
    first_end: int
    gap_loc: float
    gap_scale: float
    duration_loc: float
    duration_scale: float

    @classmethod
    def of(cls, vocab: Vocabulary, device: torch.device) -> Tables:
        return cls(
            masks=torch.as_tensor(vocab.mask_table(), device=device),
            bin_low=torch.as_tensor(vocab.end_bounds()[0], device=device, dtype=torch.float64),
            bin_high=torch.as_tensor(vocab.end_bounds()[1], device=device,
                                     dtype=torch.float64),
            first_code=vocab.first_code,
            first_end=vocab.first_end,
            gap_loc=vocab.gap_loc,
            gap_scale=vocab.gap_scale,
            duration_loc=vocab.duration_loc,
            duration_scale=vocab.duration_scale,
        )


def length_batches(lengths: np.ndarray, batch_tokens: int,
                   rng: np.random.Generator) -> list[np.ndarray]:
    """Persons grouped by similar length, each batch within ``batch_tokens`` padded tokens,
    in a random order (ties in length broken at random)."""
    order = np.lexsort((rng.random(lengths.size), lengths))
    sorted_lengths = lengths[order]
    batches, start = [], 0
    while start < order.size:
        # Rows up to the longest that still fits: count * longest <= batch_tokens.
        ends = np.arange(start + 1, min(order.size, start + batch_tokens) + 1)
        fits = (ends - start) * sorted_lengths[ends - 1] <= batch_tokens
        stop = start + max(int(fits.sum()), 1)
        batches.append(order[start:stop])
        start = stop
    return [batches[i] for i in rng.permutation(len(batches))]


def assemble(tokens: Tokens, rows: np.ndarray, vocab: Vocabulary, device: torch.device,
             rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Padded input and target tensors for the persons at ``rows``; statics shuffled by ``rng``.

    Inputs are positions 0..L-2, targets 1..L-1. ``mask_row`` picks the row of the allowed-token
    table: 0 in the prefix, 1 before the initial state, 2 + state afterwards. ``cap`` is the
    longest follow-up seen at the person's site (no event or end of follow-up lies beyond it).
    """
    time_scale = vocab.time_scale
    static = tokens.static[rows]
    cap = longest_follow_up(vocab)[static[:, site_column(vocab)]]
    n, s = static.shape
    static = np.take_along_axis(static, np.argsort(rng.random(static.shape), axis=1), axis=1)
    starts = tokens.offsets[rows]
    counts = tokens.offsets[rows + 1] - starts
    j = np.arange(counts.max())
    valid = j < counts[:, None]
    index = np.where(valid, starts[:, None] + j, 0)

    def events(array: np.ndarray, fill) -> np.ndarray:
        return np.where(valid, array[index], fill)

    prefix = np.zeros((n, 1 + s))
    token = np.concatenate([np.full((n, 1), BOS), static, events(tokens.token, PAD)], axis=1)
    state = np.concatenate([prefix, events(tokens.state + 1, 0)], axis=1).astype(np.int64)
    time = np.concatenate([prefix, events(tokens.time, 0.0)], axis=1)
    times = torch.as_tensor(events(tokens.time, 0.0))
    feats = torch.cat([
        torch.zeros((n, 1 + s, FEATURES)),
        time_features(torch.as_tensor(events(tokens.gap, 0.0)), times,
                      torch.as_tensor(events(tokens.entry, 0.0)),
                      torch.as_tensor(cap)[:, None] - times,
                      torch.as_tensor(events(tokens.value, 0.0)),
                      torch.as_tensor(events(tokens.has_value, False)), time_scale),
    ], dim=1).numpy()
    position = np.arange(token.shape[1] - 1)
    mask_row = np.where(position < s, 0, np.where(position == s, 1, 1 + state[:, :-1]))
    first = np.zeros(token.shape, dtype=bool)
    first[:, 1 + s] = True

    def target(array: np.ndarray, fill) -> np.ndarray:
        return np.concatenate([np.full((n, 1 + s), fill, dtype=array.dtype),
                               events(array, fill)], axis=1)[:, 1:]

    arrays = {
        "tokens": token[:, :-1], "states": state[:, :-1], "feats": feats[:, :-1],
        "mask_row": mask_row, "time": time[:, :-1],
        "cap": np.broadcast_to(cap[:, None], mask_row.shape),
        "target": token[:, 1:], "first": first[:, 1:],
        "gap": target(tokens.gap, 0.0), "value": target(tokens.value, np.float32(0)),
        "has_value": target(tokens.has_value, False),
        "duration": target(tokens.duration, np.nan), "censored": target(tokens.censored, False),
        "end_bin": target(tokens.end_bin, -1),
    }
    return {k: torch.as_tensor(np.ascontiguousarray(v), device=device)
            for k, v in arrays.items()}


# -- loss ----------------------------------------------------------------------------------------


def batch_loss(net: EventSequenceNet, batch: dict[str, torch.Tensor], tables: Tables,
               per_person: bool = False) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Summed negative log-likelihood of every head, the number of targets, and each target's
    next-token log probability (for the code log-likelihood).

    ``per_person``: the loss is a (batch,) tensor, each person's own sum, and every layer sees
    (batch, ...) inputs, as per-sample gradients (DP-SGD) need; otherwise one summed scalar,
    with the event heads run on the valid targets only."""
    history = net(batch["tokens"], batch["states"], batch["feats"])
    target = batch["target"]
    valid = target != PAD
    logits = net.mark(history).float().masked_fill(~tables.masks[batch["mask_row"]], NEGATIVE)
    mark_log_prob = F.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    target_v = target[valid]
    if per_person:
        owner = valid.nonzero()[:, 0]
        loss = -mark_log_prob.masked_fill(~valid, 0.0).sum(1)
        heads = [h[valid] for h in net.attributes(net.conditioned(history, target))]
    else:
        loss = -mark_log_prob[valid].sum()
        heads = net.attributes(net.conditioned(history[valid], target_v))
    gap_params, end_params, value_params, duration_params = heads

    def add(total: torch.Tensor, terms: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """``total`` plus the per-target ``terms`` of the targets selected by ``where``."""
        if not per_person:
            return total + terms.sum()
        return total.index_add(0, owner[where], terms.to(total.dtype))

    pick = {k: batch[k][valid] for k in ("gap", "value", "has_value", "duration", "censored",
                                         "end_bin", "first", "time", "cap")}
    is_end = target_v >= tables.first_end
    event = (target_v >= tables.first_code) & ~is_end & ~pick["first"]
    if event.any():
        params = gap_params[event]
        gap = pick["gap"][event]
        zero = gap <= 0
        where = event.nonzero()[:, 0]
        loss = add(loss, F.binary_cross_entropy_with_logits(params[:, 0], zero.float(),
                                                            reduction="none"), where)
        # The gap's density truncated at the site's longest follow-up: an event that happens
        # is seen only before the end of follow-up.
        room = torch.maximum(pick["cap"][event] - pick["time"][event], gap)[~zero]
        x = (torch.log(gap[~zero]) - tables.gap_loc) / tables.gap_scale
        upper = (torch.log(room) - tables.gap_loc) / tables.gap_scale
        loss = add(loss, -(mixture_log_prob(params[~zero, 1:], x.float())
                           - mixture_log_cdf(params[~zero, 1:], upper.float())), where[~zero])
    if is_end.any():
        logits = end_params[is_end]
        end_bin = pick["end_bin"][is_end]
        reachable = ((tables.bin_high.unsqueeze(0) >= pick["time"][is_end].unsqueeze(1))
                     & (tables.bin_low.unsqueeze(0) <= pick["cap"][is_end].unsqueeze(1)))
        # The true bin always counts (the site's cap is a robust maximum, not the largest).
        reachable[torch.arange(end_bin.numel(), device=end_bin.device), end_bin] = True
        logits = logits.masked_fill(~reachable, NEGATIVE)
        loss = add(loss, F.cross_entropy(logits, end_bin, reduction="none"),
                   is_end.nonzero()[:, 0])
    has = pick["has_value"]
    if has.any():
        loss = add(loss, -mixture_log_prob(value_params[has], pick["value"][has]),
                   has.nonzero()[:, 0])
    has = ~torch.isnan(pick["duration"])
    if has.any():
        params = duration_params[has]
        duration, censored = pick["duration"][has], pick["censored"][has]
        zero = duration <= 0
        where = has.nonzero()[:, 0]
        loss = add(loss, F.binary_cross_entropy_with_logits(params[:, 0], zero.float(),
                                                            reduction="none"), where)
        x = ((torch.log(duration.clamp_min(1e-12)) - tables.duration_loc)
             / tables.duration_scale).float()
        exact, cut = ~zero & ~censored, ~zero & censored
        loss = add(loss, -mixture_log_prob(params[exact, 1:], x[exact]), where[exact])
        loss = add(loss, -mixture_log_survival(params[cut, 1:], x[cut]), where[cut])
    return loss, int(valid.sum()), mark_log_prob.masked_fill(~valid, 0.0)


def _autocast(device: torch.device, config: SequenceConfig):
    enabled = device.type == "cuda" and config.mixed_precision
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def evaluate(net: EventSequenceNet, tokens: Tokens, vocab: Vocabulary, config: SequenceConfig,
             device: torch.device, seed: int) -> tuple[float, float, int]:
    """Mean loss per target, and the summed log probability and count of next codes after
    each person's first event (end marks included), on ``tokens``."""
    tables = Tables.of(vocab, device)
    rng = np.random.default_rng([seed, 2])
    total = code_log_prob = 0.0
    targets = codes = 0
    net.eval()
    s = tokens.static.shape[1]
    with torch.no_grad(), _autocast(device, config):
        for rows in length_batches(tokens.lengths, config.batch_tokens, rng):
            batch = assemble(tokens, rows, vocab, device, rng)
            loss, n, log_prob = batch_loss(net, batch, tables)
            total += float(loss)
            targets += n
            later = (batch["target"] != PAD)[:, s + 1:]
            code_log_prob += float(log_prob[:, s + 1:][later].double().sum())
            codes += int(later.sum())
    return total / max(targets, 1), code_log_prob, codes


def train_network(net: EventSequenceNet, train: Tokens, validation: Tokens, vocab: Vocabulary,
                  config: SequenceConfig, device: torch.device) -> list[dict]:
    """Fit ``net`` in place with early stopping; returns one record per epoch."""
    tables = Tables.of(vocab, device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    rng = np.random.default_rng([config.seed, 1])
    best, best_state, waited, history = math.inf, None, 0, []
    for epoch in range(config.max_epochs):
        net.train()
        batches = length_batches(train.lengths, config.batch_tokens, rng)
        shown = f"{history[-1]['validation_loss']:.4f}" if history else "-"
        description = f"epoch {epoch + 1}/{config.max_epochs} (validation loss {shown})"
        total = targets = 0
        for rows in progress.track(batches, total=len(batches), description=description):
            batch = assemble(train, rows, vocab, device, rng)
            with _autocast(device, config):
                loss, n, _ = batch_loss(net, batch, tables)
            optimizer.zero_grad(set_to_none=True)
            (loss / n).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
            optimizer.step()
            total, targets = total + float(loss.detach()), targets + n
        validation_loss = evaluate(net, validation, vocab, config, device, config.seed)[0]
        if not math.isfinite(validation_loss):
            raise TrajectoriesError(f"training diverged at epoch {epoch + 1} (validation loss "
                                    f"{validation_loss}); lower learning_rate")
        history.append({"epoch": epoch + 1, "train_loss": total / max(targets, 1),
                        "validation_loss": validation_loss,
                        "learning_rate": optimizer.param_groups[0]["lr"]})
        if validation_loss < best - MIN_IMPROVEMENT:
            best, waited = validation_loss, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            waited += 1
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
            if waited >= config.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return history
