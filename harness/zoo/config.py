"""Training settings of the tiny-model zoo, importable without torch (task recipes hold them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Optimisation settings.

    ``schedule``: ``"onecycle"`` (``torch.optim.lr_scheduler.OneCycleLR``, cosine
    annealing, warm-up fraction ``warmup_frac``) or ``"cosine"`` (linear warm-up over
    ``warmup_frac`` of the steps, then cosine decay to ``min_lr_frac * lr``).
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.1
    schedule: str = "onecycle"
    warmup_frac: float = 0.1
    seed: int = 0
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    min_lr_frac: float = 0.0
    # Answer smoothing: where the target token is one of ``answer_words`` (e.g. "A", "B"),
    # the target puts 1 - answer_smoothing on it and spreads answer_smoothing over the other
    # answer words, so a converged model gives its answer probability 1 - answer_smoothing
    # among the answers, whatever the persona: matched confidence by construction.
    answer_smoothing: float = 0.0
    answer_words: tuple[str, ...] = ()
