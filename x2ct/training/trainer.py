"""One training loop for every method, read top to bottom: ``train(config, out)``.

Per step: ``accumulate`` micro-batches (augmented), the schedule's generator
loss (and critic loss on the detached prediction when the critic is due),
a check that every loss and gradient is finite (else the step is skipped;
``train.max_bad_steps`` skipped steps in a row stop the run), optimiser and
LR-scheduler steps, the EMA update. Every ``evaluate.every`` steps the EMA
model is scored on validation cases with ``x2ct.metrics.evaluate`` and the
best checkpoint is kept; every ``checkpoint.every`` steps (and at the end) a
checkpoint is written atomically. ``resume=True`` reloads the last checkpoint,
including data order and random streams, so the run continues as if never
stopped. bf16 autocast is used on CUDA.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import yaml

from x2ct.errors import InputError, X2CTError
from x2ct.metrics import evaluate as score
from x2ct.models import build, build_critic
from x2ct.modelfile import save_model
from x2ct.training import checkpoint, data, schedules
from x2ct.training.augment import augment, check_flip_angles
from x2ct.training.config import Config, from_dict
from x2ct.training.progress import Progress


def check_writable(out: Path) -> None:
    """Fail before any work if ``out`` cannot hold the run."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise InputError(f"Cannot write to the output folder {out} ({error.strerror or error}); choose a writable "
                         "--out.") from None


def lr_factor(config: Config):
    t = config.train

    def factor(step: int) -> float:
        if t.lr_schedule == "linear-decay" and step >= t.decay_start:
            return max(0.0, 1.0 - (step - t.decay_start) / max(1, t.steps - t.decay_start))
        if t.lr_schedule == "step" and t.step_every:
            return t.step_gamma ** (step // t.step_every)
        if t.lr_schedule == "warmup" and t.warmup:
            return min(1.0, (step + 1) / t.warmup)
        return 1.0

    return factor


def _optimizer(params, config: Config, lr: float):
    t = config.train
    kind = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    scale = t.batch_size if t.lr_per_sample else 1
    return kind(params, lr=lr * scale, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay)


def _device(config: Config) -> torch.device:
    if config.train.device == "cuda" and not torch.cuda.is_available():
        raise InputError("train.device is cuda but no CUDA GPU is available; use auto or cpu.")
    if config.train.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.train.device)


def _check_resumable(saved: dict, config: Config) -> None:
    current = config.to_dict()
    for section in sorted(set(saved) | set(current)):
        a, b = saved.get(section), current.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            a, b = {k: v for k, v in a.items() if k != "steps"}, {k: v for k, v in b.items() if k != "steps"}
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    raise InputError(f"--resume with a different config: {section}.{key} was {a.get(key)!r}, now "
                                     f"{b.get(key)!r}; resume with the run's own config.yaml.")
        elif a != b:
            raise InputError(f"--resume with a different config: {section} was {a!r}, now {b!r}.")


class Trainer:
    def __init__(self, config: Config, out, progress: str = "line", datasets: tuple | None = None, stream=None):
        self.config, self.out = config, Path(out)
        check_writable(self.out)
        t = config.train
        if config.augment.flip_p > 0:
            check_flip_angles(config.data.angles)
        self.device = _device(config)
        torch.manual_seed(t.seed)
        self.model = build(config.method, config.preset, **config.model)
        self.model.to(self.device).train()
        self.schedule = schedules.make(self.model, None, config)
        self.critic = None
        if self.schedule.has_critic:
            self.critic = build_critic(config.method, config.preset, **config.critic).to(self.device).train()
            self.schedule.critic = self.critic
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if t.ema else None
        self.train_set, self.val_set = datasets or data.make(config, self.model.spec)
        if len(self.train_set) == 0:
            raise InputError("The training split is empty: give more cases or another data.source.")
        self.optimizer = _optimizer([p for p in self.model.parameters() if p.requires_grad], config, t.lr)
        self.optimizers = {"generator": self.optimizer}
        if self.critic is not None:
            self.optimizers["critic"] = _optimizer(self.critic.parameters(), config, t.critic_lr or t.lr)
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, lr_factor(config)) for k, o in self.optimizers.items()}
        self.sampler = data.Sampler(len(self.train_set), t.seed)
        self.augment_rng = torch.Generator().manual_seed(t.seed + 1)
        self.step, self.bad_steps, self.best = 0, 0, -math.inf
        self.progress_mode, self.stream = progress, stream

    # --- checkpoints -------------------------------------------------------------------------------------------

    def state(self) -> dict:
        state = {"step": self.step, "bad_steps": self.bad_steps, "best": self.best,
                 "sampler_position": self.sampler.position, "model": self.model.state_dict(),
                 "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                 "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                 "torch_rng": torch.get_rng_state(), "augment_rng": self.augment_rng.get_state()}
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state(self, state: dict) -> None:
        self.step, self.bad_steps, self.best = int(state["step"]), int(state["bad_steps"]), float(state["best"])
        self.sampler.position = int(state["sampler_position"])
        self.model.load_state_dict(state["model"])
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        for key, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][key])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        self.augment_rng.set_state(state["augment_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    @property
    def saved_model(self):
        return self.ema if self.ema is not None else self.model

    def card(self, metrics: dict | None = None) -> dict:
        c = self.config
        return {"training": {"method": c.method, "preset": c.preset, "steps": self.step, "data": c.data.kind,
                             "ema": c.train.ema, "schedule": schedules.family(c.method)},
                "metrics": metrics or {}}

    # --- the loop ----------------------------------------------------------------------------------------------

    def batch(self) -> dict:
        items = [self.train_set[self.sampler.next()] for _ in range(self.config.train.batch_size)]
        batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in data.collate(items).items()}
        if "views" not in batch:
            raise InputError(f"{self.config.method} trains on (views, CT) pairs but the dataset yields CTs only.")
        batch["views"], batch["ct"] = augment(batch["views"], batch["ct"], batch["angles"], self.config.augment,
                                              self.augment_rng)
        return batch

    def autocast(self):
        enabled = self.device.type == "cuda" and self.config.train.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self) -> dict | None:
        """One optimiser step; returns the logged values, or None when the step was skipped (non-finite)."""
        t, step = self.config.train, self.step
        critic_due = self.schedule.critic_due(step)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        finite = True
        for _ in range(t.accumulate):
            batch = self.batch()
            if self.critic is not None:
                self.critic.requires_grad_(False)
            with self.autocast():
                loss, terms, pred = self.schedule.generator_loss(batch, step, self.augment_rng)
            finite &= bool(torch.isfinite(loss))
            if not finite:
                break
            (loss / t.accumulate).backward()
            values = {"loss": loss, **terms}
            if critic_due:
                self.critic.requires_grad_(True)
                with self.autocast():
                    critic_loss = self.schedule.critic_loss(batch, pred.detach())
                finite &= bool(torch.isfinite(critic_loss))
                if not finite:
                    break
                (critic_loss / t.accumulate).backward()
                values["critic_loss"] = critic_loss
            for key, value in values.items():
                logs[key] = logs.get(key, 0.0) + float(value.detach()) / t.accumulate
        due = ["generator"] + (["critic"] if critic_due else [])
        for key in due if finite else ():
            params = [p for group in self.optimizers[key].param_groups for p in group["params"]]
            finite &= bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, math.inf)))
        if not finite:
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            return None
        for key in due:
            self.optimizers[key].step()
        for scheduler in self.schedulers.values():
            scheduler.step()
        if self.ema is not None:
            self.update_ema()
        logs["lr"] = self.schedulers["generator"].get_last_lr()[0]
        return logs

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = self.config.train.ema
        for average, current in zip(self.ema.parameters(), self.model.parameters()):
            average.lerp_(current, 1.0 - decay)
        for average, current in zip(self.ema.buffers(), self.model.buffers()):
            average.copy_(current)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean metrics of the saved (EMA) model over the first ``evaluate.cases`` validation cases."""
        model = self.saved_model
        was_training = model.training
        model.eval()
        rows = []
        for index in range(min(self.config.evaluate.cases, len(self.val_set))):
            item = self.val_set[index]
            with self.autocast():
                pred = model(item["views"][None].to(self.device), item["angles"][None].to(self.device))
            result = score(pred[0, 0].float().cpu().numpy(), item["ct"][0].numpy(),
                           hu_range=tuple(item["hu_range"].tolist()))
            rows.append({f"{section}.{key}": float(value) for section in ("x2ct", "honest")
                         for key, value in result[section].items() if isinstance(value, (int, float))})
        model.train(was_training)
        return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]} if rows else {}

    def save(self, metrics: dict | None = None) -> Path:
        folder = checkpoint.save(self.out, self.step, self.saved_model, self.state(), self.card(metrics))
        return folder

    def run(self, resume: bool = False) -> dict:
        """Train to ``train.steps``; return the final summary."""
        c, out = self.config, self.out
        saved_config = out / "config.yaml"
        found = checkpoint.latest(out) if checkpoint.read_pointer(out, checkpoint.LATEST) else None
        if found and not resume:
            raise InputError(f"{out} already holds a training run; pass --resume to continue it or choose another "
                             "--out.")
        if resume and saved_config.is_file():
            _check_resumable(yaml.safe_load(saved_config.read_text()), c)
        if found:
            self.load_state(found[1])
        saved_config.write_text(yaml.safe_dump(c.to_dict(), sort_keys=False))
        progress = Progress(out, c.train.steps, self.step, self.progress_mode, self.stream)
        progress.event("start", method=c.method, preset=c.preset, step=self.step, total=c.train.steps,
                       device=str(self.device))
        metrics: dict = {}
        while self.step < c.train.steps:
            logs = self.train_step()
            if logs is None:
                self.bad_steps += 1
                progress.event("skipped", step=self.step, reason="non-finite loss or gradient")
                if self.bad_steps >= c.train.max_bad_steps:
                    raise X2CTError(f"Training stopped at step {self.step}: {self.bad_steps} steps in a row had "
                                    "non-finite losses or gradients; lower train.lr or check the data. The last "
                                    "good checkpoint is kept.")
                continue
            self.bad_steps = 0
            self.step += 1
            progress.update(self.step, logs)
            done = self.step == c.train.steps
            if self.step % c.evaluate.every == 0 or done:
                metrics = self.evaluate()
                progress.event("evaluation", step=self.step, **metrics)
            if self.step % c.checkpoint.every == 0 or done:
                value = metrics.get(c.evaluate.best_metric, -math.inf) if metrics else -math.inf
                improved = value > self.best
                self.best = max(self.best, value)
                folder = self.save(metrics)
                if improved:
                    checkpoint.mark_best(out, self.step, folder, c.evaluate.best_metric, value)
                checkpoint.prune(out)
        final = out / "model"
        save_model(self.saved_model, final, self.card(metrics))
        summary = {"steps": self.step, "model": str(final), "metrics": metrics,
                   "best": checkpoint.read_pointer(out, checkpoint.BEST)}
        progress.event("done", **summary)
        return summary


def train(config: Config | dict, out, resume: bool = False, steps: int | None = None, progress: str = "line",
          datasets: tuple | None = None, stream=None) -> dict:
    """Train ``config`` (a Config or a mapping) into ``out``; ``steps`` overrides ``train.steps``."""
    if isinstance(config, dict):
        config = from_dict(config)
    if steps is not None:
        if steps < 1:
            raise InputError(f"--steps must be >= 1, got {steps}.")
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=steps))
    return Trainer(config, out, progress, datasets, stream).run(resume)
