"""Importing the X2CT-GAN authors' released generators (x2ct.published).

The fixture ``data/x2ct_gan_authors_random.json`` holds facts recorded from
the authors' own code (kylekma/X2CT, run in a scratch environment outside
this repository, never copied here): every key of their one- and two-view
generators with its shape and dtype, and statistics and a 4^3 crop of their
output for seeded random weights and a seeded input. The weights rule
(``_seeded``) depends only on key names and shapes, so the same weights are
rebuilt here without their code.
"""

import hashlib
import json
import pathlib

import numpy as np
import pytest
import torch

from x2ct import catalog
from x2ct.cli import main
from x2ct.errors import InputError
from x2ct.modelfile import load_model, read_card
from x2ct.models import build
from x2ct.published import authors_layout, convert, import_published, load_checkpoint

FIXTURE = json.loads((pathlib.Path(__file__).parent / "data" / "x2ct_gan_authors_random.json").read_text())
ANGLES = [0.0, 90.0]


def _seeded(key: str, shape, dtype: str) -> torch.Tensor:
    """The fixture's weights rule: numpy PCG64 seeded by the key's sha256, x0.02 (2+ dims) or x0.1 (1-D)."""
    if not dtype.startswith("float"):
        return torch.zeros(shape, dtype=getattr(torch, dtype))
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))
    scale = 0.02 if len(shape) >= 2 else 0.1
    return torch.from_numpy((rng.standard_normal(tuple(shape)) * scale).astype(np.float32))


def _authors_state(n_views: int, size: int = 128, device: str | None = None) -> dict[str, torch.Tensor]:
    entry = FIXTURE["models"][str(n_views)]
    shapes = entry["shapes_at_64"] if size == 64 else {}
    if device == "meta":
        return {key: torch.empty(shapes.get(key, shape), dtype=getattr(torch, dtype), device="meta")
                for key, shape, dtype in entry["keys"]}
    return {key: _seeded(key, shapes.get(key, shape), dtype) for key, shape, dtype in entry["keys"]}


def _meta_model(n_views: int):
    with torch.device("meta"):
        return build("x2ct-gan", "paper", n_views=n_views)


@pytest.fixture
def models_env(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv(catalog.MODELS_ENV, str(folder))
    return folder


@pytest.mark.parametrize("n_views", [1, 2])
def test_every_authors_key_has_exactly_one_rule_and_its_shape(n_views):
    rules = authors_layout(n_views, _meta_model(n_views))
    keys = {key: tuple(shape) for key, shape, _ in FIXTURE["models"][str(n_views)]["keys"]}
    assert set(keys) == set(rules)
    assert {key: rule.shape for key, rule in rules.items()} == keys
    # every parameter of ours is fed by exactly one mapped key
    targets = [rule.target for rule in rules.values() if rule.kind == "mapped"]
    assert sorted(targets) == sorted(_meta_model(n_views).state_dict())
    kinds = {rule.kind for rule in rules.values()}
    assert kinds == ({"mapped", "cancelled", "folded", "statistic", "unused"} if n_views == 2
                     else {"mapped", "cancelled", "folded", "statistic"})


@pytest.mark.parametrize("n_views", [1, 2])
def test_import_gives_the_authors_output(n_views):
    """Their network (seeded weights, 64^2 input) against ours with the imported weights."""
    reference = FIXTURE["models"][str(n_views)]["output_64"]
    model = build("x2ct-gan", "paper", n_views=n_views, view_size=64).eval()
    model.load_state_dict(convert(_authors_state(n_views, 64), n_views, model), strict=True)
    views = torch.from_numpy(np.random.default_rng(2019).random((2, 64, 64)).astype(np.float32))[None, :n_views]
    with torch.no_grad():
        volume = model(views, torch.tensor([ANGLES[:n_views]]))[0, 0].double()
    assert list(volume.shape) == reference["shape"]
    for name, value in (("mean", volume.mean()), ("std", volume.std()), ("min", volume.min()),
                        ("max", volume.max()), ("fraction_positive", (volume > 0).double().mean())):
        assert value.item() == pytest.approx(reference[name], rel=1e-4, abs=1e-4), name
    k, j, i = reference["crop_origin"]
    crop = volume[k:k + 4, j:j + 4, i:i + 4]
    np.testing.assert_allclose(crop.numpy(), np.array(reference["crop"]), atol=5e-3)
    c = volume.shape[0] // 2
    for axis, line in enumerate((volume[:, c, c], volume[c, :, c], volume[c, c, :])):
        np.testing.assert_allclose(line.numpy()[::8], reference[f"profile_axis{axis}"], atol=5e-3)


def test_paper_checkpoint_imports_through_the_catalog(tmp_path, models_env):
    state = _authors_state(2)
    path = tmp_path / "90_net_G.pth"
    torch.save({"iters": 1, "epoch": 90, "state_dict": state, "lr": 2e-4}, path)
    entry = import_published(path)  # two views, read from the keys
    assert entry.id == "x2ct-gan-lidc-2v" and entry.source == "user"
    card = read_card(entry.folder)
    assert "kylekma/X2CT" in card["source"] and "checkpoint 90" in card["source"]
    assert "GPLv3" in card["licence"] and "LIDC-IDRI" in card["training_data"]
    assert "X2CT DRR normalisation" in card["input_protocol"] and card["intended_use"].startswith("research use only")
    assert card["import_rules"]["mapped"] and card["source_sha256"]
    model, _ = load_model(entry.folder)
    expected = convert(state, 2, model)
    assert all(torch.equal(model.state_dict()[key], expected[key]) for key in expected)
    assert list(models_env.iterdir()) == [entry.folder]  # no staging folder left inside


class _RunsCode:
    """Unpickling this would touch a file: the importer must refuse it unrun."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path, models_env, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    assert main(["catalog", "import-published", "x2ct-gan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "asks to run Python code" in err and "refused unread" in err
    assert not marker.exists() and not models_env.exists()


@pytest.mark.parametrize("change, message", [
    ("drop", "lacks 1 key(s)"),
    ("extra", "key(s) that the authors' 2-view generator does not"),
    ("shape", "has shape"),
])
def test_missing_extra_or_misshapen_keys_are_refused(change, message):
    state = _authors_state(2, device="meta")
    key = "view2Model.linker_layer3.0.conv_block.0.weight"
    if change == "drop":
        del state[key]
    elif change == "extra":
        state["view3Model.encoder_layer.1.weight"] = torch.empty(64, 1, 7, 7, device="meta")
    else:
        state[key] = torch.empty(64, 64, 3, 3, 1, device="meta")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert(state, 2, _meta_model(2))


def test_wrong_view_count_is_refused_with_a_hint():
    with pytest.raises(InputError, match="check --views"):
        convert(_authors_state(2, device="meta"), 1, _meta_model(1))


def test_running_statistics_are_optional_as_in_old_checkpoints():
    state = {key: value for key, value in _authors_state(1, device="meta").items()
             if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    rules = authors_layout(1, _meta_model(1))
    missing = [key for key, rule in rules.items() if not rule.optional and key not in state]
    assert missing == []


def test_bad_checkpoint_files_are_refused(tmp_path, models_env, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(garbage)
    small = tmp_path / "small.pth"
    torch.save({"state_dict": {"decoder_layer.0.bias": torch.zeros(1)}}, small)
    assert main(["catalog", "import-published", "x2ct-gan", str(small)]) == 2  # one view, read from the keys
    err = capsys.readouterr().err
    assert "lacks" in err and "1-view" in err
    assert main(["catalog", "import-published", "x2ct-gan", str(small), "--views", "2"]) == 2
    assert "2-view" in capsys.readouterr().err and not models_env.exists()
    module = tmp_path / "module.pth"
    torch.save({"module.decoder_layer.0.bias": torch.zeros(1)}, module)
    assert list(load_checkpoint(module)) == ["decoder_layer.0.bias"]
