"""The typed config: strict keys, types, overrides, safe YAML, resolved-config round trip."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmimdb_dist.errors import ConfigError
from mmimdb_dist.schema import ExperimentConfig, apply_overrides, from_dict, load_config, parse_override, save_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_load_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.loader.batch_size == 32
    assert cfg.data.plot_policy == "longest"


def test_yaml_values_and_overrides_apply(tmp_path):
    path = write(
        tmp_path,
        """
        name: exp1
        loader: {batch_size: 8, num_workers: 0}
        data: {plot_policy: first}
    """,
    )
    cfg = load_config(path, ["loader.batch_size=16", "shard.poster_short_side=128", "seed=7"])
    assert cfg.name == "exp1"
    assert cfg.loader.batch_size == 16  # override wins over the file
    assert cfg.loader.num_workers == 0  # file wins over the default
    assert cfg.shard.poster_short_side == 128
    assert cfg.seed == 7
    assert cfg.data.plot_policy == "first"


def test_unknown_key_names_the_key_and_valid_ones(tmp_path):
    path = write(tmp_path, "loader: {batch_sise: 8}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "loader.batch_sise" in message
    assert "did you mean 'batch_size'" in message
    assert "eval_batch_size" in message  # lists the valid keys
    assert str(path) in message


def test_unknown_section_from_override():
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        load_config(None, ["trian.lr=3e-4"])


def test_wrong_type_names_expected_type():
    with pytest.raises(ConfigError, match=r"loader\.batch_size: expected int, got 'big' \(str\)"):
        load_config(None, ["loader.batch_size=big"])
    with pytest.raises(ConfigError, match=r"loader\.augment: expected bool"):
        from_dict(ExperimentConfig, {"loader": {"augment": 1}})
    with pytest.raises(ConfigError, match=r"loader\.batch_size: expected int, got True"):
        from_dict(ExperimentConfig, {"loader": {"batch_size": True}})


def test_literal_choices_are_enforced():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.plot_policy=longst"])
    assert "one of 'longest', 'first', 'all'" in str(err.value)
    assert "did you mean 'longest'" in str(err.value)


def test_range_validation_names_the_key():
    with pytest.raises(ConfigError, match=r"loader\.batch_size: expected a positive number, got 0"):
        load_config(None, ["loader.batch_size=0"])
    with pytest.raises(ConfigError, match=r"shard\.jpeg_quality"):
        load_config(None, ["shard.jpeg_quality=101"])


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"loader: expected a mapping"):
        from_dict(ExperimentConfig, {"loader": 3})


def test_override_parsing():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], "3e-4")  # YAML 1.1 keeps it a string
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=") == (["a"], "")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("loader.batch_size")
    with pytest.raises(ConfigError, match="dotted key"):
        parse_override("loader..batch_size=3")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_float_accepts_exponent_strings_from_yaml():
    from dataclasses import dataclass

    @dataclass
    class Opt:
        lr: float = 1e-3

    assert from_dict(Opt, {"lr": "3e-4"}).lr == pytest.approx(3e-4)
    assert from_dict(Opt, {"lr": 1}).lr == 1.0
    with pytest.raises(ConfigError, match="expected float"):
        from_dict(Opt, {"lr": "fast"})


def test_python_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path, f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    assert not marker.exists()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["loader.batch_size=4", "name=roundtrip"])
    written = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert written.name == "config.yaml"
    assert load_config(written) == cfg
    assert not [p for p in written.parent.iterdir() if p.name.endswith(".tmp")]


def test_every_shipped_config_loads():
    configs = sorted(Path(__file__).resolve().parents[1].glob("configs/**/*.yaml"))
    assert configs, "configs/ holds no YAML"
    for path in configs:
        if path.parent.name == "tune":  # search spaces, not experiment configs
            continue
        load_config(path)


def test_cli_reports_config_errors_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmimdb_dist.cli",
            "shard",
            "--raw",
            str(tmp_path),
            "--out",
            str(tmp_path / "s"),
            "--set",
            "loader.batch_sise=3",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "loader.batch_sise" in lines[0]


# --------------------------------------------------------------------------- composition (base:)


def test_a_config_states_only_what_differs_from_its_base(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        textwrap.dedent("""
        name: parent
        loader: {batch_size: 8, num_workers: 3}
        model:
          name: early_fusion
          image: {kind: cnn, cnn_channels: [4, 8, 8, 8]}
        train: {lr: 0.02, epochs: 3}
    """)
    )
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text(
        "base: ../parent.yaml\nname: child\nloader: {batch_size: 16}\nmodel: {image: {cnn_channels: [2, 2, 2, 2]}}\n"
    )
    cfg = load_config(child, ["train.epochs=5"])
    assert (cfg.name, cfg.loader.batch_size, cfg.loader.num_workers) == ("child", 16, 3)  # sections merge
    assert cfg.model.image.cnn_channels == [2, 2, 2, 2]
    assert cfg.model.image.kind == "cnn"
    assert (cfg.train.lr, cfg.train.epochs) == (0.02, 5)  # --set applies last

    several = tmp_path / "several.yaml"
    (tmp_path / "fast.yaml").write_text("train: {lr: 0.1}\n")
    several.write_text("base: [parent.yaml, fast.yaml]\n")
    assert load_config(several).train.lr == 0.1
    assert load_config(several).name == "parent"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "leads back to itself"),
        ({"a.yaml": "base: a.yaml\n"}, "leads back to itself"),
        ({"a.yaml": "base: missing.yaml\n"}, "does not exist (a base is named relative to"),
        ({"a.yaml": "base: {x: 1}\n"}, "base: expected a config file name or a list"),
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "train: {lr_rate: 1}\n"}, "unknown config key 'train.lr_rate'"),
    ],
)
def test_base_mistakes_are_one_line_naming_the_file(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as error:
        load_config(tmp_path / "a.yaml")
    assert str(tmp_path / "a.yaml") in str(error.value)


def test_shipped_variants_equal_their_parent_but_for_what_they_state():
    """The synth_* configs that name a base: resolved, they are their parent plus their own keys."""
    import yaml

    configs = Path(__file__).resolve().parents[1] / "configs"
    children = [
        path for path in sorted(configs.glob("synth_*.yaml")) if "base" in (yaml.safe_load(path.read_text()) or {})
    ]
    assert len(children) >= 7
    for path in children:
        own = yaml.safe_load(path.read_text())
        parent = load_config(path.parent / own.pop("base"))
        child = load_config(path)

        def walk(a, b, stated, where="", path=path):
            for key in a:
                if isinstance(a[key], dict) and isinstance(stated.get(key), dict):
                    walk(a[key], b[key], stated[key], f"{where}{key}.")
                elif key not in stated:
                    assert a[key] == b[key], (path.name, f"{where}{key}")
                else:
                    assert b[key] == stated[key], (path.name, f"{where}{key}")

        from mmimdb_dist.schema import to_dict

        walk(to_dict(parent), to_dict(child), own)


def test_a_base_or_config_that_is_not_a_regular_file_says_what_it_is(tmp_path):
    """`base: /etc`, a FIFO or `/dev/zero` is named for what it is, at once (a FIFO would block
    the read forever, /dev/zero never end), not reported as missing."""
    import os

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    kinds = (
        ("/etc", "is a folder"),
        (str(fifo), "is a FIFO, not a regular file"),
        ("/dev/zero", "is a device, not a regular file"),
    )
    for base, kind in kinds:
        config = tmp_path / "child.yaml"
        config.write_text(f"base: {base}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(config)
        assert str(caught.value) == (
            f"config file {base}: {kind}; expected a YAML file (e.g. configs/early_fusion.yaml)"
        )


@pytest.mark.parametrize(
    ("key", "inside", "data"),
    [("name", "output_dir", {}), ("name", "storage_path", {"base_config": "x.yaml"})],
)
def test_names_that_become_folders_stay_inside_theirs(key, inside, data):
    """A run's and a search's name become `<output_dir>/<name>`, `<storage_path>/<name>`: one
    check (schema/names.py) keeps both inside and short enough to be created."""
    from mmimdb_dist.schema import SearchConfig

    cls = SearchConfig if inside == "storage_path" else ExperimentConfig
    for bad in ("../../../x", "/abs", "~/x", "a/../b", ""):
        with pytest.raises(ConfigError, match=rf"^{key}: {bad!r}: expected a relative path inside {inside} "):
            from_dict(cls, {**data, key: bad})
    with pytest.raises(ConfigError, match=r"is 300 bytes long; expected at most 255"):
        from_dict(cls, {**data, key: "x" * 300})
    assert getattr(from_dict(cls, {**data, key: "group/run-1"}), key) == "group/run-1"


def test_a_chain_of_thousands_of_base_configs_is_one_line(tmp_path):
    """3,000 configs each naming the next as its base: one line at the depth limit, not a RecursionError."""
    for i in range(3000):
        (tmp_path / f"c{i}.yaml").write_text(f"base: c{i + 1}.yaml\n")
    (tmp_path / "c3000.yaml").write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=r"c32\.yaml: base: more than 32 configs deep \(from .*c0\.yaml\)"):
        load_config(tmp_path / "c0.yaml")
    (tmp_path / "c31.yaml").write_text("seed: 5\n")  # 32 configs deep: within the limit
    assert load_config(tmp_path / "c0.yaml").seed == 5


def test_config_command_prints_the_resolved_config_without_unused_sections(tmp_path, capsys):
    """`mmimdb-dist config` merges base:, applies --set, checks, runs nothing, and leaves out what
    the model never reads; what it prints loads back as the same experiment, and a run saves it."""
    import yaml

    from mmimdb_dist.cli import main
    from mmimdb_dist.schema import dump_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    assert main(["config", "--config", str(configs / "synth_demo_image.yaml"), "--set", "train.lr=0.002"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == 0.002
    assert "text" not in printed["model"]  # an image-only model reads no plot
    assert "image" in printed["model"]
    (tmp_path / "printed.yaml").write_text(yaml.safe_dump(printed))
    again = load_config(tmp_path / "printed.yaml")
    assert again.train.lr == 0.002
    assert dump_config(again) == dump_config(load_config(configs / "synth_demo_image.yaml", ["train.lr=0.002"]))

    text = yaml.safe_load(dump_config(load_config(configs / "synth_demo_text.yaml")))["model"]["text"]
    assert text["kind"] == "bilstm"
    assert "name" not in text  # a BiLSTM run no longer keeps model.text.name: distilbert-base-uncased
    assert "embed_dim" in text
    hf = yaml.safe_load(dump_config(load_config(None, ["model.text.kind=hf", "model.name=text_only"])))["model"]
    assert "image" not in hf
    assert hf["text"]["name"] == "distilbert-base-uncased"
    assert "vocab_min_freq" not in hf["text"]

    assert main(["config", "--config", str(configs / "synth_demo_image.yaml"), "--set", "train.lrr=1"]) == 2
    assert "unknown config key 'train.lrr'; did you mean 'lr'?" in capsys.readouterr().err


def test_a_set_that_replaces_a_section_is_the_one_named():
    """`--set loader=5 --set loader.shards_dir=x` used to blame the second `--set`."""
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["loader=5", "loader.shards_dir=x"])
    assert str(caught.value) == "--set 'loader=5': 'loader' is a section, not a value; set its keys: loader.KEY=VALUE"
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["name=run", "name.part=x"])
    assert str(caught.value) == "--set 'name.part=x': 'name' is a value, not a section (set by --set 'name=run')"
