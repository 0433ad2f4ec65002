"""Code diffusion: VQ codes, absorbing-diffusion sampling, seeds, uncertainty, ELBO (tiny preset)."""

import math

import pytest
import torch

from x2ct.errors import InputError
from x2ct.models import build, count_parameters


@pytest.fixture
def model():
    return build("code-diffusion", "tiny").eval()


@pytest.fixture
def case():
    return torch.rand(1, 2, 16, 16), torch.rand(1, 1, 16, 16, 16)


def test_shapes(model, case):
    views, ct = case
    assert model.xray_vq.codes(views.reshape(2, 1, 16, 16)).shape == (2, 4, 4)
    assert model.ct_codes(ct).shape == (1, 64)
    assert model.context(views).shape == (1, 2 * 16, 16)  # view after view, codebook vectors
    with torch.no_grad():
        assert model(views).shape == (1, 1, 16, 16, 16)
    mean, std = model.sample(views, n=2, steps=4, seed=0)
    assert mean.shape == std.shape == (1, 1, 16, 16, 16)


def test_codes_round_trip(model, case):
    views, ct = case
    for vq, image in ((model.xray_vq, views[:, :1]), (model.ct_vq, ct)):
        codes = vq.codes(image)
        assert codes.dtype == torch.long and 0 <= codes.min() and codes.max() < 32
        vectors = vq.code_vectors(codes)
        # the quantiser maps codebook vectors back to their own indices ...
        assert torch.equal(vq.quantizer.quantizer.quantize(vectors)[2], codes)
        # ... and our code path equals MONAI's quantised forward path
        quantised, _ = vq.quantize(vq.encode(image))
        assert torch.allclose(vectors, quantised, atol=1e-6)
        assert vq.decode_codes(codes).shape == image.shape


def test_training_restarts_dead_codes_at_latents_of_the_batch(model, case):
    """A codebook far from every latent (the collapse the shipped model showed: one code for all) is moved onto
    the data in the first training step, and only in training."""
    _, ct = case
    vq = model.ct_vq
    quantizer = vq.quantizer.quantizer
    with torch.no_grad():
        quantizer.embedding.weight.fill_(50.0)
        quantizer.embedding.weight[0].zero_()  # the one code every latent is nearest to
        quantizer.ema_w.copy_(quantizer.embedding.weight)
        quantizer.ema_cluster_size.fill_(1.0)
        quantizer.ema_cluster_size[1:] = 0.0
    assert vq.codes(ct).unique().tolist() == [0]
    before = {name: value.clone() for name, value in vq.state_dict().items()}
    vq.loss(ct)  # eval mode: nothing restarted
    assert all(torch.equal(before[name], value) for name, value in vq.state_dict().items())

    vq.train()
    torch.manual_seed(0)
    vq.loss(ct)
    latents = vq.encode(ct).movedim(1, -1).reshape(-1, quantizer.embedding_dim)
    moved = quantizer.embedding.weight[1:]
    gaps = (moved[:, None] - latents[None]).abs().amax(dim=-1)  # (codes, latents), largest coordinate gap
    assert gaps.min(dim=1).values.max() < 1e-6, "each restarted code sits on a latent"
    assert torch.allclose(quantizer.ema_cluster_size[1:], torch.full((31,), 2 * vq.restart_below))
    assert vq.codes(ct).unique().numel() > 8
    assert set(vq.state_dict()) == set(before), "no new state: shipped weights still load"
    assert vq.restart_dead_codes(vq.encode(ct)) == 0  # nothing is dead any more


def test_sampling_unmasks_every_token_in_the_given_steps(model, case, monkeypatch):
    views, _ = case
    masked_per_pass = []
    logits = model.prior.logits

    def counting(tokens, context):
        masked_per_pass.append(int((tokens == model.prior.mask_id).sum()))
        return logits(tokens, context)

    monkeypatch.setattr(model.prior, "logits", counting)
    codes = model.prior.sample(model.context(views), steps=5, temperature=0.9,
                               generator=torch.Generator().manual_seed(0))
    assert masked_per_pass == [64, 51, 38, 26, 13]  # 64 tokens, an equal share revealed per pass
    assert (codes != model.prior.mask_id).all() and codes.max() < 32


def test_seeds_make_samples_repeatable_and_samples_differ(model, case):
    views, _ = case
    first, first_std = model.sample(views, n=2, steps=2, seed=7)
    again, again_std = model.sample(views, n=2, steps=2, seed=7)
    assert torch.equal(first, again) and torch.equal(first_std, again_std)
    assert first_std.max() > 0  # several samples differ: an uncertainty map
    other, _ = model.sample(views, n=2, steps=2, seed=8)
    assert not torch.equal(first, other)
    with torch.no_grad():
        assert torch.equal(model(views), model(views))  # reconstruct uses the model's fixed seed
    context = model.context(views)
    a = model.prior.sample(context, 2, 0.9, torch.Generator().manual_seed(1))
    b = model.prior.sample(context, 2, 0.9, torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


def test_elbo_is_finite_and_decreases_with_training(model, case):
    views, ct = case
    bound = model.elbo(views, None, ct, seed=0)
    assert bound.shape == (1,) and torch.isfinite(bound).all() and bound.item() > 0
    assert torch.equal(bound, model.elbo(views, None, ct, seed=0))
    # Train the prior on one sample with varied codes (an untrained VQ-VAE gives nearly one code everywhere).
    context, codes = model.context(views), torch.randint(0, 32, (1, 64))
    before = model.prior.nll_bound(codes, context, 16, torch.Generator().manual_seed(0)).item()
    assert abs(before - math.log2(32)) < 1.0  # bits per code: untrained ~ a uniform guess over 32 codes
    model.prior.train()
    optimiser = torch.optim.Adam(model.stage_parameters("prior"), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        optimiser.zero_grad()
        model.prior.loss(codes, context, generator).backward()
        optimiser.step()
    model.prior.eval()
    after = model.prior.nll_bound(codes, context, 16, torch.Generator().manual_seed(0)).item()
    assert after < before - 0.3


def test_stages_partition_the_parameters(model, case):
    views, ct = case
    stages = {name: model.stage_parameters(name) for name in ("xray_vq", "ct_vq", "prior")}
    ids = [id(p) for group in stages.values() for p in group]
    assert len(ids) == len(set(ids)) == len([p for p in model.parameters() if p.requires_grad])
    model.train()
    model.training_loss(views, None, ct).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_decoder_fine_tuning_changes_only_the_ct_decoder(model, case):
    """ct_decoder_loss trains the CT decoder alone: the codes (the prior's targets) and every other weight stay as
    they were, and the CT decoded from its codes comes closer to the CT."""
    _, ct = case
    codes = model.ct_codes(ct)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.ct_decoder_loss(ct).item()
    for _ in range(20):
        optimiser.zero_grad()
        model.ct_decoder_loss(ct).backward()
        optimiser.step()
    model.eval()
    changed = {name for name, value in model.state_dict().items() if not torch.equal(value, before[name])}
    assert changed and all(name.startswith("ct_vq.decoder.") for name in changed)
    assert torch.equal(model.ct_codes(ct), codes)
    assert model.ct_decoder_loss(ct).item() < first


def test_decoder_fine_tuning_on_sampled_codes_decodes_the_priors_draw(model, case):
    """Given the views, ct_decoder_loss decodes the codes the prior draws from them (dropout off, as in
    reconstruct): the same generator seed gives the same loss, the loss is that of the decoded draw, and only the
    CT decoder learns; the prior is left in the mode it was in."""
    views, ct = case
    model.train()
    loss = model.ct_decoder_loss(ct, views, torch.Generator().manual_seed(3))
    assert model.prior.training
    assert loss.item() == model.ct_decoder_loss(ct, views, torch.Generator().manual_seed(3)).item()
    model.eval()
    codes = model.prior.sample(model.context(views), model.sample_steps, model.temperature,
                               torch.Generator().manual_seed(3))
    decoded = model.ct_vq.decode(model.ct_vq.code_vectors(codes.reshape(1, 4, 4, 4)))
    assert loss.item() == pytest.approx(torch.nn.functional.l1_loss(decoded, ct).item(), rel=1e-6)
    assert not torch.equal(codes, model.ct_codes(ct))  # not the CT's own codes
    model.train()
    loss.backward()
    learnt = {name for name, value in model.named_parameters() if value.grad is not None}
    assert learnt and all(name.startswith("ct_vq.decoder.") for name in learnt)


def test_paper_preset_sizes():
    """Paper: 256^2 X-rays -> 16^2 codes, 128^3 CT -> 8^3 codes, 1024 x 256 codebooks, 2 x 256 + 512 tokens."""
    with torch.device("meta"):
        paper = build("code-diffusion", "paper")
        assert paper.xray_vq.encode(torch.empty(1, 1, 256, 256)).shape == (1, 256, 16, 16)
        assert paper.ct_vq.encode(torch.empty(1, 1, 128, 128, 128)).shape == (1, 256, 8, 8, 8)
    assert paper.ct_vq.quantizer.quantizer.embedding.weight.shape == (1024, 256)
    assert paper.prior.position.shape == (1, 2 * 256 + 512, 512)
    assert len(paper.prior.transformer.layers) == 8 and paper.prior.transformer.layers[0].self_attn.num_heads == 4
    assert paper.temperature == 0.9
    assert count_parameters(build("code-diffusion", "small")) <= 8_000_000


def test_bad_input(model, case):
    views, ct = case
    with pytest.raises(InputError, match="trained on views at"):
        model(views, torch.tensor([[0.0, 45.0]]))
    with pytest.raises(InputError, match="takes 2 view"):
        model(views[:, :1])
    with pytest.raises(InputError, match=r"CTs of shape \(B, 1, 16, 16, 16\)"):
        model.elbo(views, None, ct[..., :8])
    with pytest.raises(InputError, match="temperature"):
        model.sample(views, n=2, temperature=0.0)


def test_ct_autoencoder_keeps_learning_from_an_output_below_the_range(model):
    """The collapse of the first shipped model: its sigmoid output, driven to 0 by mostly-air CTs, passed no
    gradient back, and every CT decoded to an empty volume. The linear output still gets the whole L1 gradient
    there; decoded images are clamped to [0, 1]."""
    ct = torch.zeros(1, 1, 16, 16, 16)
    ct[..., 4:12, 4:12, 4:12] = 0.8
    vq = model.ct_vq
    last = vq.decoder.blocks[-1].conv
    with torch.no_grad():
        last.bias.fill_(-20.0)  # where a sigmoid would sit at 2e-9 with a gradient of the same size
    vq.loss(ct).backward()
    assert last.bias.grad.item() < -0.9  # L1: d/d(bias) = -1 for every voxel below its target
    assert vq.decode_codes(vq.codes(ct)).min() == 0.0
