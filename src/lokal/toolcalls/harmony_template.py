"""lokal's Jinja template for OpenAI's harmony format (gpt-oss), written from the harmony documentation.

Functions are described to the model as a TypeScript namespace in the developer message; a call is a
commentary message addressed `to=functions.NAME` with JSON content, and its result comes back as a message
from `functions.NAME` to the assistant. Earlier answers are replayed on the final channel.
"""

from __future__ import annotations

HARMONY = r"""
{%- macro ts(s) %}
  {%- if s is not mapping %}{{- 'any' }}
  {%- elif s['enum'] is defined %}{{- s['enum'] | map('tojson') | join(' | ') }}
  {%- elif s['const'] is defined %}{{- s['const'] | tojson }}
  {%- elif s['anyOf'] is defined or s['oneOf'] is defined %}
    {%- for alt in (s['anyOf'] if s['anyOf'] is defined else s['oneOf']) %}
      {%- if not loop.first %}{{- ' | ' }}{%- endif %}{{- ts(alt) }}
    {%- endfor %}
  {%- elif s['type'] is defined and s['type'] is not string %}
    {%- for t in s['type'] %}{%- if not loop.first %}{{- ' | ' }}{%- endif %}{{- ts({'type': t}) }}{%- endfor %}
  {%- elif s['type'] == 'object' or s['properties'] is defined %}
    {%- if s['properties'] is defined and s['properties'] %}
      {{- '{\n' }}
      {%- for key, value in s['properties'].items() %}
        {%- if value is mapping and value['description'] is defined %}
          {{- '// ' ~ value['description'] ~ '\n' }}
        {%- endif %}
        {{- key ~ ('' if s['required'] is defined and key in s['required'] else '?') ~ ': ' ~ ts(value) ~ ',\n' }}
      {%- endfor %}
      {{- '}' }}
    {%- else %}{{- 'object' }}
    {%- endif %}
  {%- elif s['type'] == 'array' %}
    {{- 'Array<' ~ (ts(s['items']) if s['items'] is defined else 'any') ~ '>' }}
  {%- elif s['type'] in ('integer', 'number') %}{{- 'number' }}
  {%- elif s['type'] in ('string', 'boolean', 'null') %}{{- s['type'] }}
  {%- else %}{{- 'any' }}
  {%- endif %}
{%- endmacro %}
{%- set ns = namespace(system='') %}
{%- for message in messages %}
  {%- if message['role'] in ('system', 'developer') %}
    {%- set ns.system = (ns.system ~ '\n\n' if ns.system else '') ~ message['content'] %}
  {%- endif %}
{%- endfor %}
{{- '<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n' }}
{{- 'Knowledge cutoff: 2024-06\nCurrent date: ' ~ strftime_now('%Y-%m-%d') ~ '\n\nReasoning: medium\n\n' }}
{{- '# Valid channels: analysis, commentary, final. Channel must be included for every message.' }}
{%- if tools %}{{- "\nCalls to these tools must go to the commentary channel: 'functions'." }}{%- endif %}
{{- '<|end|>' }}
{%- if ns.system or tools %}
  {{- '<|start|>developer<|message|>' }}
  {%- if ns.system %}{{- '# Instructions\n\n' ~ ns.system }}{%- if tools %}{{- '\n\n' }}{%- endif %}{%- endif %}
  {%- if tools %}
    {{- '# Tools\n\n## functions\n\nnamespace functions {\n\n' }}
    {%- for tool in tools %}
      {%- set fn = tool['function'] if tool['function'] is defined else tool %}
      {%- if fn['description'] is defined %}{{- '// ' ~ fn['description'] ~ '\n' }}{%- endif %}
      {%- set params = fn['parameters'] if fn['parameters'] is defined else {} %}
      {%- if params is mapping and params['properties'] is defined and params['properties'] %}
        {{- 'type ' ~ fn['name'] ~ ' = (_: ' ~ ts(params) ~ ') => any;\n\n' }}
      {%- else %}
        {{- 'type ' ~ fn['name'] ~ ' = () => any;\n\n' }}
      {%- endif %}
    {%- endfor %}
    {{- '} // namespace functions' }}
  {%- endif %}
  {{- '<|end|>' }}
{%- endif %}
{%- for message in messages %}
  {%- if message['role'] == 'user' %}
    {{- '<|start|>user<|message|>' ~ message['content'] ~ '<|end|>' }}
  {%- elif message['role'] == 'assistant' %}
    {%- if message['content'] %}
      {{- '<|start|>assistant<|channel|>final<|message|>' ~ message['content'] ~ '<|end|>' }}
    {%- endif %}
    {%- for call in message['tool_calls'] or [] %}
      {%- set fn = call['function'] if call['function'] is defined else call %}
      {{- '<|start|>assistant<|channel|>commentary to=functions.' ~ fn['name'] ~ ' <|constrain|>json<|message|>' }}
      {%- if fn['arguments'] is string %}{{- fn['arguments'] }}{%- else %}{{- fn['arguments'] | tojson }}{%- endif %}
      {{- '<|call|>' }}
    {%- endfor %}
  {%- elif message['role'] == 'tool' %}
    {%- set found = namespace(name=message['name'] if message['name'] else '') %}
    {%- if not found.name %}
      {%- for earlier in messages %}
        {%- for call in earlier['tool_calls'] or [] %}
          {%- if call['id'] == message['tool_call_id'] %}
            {%- set found.name = call['function']['name'] if call['function'] is defined else call['name'] %}
          {%- endif %}
        {%- endfor %}
      {%- endfor %}
    {%- endif %}
    {{- '<|start|>functions.' ~ found.name ~ ' to=assistant<|channel|>commentary<|message|>' }}
    {{- message['content'] ~ '<|end|>' }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start|>assistant' }}{%- endif %}
""".strip()
