"""The sequence model: a torch generator of time-stamped event sequences learnt from a cohort.

``SequenceModel(config).fit(cohort)`` learns a vocabulary and a causal network (see
:mod:`~trajectories.sequence.model`); ``.sample(n, seed, conditions)`` draws a new
:class:`~trajectories.cohort.Cohort` whose manifest names the checkpoint's hash and the
training data's fingerprint; ``.save(dir)`` / ``SequenceModel.load(dir)`` keep the weights (a
state dict, loaded with ``weights_only=True``), the config and the vocabulary (both JSON).
None of them holds a person id or a person's row: the vocabulary holds aggregates under the
small-cell rules. ``SequenceModel(epsilon=E)`` trains by DP-SGD
(:mod:`~trajectories.sequence.private`; Abadi et al. 2016) and records the guarantee spent.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from pydantic import ValidationError

from trajectories.cohort import Cohort, Manifest, prepare_output_directory
from trajectories.errors import TrajectoriesError
from trajectories.sequence.model import EventSequenceNet, SequenceConfig
from trajectories.sequence.sample import (
    _Tables,
    block_seed,
    events_frame,
    persons_frame,
    resolve_conditions,
    sample_block,
)
from trajectories.sequence.tokenizer import (
    Vocabulary,
    build_vocabulary,
    release_cohort,
    tokenize,
)
from trajectories.sequence.train import evaluate, resolve_device, seeded, train_network

__all__ = ["SequenceConfig", "SequenceModel"]

WEIGHTS_FILE, CONFIG_FILE, VOCABULARY_FILE = "weights.pt", "config.json", "vocabulary.json"
MIN_PERSONS = 10


def _config(config: SequenceConfig | dict | None, overrides: dict[str, Any]) -> SequenceConfig:
    data = config.model_dump() if isinstance(config, SequenceConfig) else dict(config or {})
    data.update(overrides)
    try:
        return SequenceConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                             for e in error.errors())
        raise TrajectoriesError(f"sequence model config: {problems}") from None


class SequenceModel:
    """Learn event histories from a cohort and sample new cohorts like it."""

    generator_name = "SequenceModel"

    def __init__(self, config: SequenceConfig | dict | None = None, **overrides: Any):
        self.config = _config(config, overrides)
        self.vocab_: Vocabulary | None = None
        self.net_: EventSequenceNet | None = None
        self.training_: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name in ("vocab", "net", "training") and name + "_" in self.__dict__:
            warnings.warn(f"SequenceModel.{name} is now {name}_ (learned state ends in '_')",
                          DeprecationWarning, stacklevel=2)
            return self.__dict__[name + "_"]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def simulate(self, n: int, seed: int = 0, **options: Any) -> Cohort:
        """:meth:`sample` under the verb the Markov generators use."""
        return self.sample(n, seed=seed, **options)

    # -- fitting ---------------------------------------------------------------------------------

    def fit(self, cohort: Cohort) -> SequenceModel:
        """Train on ``cohort`` as the small-cell rules release it (rare codes, states, exits;
        see :func:`~trajectories.sequence.tokenizer.release_cohort`).

        Ordinary training holds out a random share (seeded) for early stopping. With
        ``epsilon`` set, DP-SGD runs a fixed ``max_epochs`` on every person and no loss is
        computed outside the mechanism (no validation split: its loss, on real persons, would
        be released unaccounted); ``delta`` defaults to min(1e-5, n ** -1.1)."""
        config = self.config
        if cohort.n_persons < MIN_PERSONS:
            raise TrajectoriesError(f"cohort has {cohort.n_persons} person(s); the sequence "
                                    f"model needs at least {MIN_PERSONS}")
        device = resolve_device(config.device)
        released, notes = release_cohort(cohort, config.min_cell)
        if released.n_persons < MIN_PERSONS:
            raise TrajectoriesError(f"{released.n_persons} person(s) left under the small-cell "
                                    f"rules ({'; '.join(notes)}); the sequence model needs at "
                                    f"least {MIN_PERSONS}")
        vocab = build_vocabulary(released, config.numeric_bins, config.end_bins,
                                 config.min_cell)
        tokens = tokenize(released, vocab)
        private = config.epsilon is not None
        if private:
            train, validation = tokens, None
        else:
            order = np.random.default_rng([config.seed, 0]).permutation(released.n_persons)
            held = max(1, round(config.validation_fraction * released.n_persons))
            validation = tokens.subset(np.sort(order[:held]))
            train = tokens.subset(np.sort(order[held:]))
        start, start_cpu = time.perf_counter(), time.process_time()
        privacy = None
        with seeded(config.seed, device):
            net = EventSequenceNet(config, vocab.size, len(vocab.states), vocab.n_bins)
            net = net.to(device)
            if private:
                from trajectories.sequence.private import train_private

                net, history, privacy = train_private(net, train, vocab, config, device)
            else:
                history = train_network(net, train, validation, vocab, config, device)
        self.vocab_, self.net_ = vocab, net
        self.training_ = {
            # A hash of every record is outside any DP guarantee: not kept under DP-SGD.
            "fingerprint": None if private else cohort.fingerprint(),
            "generator": cohort.manifest.generator,
            "scenario_name": cohort.manifest.scenario_name,
            "persons": cohort.n_persons,
            "train_persons": int(train.n_persons),
            "validation_persons": 0 if validation is None else int(validation.n_persons),
            "seconds": round(time.perf_counter() - start, 3),
            "cpu_seconds": round(time.process_time() - start_cpu, 3),
            "device": str(device),
            "history": history,
            "small_cells": {"min_cell": config.min_cell, "notes": notes},
        }
        if privacy is not None:
            self.training_["privacy"] = privacy
        return self

    def _fitted(self) -> tuple[EventSequenceNet, Vocabulary]:
        if self.net_ is None or self.vocab_ is None:
            raise TrajectoriesError("the sequence model is not trained: call fit() or load()")
        return self.net_, self.vocab_

    # -- sampling --------------------------------------------------------------------------------

    def sample(self, n: int, seed: int = 0, conditions: dict[str, Any] | None = None) -> Cohort:
        """Draw ``n`` persons; ``conditions`` fix static variables (``{"site": "B"}``)."""
        net, vocab = self._fitted()
        if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
            raise TrajectoriesError(f"n must be a positive integer, got {n!r}")
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
            raise TrajectoriesError(f"seed must be a non-negative integer, got {seed!r}")
        fixed = resolve_conditions(vocab, conditions)
        device = next(net.parameters()).device
        tables = _Tables.of(vocab, device)
        max_events = self.config.max_events or 2 * vocab.max_events
        size = self.config.batch_size
        persons, events = [], []
        net.eval()
        with torch.inference_mode():
            for block in range(math.ceil(n / size)):
                start = block * size
                generator = torch.Generator(device).manual_seed(block_seed(seed, block))
                drawn = sample_block(net, vocab, tables, min(size, n - start), fixed, generator,
                                     max_events)
                rng = np.random.default_rng([seed, block])
                persons.append(persons_frame(vocab, drawn, start, fixed, rng))
                events.append(events_frame(vocab, drawn, start))
        manifest = Manifest.new(
            self.generator_name, int(n), seed=int(seed),
            reference_fingerprint=self.training_.get("fingerprint"),
            checkpoint_hash=self.checkpoint_hash(),
            conditions=dict(conditions or {}),
            architecture=self.config.architecture,
            events_cap=max_events,
            trained_on={k: self.training_.get(k) for k in ("generator", "scenario_name",
                                                          "persons")},
            concepts=vocab.concepts,
            **({"privacy": self.training_["privacy"]} if "privacy" in self.training_ else {}),
        )
        return Cohort(pl.concat(persons), pl.concat(events), manifest)

    def next_code_log_likelihood(self, cohort: Cohort) -> float:
        """Mean log probability of each next code (end marks included) after a person's first
        event, on ``cohort`` (held-out data): how well the model predicts what comes next."""
        net, vocab = self._fitted()
        device = next(net.parameters()).device
        tokens = tokenize(cohort, vocab)
        _, total, count = evaluate(net, tokens, vocab, self.config, device, self.config.seed)
        return total / max(count, 1)

    # -- persistence -----------------------------------------------------------------------------

    def checkpoint_hash(self) -> str:
        """SHA-256 of the vocabulary and the weights: equal for a model and its reload."""
        net, vocab = self._fitted()
        digest = hashlib.sha256(vocab.to_json().encode())
        for name, tensor in sorted(net.state_dict().items()):
            array = tensor.detach().cpu().contiguous().numpy()
            digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write weights.pt (state dict), config.json (config, training record, privacy record
        under DP-SGD) and vocabulary.json into ``directory``."""
        net, vocab = self._fitted()
        directory = prepare_output_directory(directory, overwrite, owned=(),
                                             error=TrajectoriesError)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        torch.save(state, directory / WEIGHTS_FILE)
        config = {"config": self.config.model_dump(), "training": self.training_,
                  "checkpoint_hash": self.checkpoint_hash()}
        if "privacy" in self.training_:  # where `trajectories describe --model` reads it
            config["privacy"] = self.training_["privacy"]
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n",
                                             encoding="utf-8")
        (directory / VOCABULARY_FILE).write_text(vocab.to_json() + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> SequenceModel:
        """Read a model written by :meth:`save`; ``device`` overrides the saved one."""
        directory = Path(directory)
        paths = [directory / name for name in (WEIGHTS_FILE, CONFIG_FILE, VOCABULARY_FILE)]
        for path in paths:
            if not path.is_file():
                raise TrajectoriesError(f"{directory}: not a sequence model directory, "
                                        f"{path.name} missing")
        try:
            saved = json.loads(paths[1].read_text(encoding="utf-8"))
            vocab = Vocabulary.from_json(paths[2].read_text(encoding="utf-8"))
        except (ValueError, TypeError, KeyError) as error:
            raise TrajectoriesError(f"{directory}: unreadable config or vocabulary: {error}"
                                    ) from None
        overrides = {"device": device} if device is not None else {}
        model = cls(saved.get("config"), **overrides)
        model.vocab_, model.training_ = vocab, saved.get("training", {})
        target = resolve_device(model.config.device)
        try:
            state = torch.load(paths[0], map_location=target, weights_only=True)
            net = EventSequenceNet(model.config, vocab.size, len(vocab.states), vocab.n_bins)
            net.load_state_dict(state)
        except Exception as error:  # torch raises many kinds for a bad file
            raise TrajectoriesError(f"{paths[0]}: cannot load the weights: {error}") from None
        model.net_ = net.to(target).eval()
        return model
