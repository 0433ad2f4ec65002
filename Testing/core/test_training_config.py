"""Training configs: every shipped config loads; typos and wrong types name the field."""

import pytest

from x2ct.errors import InputError
from x2ct.training import config


def test_every_shipped_config_loads():
    names = config.shipped_names()
    assert {"x2ct-gan-tiny", "repeat-concat-tiny", "code-diffusion-tiny", "projection-gan-tiny"} <= set(names)
    for name in names:
        loaded = config.load(name)
        assert f"{loaded.method}-{loaded.preset}" == name


def test_repeat_concat_paper_schedule():
    c = config.load("repeat-concat-paper")
    assert (c.train.optimizer, c.train.eps, c.train.weight_decay, c.train.ema) == ("adamw", 1e-3, 1e-5, 0.995)
    assert (c.train.generator_steps_per_critic_step, c.train.steps, c.train.decay_start) == (10, 5001, 1500)


@pytest.mark.parametrize("data, field", [
    ({"method": "x2ct-gan", "train": {"lr_rate": 1e-4}}, "train.lr_rate"),
    ({"method": "x2ct-gan", "trian": {}}, "trian"),
    ({"method": "x2ct-gan", "train": {"steps": "many"}}, "train.steps"),
    ({"method": "x2ct-gan", "train": {"betas": [0.5]}}, "train.betas"),
    ({"method": "x2ct-gan", "data": {"kind": "folder"}}, "data.kind"),
    ({"method": "x2ct-gan", "data": {"kind": "ct-folder"}}, "data.source"),
    ({"method": "code-diffusion", "train": {"decoder_codes": "prior"}}, "train.decoder_codes"),
    ({"method": "x2ct-gna"}, "method"),
    ({"preset": "tiny"}, "method"),
])
def test_bad_field_is_named(data, field):
    with pytest.raises(InputError, match=rf"\b{field.replace('.', '[.]')}\b"):
        config.from_dict(data)


def test_yaml_scientific_notation_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: henzler\nloss:\n  mse: 1.0\ntrain:\n  lr: 1e-5\n")
    assert config.load(path).train.lr == 1e-5
    with pytest.raises(InputError, match="No config file"):
        config.load(tmp_path / "missing.yaml")
