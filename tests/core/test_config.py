from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from amygdala_daemon.core.config import Config, Method, ModelConfig, Pooling, Preset, from_dict
from amygdala_daemon.core.errors import ConfigError
from amygdala_daemon.core.tool_mapping import PRESETS
from amygdala_daemon.store.config_file import load


def test_every_field_has_a_default_and_a_docstring() -> None:
    import ast
    import inspect

    import amygdala_daemon.core.config as module
    import amygdala_daemon.core.scale_config as sections_at_scale

    parsed = [ast.parse(inspect.getsource(m)) for m in (module, sections_at_scale)]
    tree = ast.Module(body=[node for part in parsed for node in part.body], type_ignores=[])
    documented = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            body = node.body
            for i, item in enumerate(body[:-1]):
                following = body[i + 1]
                if (
                    isinstance(item, ast.AnnAssign)
                    and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                ):
                    assert isinstance(item.target, ast.Name), ast.dump(item)
                    documented.add((node.name, item.target.id))
    sections = [Config] + [
        typing.get_type_hints(Config)[f.name]
        for f in dataclasses.fields(Config)
        if dataclasses.is_dataclass(typing.get_type_hints(Config)[f.name])
    ]
    for section in sections:
        for fld in dataclasses.fields(section):
            assert (
                fld.default is not dataclasses.MISSING
                or fld.default_factory is not dataclasses.MISSING
            )
            if not dataclasses.is_dataclass(typing.get_type_hints(section)[fld.name]):
                assert (section.__name__, fld.name) in documented, f"{section.__name__}.{fld.name}"


def test_empty_config_is_the_embedded_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load(empty) == Config()
    assert load(None).model.name == "smollm2-135m"


def test_values_are_checked_and_coerced() -> None:
    config = from_dict(
        {
            "labels": {"min_positive_score": 7, "max_negative_score": 2},
            "concepts": {"aliases": {"Love": "warmth"}},
        }
    )
    assert config.labels.min_positive_score == 7.0
    assert config.labels.max_negative_score == 2.0
    assert config.concepts.aliases == {"love": "warmth"}
    with pytest.raises(ConfigError, match=r"concepts.aliases.love: '9x' is not a tag name"):
        from_dict({"concepts": {"aliases": {"love": "9x"}}})
    with pytest.raises(ConfigError, match=r"model.threads: expected an integer, got True"):
        from_dict({"model": {"threads": True}})
    with pytest.raises(ConfigError, match=r"daemon: expected a table"):
        from_dict({"daemon": 3})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"model": {"pooling": "max"}},
            "config: model.pooling: 'max' is not one of 'mean', 'last'",
        ),
        (
            {"vectors": {"method": "lda"}},
            "config: vectors.method: 'lda' is not one of "
            "'mean_diff', 'diag_lda', 'shrinkage_lda', 'score_ridge'",
        ),
        (
            {"source": {"preset": "zep"}},
            "config: source.preset: 'zep' is not one of '', 'knowledge-graph'",
        ),
        ({"model": {"device": 0}}, "config: model.device: expected a string, got 0"),
    ],
)
def test_a_choice_key_accepts_its_literal_values_only(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_dict(table)
    assert str(caught.value) == message


def test_choice_keys_are_literals_and_every_preset_has_a_name() -> None:
    hints = typing.get_type_hints(ModelConfig)
    assert hints["pooling"] is Pooling and typing.get_args(Pooling) == ("mean", "last")
    assert typing.get_args(Method) == ("mean_diff", "diag_lda", "shrinkage_lda", "score_ridge")
    assert from_dict({"model": {"pooling": "last"}}).model.pooling == "last"
    assert set(typing.get_args(Preset)) == {"", *PRESETS}
