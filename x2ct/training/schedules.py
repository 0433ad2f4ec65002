"""Each method family's losses for one training step (the published schedules; docs/methods.md).

A schedule turns a batch ``{"views", "angles", "ct", "hu_range"}`` into a
generator loss (and, for adversarial families, a critic loss on the detached
prediction). The trainer owns optimisers, accumulation, EMA and checks.

* ``supervised``: weighted MSE / L1, DuoLift's lung-masked MSE / L1 and X2CT's
  projection L1 (x2ct-cnn, duolift-cnn, henzler);
* ``gan``: the supervised terms + an LSGAN or BCE critic (x2ct-gan, duolift-gan);
* ``neural-ot``: Sinkhorn feature cost - 0.1 x critic score; critic loss
  100 x (mean d(pred) - mean d(gt)), trained once per k generator steps
  (repeat-concat, seed 000); the supervised voxel terms may be added (all 0
  by default, as published; a non-zero weight is a departure from the paper);
* ``projection``: seed 001's projection MSE + total variation + 2D projection
  critic, with dynamic weights; no CT is used (projection-gan);
* ``code-diffusion``: stage 1 trains both VQ-VAEs, stage 2 the absorbing
  diffusion prior on their codes (seed 002).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from x2ct import losses

FAMILIES = {
    "x2ct-cnn": "supervised", "duolift-cnn": "supervised", "henzler": "supervised",
    "x2ct-gan": "gan", "duolift-gan": "gan", "repeat-concat": "neural-ot",
    "projection-gan": "projection", "code-diffusion": "code-diffusion",
}
#: DuoLift's lung mask (not published): air-like voxels, -950 < HU < -400, on the ground truth.
LUNG_HU = (-950.0, -400.0)


def family(method: str) -> str:
    from x2ct.errors import InputError

    if method not in FAMILIES:
        raise InputError(f"No training schedule for {method}; trainable: {', '.join(sorted(FAMILIES))}.")
    return FAMILIES[method]


def lung_mask(ct: torch.Tensor, hu_range: torch.Tensor) -> torch.Tensor:
    low, high = hu_range[:, 0].reshape(-1, 1, 1, 1, 1), hu_range[:, 1].reshape(-1, 1, 1, 1, 1)
    hu = ct * (high - low) + low
    return (hu > LUNG_HU[0]) & (hu < LUNG_HU[1])


def supervised_terms(pred: torch.Tensor, batch: dict, weights) -> dict:
    ct, terms = batch["ct"], {}
    if weights.mse:
        terms["mse"] = weights.mse * F.mse_loss(pred, ct)
    if weights.l1:
        terms["l1"] = weights.l1 * F.l1_loss(pred, ct)
    if weights.lung_mse or weights.lung_l1:
        mask = lung_mask(ct, batch["hu_range"])
        if weights.lung_mse:
            terms["lung_mse"] = weights.lung_mse * losses.masked_mse(pred, ct, mask)
        if weights.lung_l1:
            terms["lung_l1"] = weights.lung_l1 * losses.masked_l1(pred, ct, mask)
    if weights.projection:
        terms["projection"] = weights.projection * losses.x2ct_projection_loss(pred, ct)
    return terms


class Schedule:
    """Supervised: generator loss only."""

    has_critic = False

    def __init__(self, model, critic, config):
        self.model, self.critic, self.config = model, critic, config
        self.weights = config.loss

    def critic_due(self, step: int) -> bool:
        """Whether the critic trains at this (0-based) step."""
        return self.has_critic and step % self.config.train.generator_steps_per_critic_step == 0

    def generator_loss(self, batch: dict, step: int, generator: torch.Generator):
        """-> (loss, {term: value}, prediction for the critic or None)."""
        pred = self.model(batch["views"], batch["angles"])
        terms = supervised_terms(pred, batch, self.weights)
        return sum(terms.values()), terms, pred

    def critic_loss(self, batch: dict, pred: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GANSchedule(Schedule):
    has_critic = True

    def _terms(self):
        if self.weights.adversarial_kind == "lsgan":
            return losses.lsgan_generator_loss, losses.lsgan_discriminator_loss
        return losses.bce_generator_loss, losses.bce_discriminator_loss

    def generator_loss(self, batch, step, generator):
        loss, terms, pred = super().generator_loss(batch, step, generator)
        fake = self.critic(pred, batch["views"], batch["angles"])
        terms["adversarial"] = self.weights.adversarial * self._terms()[0](fake)
        return loss + terms["adversarial"], terms, pred

    def critic_loss(self, batch, pred):
        real = self.critic(batch["ct"], batch["views"], batch["angles"])
        fake = self.critic(pred, batch["views"], batch["angles"])
        return self._terms()[1](real, fake)


class NeuralOTSchedule(Schedule):
    has_critic = True

    def __init__(self, model, critic, config):
        super().__init__(model, critic, config)
        self.cost = losses.SinkhornFeatureCost(weight=config.loss.ot_cost, seed=config.train.seed)

    def generator_loss(self, batch, step, generator):
        pred = self.model(batch["views"], batch["angles"])
        self.cost.to(pred.device)
        cost = self.cost(pred.float(), batch["ct"].float())
        score = self.critic(pred)
        loss = losses.neural_ot_generator_loss(cost, score, weight=self.weights.adversarial)
        terms = supervised_terms(pred, batch, self.weights)
        return loss + sum(terms.values()), {"ot_cost": cost, "critic_score": score.mean(), **terms}, pred

    def critic_loss(self, batch, pred):
        return losses.neural_ot_critic_loss(self.critic(pred), self.critic(batch["ct"]), weight=self.weights.ot_critic)


class ProjectionSchedule(Schedule):
    """Seed 001: only the X-rays supervise; the CT is used for evaluation only."""

    has_critic = True

    def generator_loss(self, batch, step, generator):
        from x2ct.models.methods.projection_gan import project, weighted_sum

        pred = self.model(batch["views"], batch["angles"])
        images = project(pred.float(), batch["angles"])
        parts = [F.mse_loss(images, batch["views"]), losses.total_variation(pred.float()) / 3,  # mean over the 3 axes
                 losses.bce_generator_loss(self.critic(images))]
        terms = dict(zip(("projection", "tv", "adversarial"), parts))
        return weighted_sum(parts), terms, images

    def critic_loss(self, batch, images):
        return losses.bce_discriminator_loss(self.critic(batch["views"]), self.critic(images))


class CodeDiffusionSchedule(Schedule):
    """Stage 1 (``train.stage1_steps``): both VQ-VAEs; then ``train.decoder_steps`` of the CT decoder alone on
    frozen codes, the CT's own or the prior's draws from its views (``train.decoder_codes``; a departure, for
    fine-tuning); then stage 2: the prior on the frozen codes."""

    def generator_loss(self, batch, step, generator):
        stage1_end = self.config.train.stage1_steps
        if step < stage1_end:
            terms = {"xray_vq": self.model.xray_vq_loss(batch["views"]), "ct_vq": self.model.ct_vq_loss(batch["ct"])}
        elif step < stage1_end + self.config.train.decoder_steps:
            views = batch["views"] if self.config.train.decoder_codes == "sampled" else None
            terms = {"ct_decoder": self.model.ct_decoder_loss(batch["ct"], views, generator)}
        else:
            terms = {"prior": self.model.prior_loss(batch["views"], batch["angles"], batch["ct"])}
        return sum(terms.values()), terms, None


SCHEDULES = {"supervised": Schedule, "gan": GANSchedule, "neural-ot": NeuralOTSchedule,
             "projection": ProjectionSchedule, "code-diffusion": CodeDiffusionSchedule}


def make(model, critic, config) -> Schedule:
    return SCHEDULES[family(config.method)](model, critic, config)
