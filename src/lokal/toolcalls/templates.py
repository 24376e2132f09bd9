"""lokal's own Jinja chat templates, one per prompt format in the catalog, written from each format's documentation.

They stand in where a model file brings no template, or one that ignores `tools` (Phi-4-mini's GGUF template
expects tools inside the system message; many chatml templates print no tools at all), and the synthetic GGUF
writer embeds them. Every template emits text only through `{{- ... }}` and steers only with `{%- ... %}`,
so the source's own line breaks never reach the prompt and trim_blocks/lstrip_blocks make no difference.

The chatml template renders a conversation without tools exactly as lokal's plain chatml template always has
(the tools branch is an addition), so prompts and token counts of existing models do not move.
"""

from __future__ import annotations

from lokal.toolcalls.harmony_template import HARMONY

# Arguments print as the JSON they are: a mapping through tojson, text (a model's own JSON) as it is.
_ARGS = (
    "{%- if fn['arguments'] is string %}{{- fn['arguments'] }}{%- else %}{{- fn['arguments'] | tojson }}{%- endif %}"
)
_FN = "{%- set fn = call['function'] if call['function'] is defined else call %}"

# Qwen2.5 / Hermes: tools in a system turn inside <tools></tools>, calls as <tool_call> JSON blocks, results
# in a user turn inside <tool_response></tool_response> (consecutive results share the turn).
CHATML = (
    r"""
{%- if tools %}
  {{- '<|im_start|>system\n' }}
  {%- if messages and messages[0]['role'] == 'system' %}{{- messages[0]['content'] ~ '\n\n' }}{%- endif %}
  {{- '# Tools\n\nYou may call one or more functions to help with the request.\n\n' }}
  {{- 'The functions are described inside <tools></tools> XML tags, one JSON signature per line:\n<tools>' }}
  {%- for tool in tools %}{{- '\n' ~ (tool | tojson) }}{%- endfor %}
  {{- '\n</tools>\n\nFor each function call, return a JSON object with the function name and its arguments ' }}
  {{- 'inside <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, ' }}
  {{- '"arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
  {%- if tools and loop.first and message['role'] == 'system' %}
  {%- elif message['role'] == 'assistant' and message['tool_calls'] %}
    {{- '<|im_start|>assistant' }}
    {%- if message['content'] %}{{- '\n' ~ message['content'] }}{%- endif %}
    {%- for call in message['tool_calls'] %}"""
    + _FN
    + r"""
      {{- '\n<tool_call>\n{"name": "' ~ fn['name'] ~ '", "arguments": ' }}"""
    + _ARGS
    + r"""
      {{- '}\n</tool_call>' }}
    {%- endfor %}
    {{- '<|im_end|>\n' }}
  {%- elif message['role'] == 'tool' %}
    {%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
    {{- '\n<tool_response>\n' ~ message['content'] ~ '\n</tool_response>' }}
    {%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
  {%- else %}
    {{- '<|im_start|>' ~ message['role'] ~ '\n' ~ message['content'] ~ '<|im_end|>\n' }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""
).strip()

# Llama 3.1/3.2 JSON tool calling as Meta documents it: the functions go in the first user turn, a call is
# {"name": ..., "parameters": ...} and ends the turn, results come back in "ipython" turns.
LLAMA3 = (
    r"""
{{- bos_token }}
{%- set ns = namespace(first_user=true) %}
{%- for message in messages %}
  {%- if message['role'] == 'assistant' and message['tool_calls'] %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
    {%- for call in message['tool_calls'] %}"""
    + _FN
    + r"""
      {%- if not loop.first %}{{- '; ' }}{%- endif %}
      {{- '{"name": "' ~ fn['name'] ~ '", "parameters": ' }}"""
    + _ARGS
    + r"""
      {{- '}' }}
    {%- endfor %}
    {{- '<|eot_id|>' }}
  {%- elif message['role'] == 'tool' %}
    {{- '<|start_header_id|>ipython<|end_header_id|>\n\n' ~ message['content'] ~ '<|eot_id|>' }}
  {%- elif message['role'] == 'user' and tools and ns.first_user %}
    {%- set ns.first_user = false %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' }}
    {{- 'Given the following functions, please respond with a JSON for a function call with its proper ' }}
    {{- 'arguments that best answers the given prompt.\n\nRespond in the format {"name": function name, ' }}
    {{- '"parameters": dictionary of argument name and its value}. Do not use variables.\n\n' }}
    {%- for tool in tools %}{{- (tool | tojson(indent=4)) ~ '\n\n' }}{%- endfor %}
    {{- message['content'] ~ '<|eot_id|>' }}
  {%- else %}
    {{- '<|start_header_id|>' ~ message['role'] ~ '<|end_header_id|>\n\n' ~ message['content'] ~ '<|eot_id|>' }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}
"""
).strip()

# Mistral v0.3 (v3 tokenizer): [AVAILABLE_TOOLS] before the last user turn, which also carries the system
# prompt; calls as [TOOL_CALLS] and a JSON list; results as [TOOL_RESULTS]. Mistral ids are 9 characters.
MISTRAL = (
    r"""
{{- bos_token }}
{%- set ns = namespace(system='', last_user=-1) %}
{%- for message in messages %}
  {%- if message['role'] == 'system' %}
    {%- set ns.system = (ns.system ~ '\n\n' if ns.system else '') ~ message['content'] %}
  {%- elif message['role'] == 'user' %}{%- set ns.last_user = loop.index0 %}
  {%- endif %}
{%- endfor %}
{%- for message in messages %}
  {%- if message['role'] == 'user' %}
    {%- if loop.index0 == ns.last_user %}
      {%- if tools %}{{- '[AVAILABLE_TOOLS]' ~ (tools | tojson) ~ '[/AVAILABLE_TOOLS]' }}{%- endif %}
      {{- '[INST]' ~ (ns.system ~ '\n\n' if ns.system else '') ~ message['content'] ~ '[/INST]' }}
    {%- else %}{{- '[INST]' ~ message['content'] ~ '[/INST]' }}
    {%- endif %}
  {%- elif message['role'] == 'assistant' and message['tool_calls'] %}
    {{- '[TOOL_CALLS][' }}
    {%- for call in message['tool_calls'] %}"""
    + _FN
    + r"""
      {%- if not loop.first %}{{- ', ' }}{%- endif %}
      {{- '{"name": "' ~ fn['name'] ~ '", "arguments": ' }}"""
    + _ARGS
    + r"""
      {{- ', "id": "' ~ ((call['id'] | string)[-9:]) ~ '"}' }}
    {%- endfor %}
    {{- ']' ~ eos_token }}
  {%- elif message['role'] == 'assistant' %}
    {{- message['content'] ~ eos_token }}
  {%- elif message['role'] == 'tool' %}
    {{- '[TOOL_RESULTS]{"content": ' ~ (message['content'] | tojson) ~ ', "call_id": "' }}
    {{- (message['tool_call_id'] | string)[-9:] ~ '"}[/TOOL_RESULTS]' }}
  {%- endif %}
{%- endfor %}
"""
).strip()

# Phi-4-mini: the function list sits in the system turn between <|tool|> and <|/tool|>; the model calls with
# <|tool_call|>[{"name": ..., "arguments": ...}]<|/tool_call|>; results come back as <|tool_response|> turns.
PHI4 = (
    r"""
{%- macro tool_list() %}
  {{- '<|tool|>[' }}
  {%- for tool in tools %}
    {%- if not loop.first %}{{- ', ' }}{%- endif %}
    {{- (tool['function'] if tool['function'] is defined else tool) | tojson }}
  {%- endfor %}
  {{- ']<|/tool|>' }}
{%- endmacro %}
{%- if tools and not (messages and messages[0]['role'] == 'system') %}
  {{- '<|system|>You are a helpful assistant with some tools.' ~ tool_list() ~ '<|end|>' }}
{%- endif %}
{%- for message in messages %}
  {%- if message['role'] == 'system' %}
    {{- '<|system|>' ~ message['content'] }}
    {%- if tools and loop.first %}{{- tool_list() }}{%- endif %}
    {{- '<|end|>' }}
  {%- elif message['role'] == 'assistant' and message['tool_calls'] %}
    {{- '<|assistant|>' ~ (message['content'] or '') ~ '<|tool_call|>[' }}
    {%- for call in message['tool_calls'] %}"""
    + _FN
    + r"""
      {%- if not loop.first %}{{- ', ' }}{%- endif %}
      {{- '{"name": "' ~ fn['name'] ~ '", "arguments": ' }}"""
    + _ARGS
    + r"""
      {{- '}' }}
    {%- endfor %}
    {{- ']<|/tool_call|><|end|>' }}
  {%- elif message['role'] == 'tool' %}
    {{- '<|tool_response|>' ~ message['content'] ~ '<|end|>' }}
  {%- else %}
    {{- '<|' ~ message['role'] ~ '|>' ~ message['content'] ~ '<|end|>' }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}
"""
).strip()

PHI3 = r"""
{%- for message in messages %}
  {{- '<|' ~ message['role'] ~ '|>\n' ~ message['content'] ~ '<|end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|assistant|>\n' }}{%- endif %}
""".strip()

# Gemma has no system role: a system message opens the first user turn.
GEMMA = r"""
{{- bos_token }}
{%- set ns = namespace(system='') %}
{%- for message in messages %}
  {%- if message['role'] == 'system' %}{%- set ns.system = ns.system ~ message['content'] ~ '\n\n' %}
  {%- else %}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}
    {{- '<start_of_turn>' ~ role ~ '\n' ~ (ns.system if role == 'user' else '') ~ message['content'] }}
    {{- '<end_of_turn>\n' }}
    {%- if role == 'user' %}{%- set ns.system = '' %}{%- endif %}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<start_of_turn>model\n' }}{%- endif %}
""".strip()

DEEPSEEK_CODER = r"""
{{- bos_token }}
{%- for message in messages %}
  {%- if message['role'] == 'system' %}{{- message['content'] ~ '\n' }}
  {%- elif message['role'] == 'user' %}{{- '### Instruction:\n' ~ message['content'] ~ '\n' }}
  {%- else %}{{- '### Response:\n' ~ message['content'] ~ '\n<|EOT|>\n' }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '### Response:\n' }}{%- endif %}
""".strip()

TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
    "llama3": LLAMA3,
    "mistral": MISTRAL,
    "phi4": PHI4,
    "harmony": HARMONY,
    "phi3": PHI3,
    "gemma": GEMMA,
    "deepseek-coder": DEEPSEEK_CODER,
}

# End-of-turn strings per format. Harmony stops at <|call|> too: the call's JSON is complete by then, and the
# tool-call parser reads a call that lost its closing marker. <|end|> is not a harmony stop: it ends the
# analysis message, after which the answer follows.
STOPS: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_end|>",),
    "llama3": ("<|eot_id|>", "<|eom_id|>"),
    "mistral": ("</s>",),
    "phi4": ("<|end|>",),
    "harmony": ("<|return|>", "<|call|>"),
    "phi3": ("<|end|>",),
    "gemma": ("<end_of_turn>",),
    "deepseek-coder": ("<|EOT|>",),
}

# Which templates above print tools; the others' formats have no tool calling.
WITH_TOOLS = frozenset({"chatml", "llama3", "mistral", "phi4", "harmony"})

ALIASES = {
    "hermes": "chatml",
    "qwen": "chatml",
    "qwen2": "chatml",
    "llama-3": "llama3",
    "gpt-oss": "harmony",
    "phi-4": "phi4",
    "phi-3": "phi3",
    "deepseek": "deepseek-coder",
    "deepseekcoder": "deepseek-coder",
}


def prompt_format(name: str | None) -> str | None:
    """The key in TEMPLATES for a catalog chat_template name (or a tool-call family name), None if unknown."""
    if not name:
        return None
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    return key if key in TEMPLATES else None
