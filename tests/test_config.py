from __future__ import annotations

import pytest

from qiao.config import ConfigError, from_env, loads

EXAMPLE = """\
listen: 127.0.0.1:8080
admin_key: ${QIAO_ADMIN_KEY}
providers:
  openai:
    type: openai
    base_url: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY}
  deepseek:
    type: deepseek          # an OpenAI-compatible preset: base_url comes from the preset
    api_key: ${DEEPSEEK_API_KEY}
models:
  gpt-4o-mini:
    - provider: openai
      model: gpt-4o-mini
  deepseek-chat:
    - provider: deepseek
      model: deepseek-chat
keys:
  - name: demo
    key: ${QIAO_DEMO_KEY}
    models: ["*"]
"""
ENV = {
    "QIAO_ADMIN_KEY": "admin-secret-1234",
    "OPENAI_API_KEY": "sk-openai-test",
    "DEEPSEEK_API_KEY": "sk-deepseek-test",
    "QIAO_DEMO_KEY": "demo-secret-1234",
}


def test_issue_example_is_accepted_as_written() -> None:
    cfg = loads(EXAMPLE, source="qiao.yaml", env=ENV)
    assert cfg.host == "127.0.0.1" and cfg.port == 8080
    assert cfg.providers["deepseek"].resolved_base_url == "https://api.deepseek.com/v1"
    assert cfg.providers["openai"].api_key is not None
    assert cfg.providers["openai"].api_key.get_secret_value() == "sk-openai-test"
    assert cfg.models["deepseek-chat"][0].provider == "deepseek"
    assert cfg.keys[0].key.get_secret_value() == "demo-secret-1234"


def test_secrets_do_not_show_in_repr() -> None:
    cfg = loads(EXAMPLE, env=ENV)
    assert "sk-openai-test" not in repr(cfg)
    assert "demo-secret-1234" not in str(cfg.model_dump())


def test_unknown_key_names_file_line_and_key() -> None:
    text = EXAMPLE.replace("    api_key: ${DEEPSEEK_API_KEY}", "    api_kye: ${DEEPSEEK_API_KEY}")
    with pytest.raises(ConfigError) as exc:
        loads(text, source="qiao.yaml", env=ENV)
    assert "qiao.yaml:10: providers.deepseek.api_kye: unknown key" in str(exc.value)


def test_missing_env_var_names_line_and_variable() -> None:
    env = {k: v for k, v in ENV.items() if k != "OPENAI_API_KEY"}
    with pytest.raises(ConfigError) as exc:
        loads(EXAMPLE, source="qiao.yaml", env=env)
    assert "qiao.yaml:7: providers.openai.api_key" in str(exc.value)
    assert "OPENAI_API_KEY" in str(exc.value)


def test_env_default_and_escape() -> None:
    text = "listen: ${LISTEN:-127.0.0.1:9999}\nproviders:\n  m: {type: mock, headers: {x: a$$b}}\n"
    cfg = loads(text, env={})
    assert cfg.port == 9999
    assert cfg.providers["m"].headers == {"x": "a$b"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("listen: nope", "listen"),
        ("providers:\n  x: {type: nosuch}", "unknown provider type"),
        ("providers:\n  x: {type: openai}", "needs api_key"),
        ("providers:\n  x: {type: azure, api_key: k}", "needs base_url"),
        ("providers:\n  x: {type: openai, api_key: k, base_url: 'ftp://x'}", "base_url"),
        ("models:\n  a: [{provider: ghost}]", "unknown provider 'ghost'"),
        ("keys:\n  - {name: a, key: short}", "at least 8"),
        (
            "keys:\n  - {name: a, key: aaaaaaaaaa}\n  - {name: a, key: bbbbbbbbbb}",
            "duplicate key name",
        ),
        ("keys:\n  - {name: a, key: aaaaaaaaaa}\n  - {name: b, key: aaaaaaaaaa}", "reuses"),
        ("a: 1\na: 2", "duplicate key 'a'"),
        ("- just\n- a list", "mapping"),
        ("providers: [", "not valid YAML"),
        ("providers:\n  m:\n    type: mock\n    timeouts: {connect: -1}", "timeouts.connect"),
    ],
)
def test_invalid_configs_are_rejected(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        loads(text, source="c.yaml", env={})
    assert fragment in str(exc.value)


def test_yaml_tags_cannot_construct_objects() -> None:
    with pytest.raises(ConfigError):
        loads("listen: !!python/object/apply:os.system ['true']", env={})


def test_single_target_shorthand() -> None:
    cfg = loads("providers:\n  m: {type: mock}\nmodels:\n  a: {provider: m, model: b}\n", env={})
    assert cfg.models["a"][0].model == "b"


def test_from_env_configures_presets() -> None:
    cfg = from_env(
        {
            "OPENAI_API_KEY": "sk-o",
            "DEEPSEEK_API_KEY": "sk-d",
            "QIAO_API_KEY": "k" * 12,
            "ZHIPUAI_API_KEY": "z.k",
            "OLLAMA_BASE_URL": "http://127.0.0.1:11434",
        }
    )
    assert set(cfg.providers) == {"openai", "deepseek", "zhipu", "ollama"}
    assert cfg.providers["zhipu"].resolved_base_url == "https://open.bigmodel.cn/api/paas/v4"
    assert cfg.providers["ollama"].resolved_base_url == "http://127.0.0.1:11434/v1"
    assert cfg.models["deepseek-*"][0].provider == "deepseek"
    assert cfg.keys[0].name == "default"


def test_from_env_without_keys_has_no_providers() -> None:
    assert from_env({}).providers == {}
