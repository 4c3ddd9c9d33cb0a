"""OpenAI-compatible provider presets, kept as data.

A preset gives a provider ``type`` its default base URL, the environment
variables its key is read from when Qiao runs without a config file, the model
name patterns routed to it in that mode, and its quirks (protocols.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["PRESETS", "Preset", "WireProtocol"]

WireProtocol = Literal["openai", "anthropic", "gemini"]


@dataclass(frozen=True, slots=True)
class Preset:
    base_url: str
    env_keys: tuple[str, ...] = ()
    protocol: WireProtocol = "openai"
    # Where the provider also speaks Anthropic's Messages API (``protocol: anthropic``).
    anthropic_base_url: str | None = None
    env_base_url: str | None = None
    model_patterns: tuple[str, ...] = ()
    # Quirks ------------------------------------------------------------
    # Assistant turns with tool_calls must carry reasoning_content back
    # (DeepSeek thinking mode 400s otherwise): Qiao remembers and refills it.
    reasoning_passback: bool = False
    # Largest ``n`` the provider accepts (None: no limit known).
    max_n: int | None = None
    # Whether ``stream_options.include_usage`` is understood.
    stream_usage: bool = True
    # Key is optional (local servers).
    key_optional: bool = False


PRESETS: dict[str, Preset] = {
    "anthropic": Preset(
        "https://api.anthropic.com",
        env_keys=("ANTHROPIC_API_KEY",),
        env_base_url="ANTHROPIC_BASE_URL",
        protocol="anthropic",
        model_patterns=("claude-*",),
    ),
    "gemini": Preset(
        "https://generativelanguage.googleapis.com",
        env_keys=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        protocol="gemini",
        model_patterns=("gemini-*", "gemma-*", "text-embedding-004"),
    ),
    "openai": Preset(
        "https://api.openai.com/v1",
        env_keys=("OPENAI_API_KEY",),
        env_base_url="OPENAI_BASE_URL",
        model_patterns=("gpt-*", "o1*", "o3*", "o4*", "chatgpt-*", "text-embedding-*", "omni-*"),
    ),
    "deepseek": Preset(
        "https://api.deepseek.com/v1",
        env_keys=("DEEPSEEK_API_KEY",),
        model_patterns=("deepseek-*",),
        reasoning_passback=True,
        anthropic_base_url="https://api.deepseek.com/anthropic",
    ),
    "qwen": Preset(
        "https://dashscope.aliyuncs.com/compatible-mode/v1",
        env_keys=("DASHSCOPE_API_KEY",),
        model_patterns=("qwen*", "qwq-*", "text-embedding-v*"),
    ),
    "moonshot": Preset(
        "https://api.moonshot.cn/v1",
        env_keys=("MOONSHOT_API_KEY",),
        model_patterns=("moonshot-*", "kimi-*"),
        reasoning_passback=True,
        anthropic_base_url="https://api.moonshot.cn/anthropic",
    ),
    "zhipu": Preset(
        "https://open.bigmodel.cn/api/paas/v4",
        env_keys=("ZHIPUAI_API_KEY", "ZHIPU_API_KEY"),
        model_patterns=("glm-*",),
        anthropic_base_url="https://open.bigmodel.cn/api/anthropic",
    ),
    "doubao": Preset(
        "https://ark.cn-beijing.volces.com/api/v3",
        env_keys=("ARK_API_KEY", "VOLCENGINE_API_KEY"),
        model_patterns=("doubao-*", "ep-*"),
    ),
    "qianfan": Preset(
        "https://qianfan.baidubce.com/v2",
        env_keys=("QIANFAN_API_KEY",),
        model_patterns=("ernie-*",),
    ),
    "minimax": Preset(
        "https://api.minimaxi.com/v1",
        env_keys=("MINIMAX_API_KEY",),
        model_patterns=("MiniMax-*", "minimax-*"),
        max_n=1,
        anthropic_base_url="https://api.minimaxi.com/anthropic",
    ),
    "siliconflow": Preset(
        "https://api.siliconflow.cn/v1",
        env_keys=("SILICONFLOW_API_KEY",),
        model_patterns=("deepseek-ai/*", "Qwen/*", "Pro/*", "THUDM/*", "moonshotai/*"),
        anthropic_base_url="https://api.siliconflow.cn",
    ),
    "openrouter": Preset(
        "https://openrouter.ai/api/v1",
        env_keys=("OPENROUTER_API_KEY",),
    ),
    "groq": Preset(
        "https://api.groq.com/openai/v1",
        env_keys=("GROQ_API_KEY",),
        max_n=1,
    ),
    "mistral": Preset(
        "https://api.mistral.ai/v1",
        env_keys=("MISTRAL_API_KEY",),
        model_patterns=("mistral-*", "magistral-*", "codestral-*", "ministral-*", "pixtral-*"),
    ),
    "xai": Preset(
        "https://api.x.ai/v1",
        env_keys=("XAI_API_KEY",),
        model_patterns=("grok-*",),
    ),
    "together": Preset(
        "https://api.together.xyz/v1",
        env_keys=("TOGETHER_API_KEY",),
    ),
    "ollama": Preset(
        "http://127.0.0.1:11434/v1",
        env_base_url="OLLAMA_BASE_URL",
        key_optional=True,
    ),
    "vllm": Preset(
        "http://127.0.0.1:8000/v1",
        env_base_url="VLLM_BASE_URL",
        key_optional=True,
    ),
}
