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

Randomness is keyed to the data: the k-th sample drawn in the run gets its
augmentation from a generator seeded by (seed, k), and each micro-batch
reseeds torch's global generator (dropout, diffusion masks) from the position
of its first sample. So a resumed run and a run split over several processes
(``distributed``: torchrun, rank 0 alone writes checkpoints, logs and
progress) draw exactly what one uninterrupted process draws.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import time
from pathlib import Path

import torch

from x2ct.errors import InputError, X2CTError
from x2ct.evaluation import case_row, mean_row
from x2ct.models import build, build_critic
from x2ct.training import checkpoint, data, distributed, finetune, schedules
from x2ct.training.augment import augment, check_flip_angles
from x2ct.training.config import RANGES, Config, from_dict, inside
from x2ct.training.progress import LOG, Progress, truncate_log

CONFIG = "config.yaml"


def _seed(seed: int, position: int) -> int:
    """A generator seed for the sample drawn at ``position`` (distinct for distinct seeds and positions)."""
    return (seed * 1_000_003 + position) % (2**63 - 1)


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


def _device(config: Config, local_rank: int = 0) -> torch.device:
    if config.train.device == "cuda" and not torch.cuda.is_available():
        raise InputError("train.device is cuda but no CUDA GPU is available; use auto or cpu.")
    kind = config.train.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")


def _saved_config(out: Path) -> dict | None:
    """The run's config.yaml as a full, validated mapping (defaults filled in), or None when there is none."""
    from x2ct.training import yamlfile

    path = out / CONFIG
    if not os.path.lexists(path):
        return None
    try:
        return from_dict(yamlfile.read(path) or {}).to_dict()
    except InputError as error:
        raise InputError(f"The run's {path} is not usable ({str(error).rstrip('.')}).") from None


def _without_steps(config: dict) -> dict:
    return {**config, "train": {k: v for k, v in config["train"].items() if k != "steps"}}


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


def _built(builder, config: Config, overrides: dict, section: str):
    """``builder(method, preset, **overrides)``; overrides that do not fit together are named, not a traceback."""
    if not overrides:
        return builder(config.method, config.preset)
    try:
        return builder(config.method, config.preset, **overrides)
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError, AssertionError, ZeroDivisionError) as error:
        if isinstance(error, X2CTError):
            raise
        first = " ".join(str(error).split())[:200] or type(error).__name__
        raise InputError(f"Config section {section}: these values do not build {config.method} ({config.preset}): "
                         f"{first}; check them against the preset's.") from None


class Trainer:
    """One run in one folder. ``resume`` continues its last checkpoint; ``overwrite`` replaces a run found there.

    Every check that can refuse the run (the folder, its pointers and state,
    the config) is done before anything in the folder is changed.
    """

    def __init__(self, config: Config, out, progress: str = "line", datasets: tuple | None = None, stream=None,
                 group: distributed.Group | None = None, resume: bool = False, overwrite: bool = False):
        self.config, self.out = config, Path(out)
        self.resume, self.overwrite = resume, overwrite
        self.group = group or distributed.Group()
        t = config.train
        self.shard = distributed.plan(t.batch_size, t.accumulate, self.group.world)
        problem, self.resumed = None, None
        if self.group.main:
            try:
                self.resumed = self._preflight()
                check_writable(self.out)
            except InputError as error:
                problem = str(error)
        problem = self.group.broadcast(problem)
        if problem:
            raise InputError(problem)
        if config.augment.flip_p > 0:
            check_flip_angles(config.data.angles)
        if datasets is None:
            data.check_source(config.data)
        self.device = _device(config, self.group.local_rank)
        torch.manual_seed(t.seed)
        self.model = _built(build, config, config.model, "model")
        self.initial_weights = None
        if t.init_from and not resume:  # a resumed run takes its weights from its checkpoint
            self.initial_weights = finetune.load_initial_weights(self.model, config)
        if self.shard.split == "batch" and self.device.type == "cuda":  # BatchNorm statistics over the global batch
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device).train()
        self.group.broadcast_parameters(self.model)
        self.schedule = schedules.make(self.model, None, config)
        self.critic = None
        if self.schedule.has_critic:
            self.critic = _built(build_critic, config, config.critic, "critic").to(self.device).train()
            self.group.broadcast_parameters(self.critic)
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
        self.step, self.bad_steps, self.best, self.metrics = 0, 0, -math.inf, {}
        self.progress_mode, self.stream = progress, stream

    # --- the run folder ----------------------------------------------------------------------------------------

    def _preflight(self) -> dict | None:
        """Refuse what cannot run in ``out`` (reading only); return the state to resume from, if any."""
        out, config = self.out, self.config
        if self.resume and self.overwrite:
            raise InputError("--resume continues the run in --out and --overwrite replaces it; pass only one.")
        if not self.resume:
            found = self._run_files()
            if found and not self.overwrite:
                raise InputError(self._occupied(found))
            return None
        if not os.path.lexists(out / checkpoint.LATEST):
            more = (" (its files are from a run that stopped before its first checkpoint: add --overwrite)"
                    if self._run_files() else "")
            raise InputError(f"Nothing to resume: {out} holds no checkpoint ({checkpoint.LATEST} is missing); drop "
                             f"--resume to start a new run there{more}.")
        saved = _saved_config(out)
        if saved is not None:
            _check_resumable(saved, config)
        checkpoint.read_pointer(out, checkpoint.BEST)  # damaged: refused now, not after training
        return checkpoint.latest(out)[1]

    def _run_files(self) -> list[str]:
        """Files of an earlier run in ``out``: checkpoint.RUN_FILES, and a config.yaml other than this run's."""
        out = self.out
        found = checkpoint.run_files(out)
        if os.path.lexists(out / CONFIG):
            try:
                same = _without_steps(_saved_config(out)) == _without_steps(self.config.to_dict())
            except InputError:
                same = False
            if not same:
                found.append(CONFIG)
        return found

    def _occupied(self, found: list[str]) -> str:
        out, names = self.out, ", ".join(found)
        if checkpoint.LATEST in found:
            return (f"{out} already holds a training run ({names}); pass --resume to continue it from its last "
                    "checkpoint, or --overwrite to delete it and start again, or choose another --out.")
        return (f"{out} holds the files of an earlier run that has no checkpoint to resume ({names}); pass "
                "--overwrite to delete them and start again, or choose another --out.")

    def _prepare_folder(self) -> None:
        """After every check passed: clear a replaced run, write config.yaml if it changed, cut the replayed log."""
        out = self.out
        if self.overwrite:
            for name in checkpoint.RUN_FILES:
                path = out / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif os.path.lexists(path):
                    path.unlink()
        self._write_config()
        if self.resume:
            truncate_log(out / LOG, self.step)

    def _write_config(self) -> None:
        """config.yaml, atomically, and only when it differs from the file already there."""
        import yaml

        from x2ct.io.outputs import write_text

        path, current = self.out / CONFIG, self.config.to_dict()
        try:
            if _saved_config(self.out) == current:
                return
        except InputError:
            pass  # unreadable: replaced (a new run was allowed to, a resumed one checked it first)
        write_text(path, yaml.safe_dump(current, sort_keys=False))

    # --- checkpoints -------------------------------------------------------------------------------------------

    def state(self) -> dict:
        state = {"step": self.step, "bad_steps": self.bad_steps, "best": self.best, "metrics": self.metrics,
                 "sampler_position": self.sampler.position, "model": self.model.state_dict(),
                 "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                 "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                 "torch_rng": torch.get_rng_state()}
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.initial_weights:
            state["init_from"] = self.initial_weights  # a resumed fine-tuning run's card still names its source
        return state

    def load_state(self, state: dict) -> None:
        """Continue from a checkpoint's state; one that does not fit this run raises one InputError line."""
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
            first = " ".join(str(error).split())[:200] or type(error).__name__
            raise InputError(f"The last checkpoint in {self.out} does not fit this run ({type(error).__name__}: "
                             f"{first}); resume with the run's own config.yaml, or start a new run in another "
                             "--out.") from None

    def _load_state(self, state: dict) -> None:
        self.step, self.bad_steps, self.best = int(state["step"]), int(state["bad_steps"]), float(state["best"])
        self.metrics = {str(k): float(v) for k, v in state.get("metrics", {}).items()}
        self.sampler.position = int(state["sampler_position"])
        if not (inside(self.step, RANGES["train.steps"]) or self.step == 0) or self.sampler.position < 0:
            raise ValueError(f"step {self.step} or sampler position {self.sampler.position} is out of range")
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
        if "init_from" in state:
            self.initial_weights = dict(state["init_from"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    @property
    def saved_model(self):
        return self.ema if self.ema is not None else self.model

    def card(self, metrics: dict | None = None) -> dict:
        c = self.config
        return {"training": {"method": c.method, "preset": c.preset, "steps": self.step, "data": c.data.kind,
                             "ema": c.train.ema, "schedule": schedules.family(c.method),
                             "angles": list(c.data.angles),
                             **({"init_from": self.initial_weights} if self.initial_weights else {})},
                "metrics": metrics or {}}

    # --- the loop ----------------------------------------------------------------------------------------------

    def micro_batches(self) -> list[tuple[int, dict]]:
        """This process's micro-batches of the step, each with the run position of its first sample.

        Every process draws the whole global step from the shared sampler (so
        all stay at the same position) and loads only its own share.
        """
        t, first = self.config.train, self.sampler.position
        order = [self.sampler.next() for _ in range(t.batch_size * t.accumulate)]
        shares = self.shard.indices(self.group.rank, self.group.world, t.batch_size, t.accumulate)
        return [(first + share[0], self.batch([(first + i, order[i]) for i in share])) for share in shares]

    def batch(self, drawn: list[tuple[int, int]]) -> dict:
        """Collated, augmented items ``(position, index)``; sample k's augmentation is seeded by (seed, k)."""
        items = []
        for position, index in drawn:
            item = self.train_set[index]
            if "views" not in item:
                raise InputError(f"{self.config.method} trains on (views, CT) pairs but the dataset yields CTs only.")
            rng = torch.Generator().manual_seed(_seed(self.config.train.seed + 1, position))
            views, ct = augment(item["views"][None], item["ct"][None], item["angles"][None], self.config.augment, rng)
            items.append({**item, "views": views[0], "ct": ct[0]})
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in data.collate(items).items()}

    def autocast(self):
        enabled = self.device.type == "cuda" and self.config.train.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self) -> dict | None:
        """One optimiser step; returns the logged values, or None when the step was skipped (non-finite).

        Losses are averaged over this process's micro-batches and gradients
        over the processes, so the step equals one process's over the global batch.
        """
        step, count = self.step, self.shard.micro_batches
        critic_due = self.schedule.critic_due(step)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        finite = True
        for position, batch in self.micro_batches():
            torch.manual_seed(_seed(self.config.train.seed, position))  # dropout, masks: keyed to the data
            if self.critic is not None:
                self.critic.requires_grad_(False)
            with self.autocast():
                loss, terms, pred = self.schedule.generator_loss(batch, step, torch.Generator().manual_seed(
                    _seed(self.config.train.seed + 2, position)))
            finite &= bool(torch.isfinite(loss))
            if not finite:
                break
            (loss / count).backward()
            values = {"loss": loss, **terms}
            if critic_due:
                self.critic.requires_grad_(True)
                with self.autocast():
                    critic_loss = self.schedule.critic_loss(batch, pred.detach())
                finite &= bool(torch.isfinite(critic_loss))
                if not finite:
                    break
                (critic_loss / count).backward()
                values["critic_loss"] = critic_loss
            for key, value in values.items():
                logs[key] = logs.get(key, 0.0) + float(value.detach()) / count
        finite = self.group.all_finite(finite, self.device)  # every process skips the same steps
        due = ["generator"] + (["critic"] if critic_due else [])
        for key in due if finite else ():
            params = [p for group in self.optimizers[key].param_groups for p in group["params"]]
            self.group.average_gradients(params, self.device)
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
        logs = self.group.average_logs(logs, self.device)
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
            rows.append(case_row(pred[0, 0], item))
        model.train(was_training)
        return mean_row(rows)

    def save(self) -> Path:
        return checkpoint.save(self.out, self.step, self.saved_model, self.state(), self.card(self.metrics))

    def run(self) -> dict:
        """Train to ``train.steps``; return the final summary (on every process; only rank 0 writes)."""
        c, out, main = self.config, self.out, self.group.main
        state = self.group.broadcast(self.resumed)
        self.resumed = None
        if state is not None:
            self.load_state(state)
        if self.step > c.train.steps:  # every process holds the same step: all stop here
            raise InputError(f"The run in {out} is already at step {self.step}, past the {c.train.steps} steps "
                             "asked for; give more steps (--steps) to continue it.")
        if main:
            self._prepare_folder()
        first_step, began = self.step, time.monotonic()
        progress = Progress(out, c.train.steps, self.step, self.progress_mode if main else "none", self.stream,
                            files=main)
        progress.event("start", method=c.method, preset=c.preset, step=self.step, total=c.train.steps,
                       device=str(self.device), processes=self.group.world)
        try:
            metrics = self._loop(progress)
            final = out / checkpoint.FINAL
            if main:
                checkpoint.save_final(out, self.saved_model, self.card(metrics))
        finally:
            progress.close()
        seconds = time.monotonic() - began
        done = self.step - first_step
        summary = {"steps": self.step, "steps_this_run": done, "seconds": round(seconds, 2),
                   "steps_per_second": round(done / seconds, 4) if seconds > 0 else None,
                   "processes": self.group.world, "metrics": metrics,
                   "best": checkpoint.read_pointer(out, checkpoint.BEST) if main else None,
                   "model": str(final) if main else None, "checkpoints": str(out / "checkpoints") if main else None,
                   "log": str(progress.csv_path) if main else None,
                   "tensorboard": str(progress.tensorboard_path) if progress.tensorboard else None}
        progress.event("done", **summary)
        return summary

    def _loop(self, progress: Progress) -> dict:
        """Steps until ``train.steps``; rank 0 evaluates and writes checkpoints. Returns the last metrics."""
        c, out, main = self.config, self.out, self.group.main
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
            if main and (self.step % c.evaluate.every == 0 or done):
                self.metrics = self.evaluate()
                progress.evaluation(self.step, self.metrics)
            if main and (self.step % c.checkpoint.every == 0 or done):
                value = self.metrics.get(c.evaluate.best_metric, -math.inf)
                improved = math.isfinite(value) and value > self.best
                self.best = max(self.best, value)
                folder = self.save()
                if improved:
                    checkpoint.mark_best(out, self.step, folder, c.evaluate.best_metric, value)
                checkpoint.prune(out)
        return self.metrics


def train(config: Config | dict, out, resume: bool = False, steps: int | None = None, progress: str = "line",
          datasets: tuple | None = None, stream=None, overwrite: bool = False, init_from: str | None = None) -> dict:
    """Train ``config`` (a Config or a mapping) into ``out``; ``steps`` overrides ``train.steps``, ``init_from``
    ``train.init_from`` (fine-tune a model: its id or folder).

    ``out`` must not hold another run unless ``resume`` (continue it) or
    ``overwrite`` (delete it first, once every check has passed).

    Under torchrun (WORLD_SIZE > 1 in the environment) this process joins the
    run's process group and trains its share of every global batch.
    """
    if isinstance(config, dict):
        config = from_dict(config)
    if steps is not None:
        if not inside(steps, RANGES["train.steps"]):
            raise InputError(f"--steps must be in {RANGES['train.steps']}, got {steps}.")
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=steps))
    if init_from is not None:
        settings = config.to_dict()
        settings["train"]["init_from"] = finetune.model_reference(init_from)
        config = from_dict(settings)  # validated as if the config file had it
    group = distributed.Group.from_env(_device(config).type)
    try:
        summary = Trainer(config, out, progress, datasets, stream, group, resume, overwrite).run()
    except BaseException:
        group.close(wait=False)
        raise
    group.close()
    return summary
