"""DP-SGD training of the sequence network (Abadi et al. 2016, "Deep Learning with Differential
Privacy"), through opacus' PrivacyEngine.

Each step draws persons by Poisson sampling (each with probability ``dp_batch_persons / n``),
clips every person's gradient to ``max_grad_norm`` and adds Gaussian noise whose multiplier is
calibrated so that the planned ``max_epochs`` spend exactly the target epsilon (at ``delta``)
under the chosen accountant (RDP, Mironov 2017; or PRV, Gopi et al. 2021).

What the guarantee covers: the network's weights. Training runs a fixed number of epochs on
every person, with no held-out split and no early stopping: a validation loss on real persons
would be released outside the mechanism (and so would a training loss, which is therefore not
recorded either). The vocabulary is not differentially private; it holds aggregates under the
small-cell rules (:mod:`trajectories.sequence.tokenizer`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from trajectories import progress
from trajectories.errors import PrivateTrainingError
from trajectories.sequence.model import EventSequenceNet, SequenceConfig
from trajectories.sequence.tokenizer import Tokens, Vocabulary
from trajectories.sequence.train import Tables, assemble, batch_loss

DELTA_CAP = 1e-5
"""Largest default delta; smaller still for large cohorts (``n ** -1.1``, below 1 / n)."""


def default_delta(n: int) -> float:
    """``min(1e-5, n ** -1.1)``: below 1 / n, so that releasing one person's record outright
    (probability delta each) is not within the guarantee's slack."""
    return float(min(DELTA_CAP, max(n, 1) ** -1.1))


def private_network(net: EventSequenceNet, config: SequenceConfig) -> EventSequenceNet:
    """A copy of ``net`` made of layers opacus computes per-sample gradients for (nn.GRU ->
    opacus' DPGRU, same state dict); anything still unsupported is refused by name."""
    from opacus.validators import ModuleValidator

    fixed = ModuleValidator.fix(net)
    problems = ModuleValidator.validate(fixed, strict=False)
    if problems:
        raise PrivateTrainingError(f"architecture {config.architecture!r} cannot be trained with "
                           f"DP-SGD: {'; '.join(str(p) for p in problems)}")
    return fixed


def train_private(net: EventSequenceNet, train: Tokens, vocab: Vocabulary,
                  config: SequenceConfig, device: torch.device
                  ) -> tuple[EventSequenceNet, list[dict], dict[str, Any]]:
    """Fit ``net``'s weights by DP-SGD on every person of ``train``; returns the trained
    network (plain layers again), one record per epoch (no losses) and the privacy record."""
    from opacus import PrivacyEngine

    n = train.n_persons
    delta = config.delta if config.delta is not None else default_delta(n)
    model = private_network(net, config).to(device)
    tables = Tables.of(vocab, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    batch = min(config.dp_batch_persons, n)
    loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=batch,
                        generator=torch.Generator().manual_seed(config.seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # opacus' note that its secure RNG is off
        engine = PrivacyEngine(accountant=config.accountant)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped, optimizer, loader = engine.make_private_with_epsilon(
                module=model, optimizer=optimizer, data_loader=loader,
                target_epsilon=config.epsilon, target_delta=delta, epochs=config.max_epochs,
                max_grad_norm=config.max_grad_norm, poisson_sampling=True,
                noise_generator=torch.Generator(device).manual_seed(config.seed + 1))
    except ValueError as error:
        raise PrivateTrainingError(f"DP-SGD: epsilon {config.epsilon} at delta {delta:.3g} over "
                           f"{config.max_epochs} epoch(s) of {n} persons cannot be reached: "
                           f"{error}") from None
    rng = np.random.default_rng([config.seed, 1])
    history = []
    model.train()
    for epoch in range(config.max_epochs):
        description = f"epoch {epoch + 1}/{config.max_epochs} (DP-SGD)"
        for (rows,) in progress.track(loader, total=len(loader), description=description):
            optimizer.zero_grad(set_to_none=True)
            rows = rows.numpy()
            if rows.size == 0:
                # An empty Poisson draw is still a step: noise only, and it is accounted.
                for p in optimizer.params:
                    p.grad_sample = p.new_zeros((0, *p.shape))
            else:
                person_loss = batch_loss(model, assemble(train, rows, vocab, device, rng),
                                         tables, per_person=True)[0]
                # opacus' "mean" reduction: per-sample gradients of each person's own sum.
                with warnings.catch_warnings():
                    # The first layers' inputs need no gradient: torch says so once, harmless.
                    warnings.filterwarnings("ignore", message="Full backward hook")
                    (person_loss.sum() / rows.size).backward()
            optimizer.step()
        history.append({"epoch": epoch + 1, "learning_rate": optimizer.param_groups[0]["lr"],
                        "epsilon": round(float(engine.get_epsilon(delta)), 6)})
    wrapped.eval()
    plain = EventSequenceNet(config, vocab.size, len(vocab.states), vocab.n_bins).to(device)
    # DPGRU lists its weights under nn.GRU's names as well as its cells' own: keep the former.
    expected = plain.state_dict()
    plain.load_state_dict({k: v.detach() for k, v in model.state_dict().items()
                           if k in expected})
    plain.eval()
    sample_rate = 1 / len(loader)
    privacy = {
        "mechanism": "DP-SGD (Abadi et al. 2016), opacus",
        "covers": "network weights; the vocabulary follows the small-cell rules, not DP",
        "target_epsilon": float(config.epsilon),
        "epsilon": float(engine.get_epsilon(delta)),
        "delta": float(delta),
        "delta_rule": "given" if config.delta is not None else "min(1e-5, n ** -1.1)",
        "noise_multiplier": float(optimizer.noise_multiplier),
        "max_grad_norm": float(config.max_grad_norm),
        "sample_rate": float(sample_rate),
        "expected_batch_persons": float(n * sample_rate),
        "epochs": int(config.max_epochs),
        "steps": int(len(loader) * config.max_epochs),
        "accountant": config.accountant,
        "validation": "none: fixed epochs on every person, no loss released",
    }
    return plain, history, privacy
