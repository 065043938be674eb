"""Config loading: presets load, overrides apply, and every class of bad input names its key."""

import pytest

from steprl.config import Config, from_dict, load_config, preset_names, to_dict, to_yaml
from steprl.errors import ConfigError


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert from_dict(to_dict(cfg)) == cfg  # the saved form loads back to the same config


def test_presets_exist():
    assert {"quickstart", "smoke"} <= set(preset_names())


def test_overrides_apply_with_types():
    cfg = load_config(
        "quickstart",
        ["rl.steps=5", "run.name=other", "rollout.workers=1", "rollout.sampling.temperature=0.7", "stages=[warmup,rl]"],
    )
    assert cfg.rl.steps == 5 and cfg.run.name == "other" and cfg.rollout.workers == 1
    assert cfg.rollout.sampling.temperature == 0.7 and cfg.stages == ["warmup", "rl"]
    assert "steps: 5" in to_yaml(cfg)


def test_yaml_file_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rl:\n  steps: 4\nenv:\n  id: steprl/Calculator-v0\n")
    assert load_config(str(p)).rl.steps == 4


@pytest.mark.parametrize(
    "override, needle",
    [
        ("rl.stepz=3", "unknown key 'rl.stepz' (did you mean 'rl.steps'?)"),
        ("rolout.workers=2", "did you mean 'rollout'?"),
        ("rl.steps=abc", "wrong type for 'rl.steps'"),
        ("run.seed=1.5", "expected int"),
        ("rl.steps=0", "'rl.steps': expected a positive integer"),
        ("rollout.workers=-1", "'rollout.workers': expected a positive integer"),
        ("rollout.micro_batch=7", "'rollout.micro_batch': must divide"),
        ("rollout.sampling.temperature=0", "'rollout.sampling.temperature': expected > 0"),
        ("rollout.sampling.top_p=1.5", "top_p"),
        ("rollout.executor=spark", "'rollout.executor'"),
        ("env.id=steprl/Calculater-v0", "did you mean 'steprl/Calculator-v0'?"),
        ("run.name=../escape", "'run.name'"),
        ("run.name=a/b", "'run.name'"),
        ("stages=[warmup,fly]", "unknown stage 'fly'"),
        ("learner.aggregation=sum", "'learner.aggregation'"),
        ("model.hidden=130", "'model.hidden'"),
        ("justtext", "expected key=value"),
    ],
)
def test_bad_values_are_named(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config("quickstart", [override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_sources(tmp_path):
    with pytest.raises(ConfigError, match="no such file and no preset"):
        load_config("no-such-preset")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text('a: &a ["x","x"]\nb: &b [*a,*a,*a]\nc: [*b,*b,*b]\n')
    with pytest.raises(ConfigError, match="aliases are not allowed"):
        load_config(str(bomb))
    notyaml = tmp_path / "x.yaml"
    notyaml.write_text("run: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(notyaml))
    listy = tmp_path / "l.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(str(listy))
    unknown = tmp_path / "u.yaml"
    unknown.write_text("rl:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'rl.steps'"):
        load_config(str(unknown))
