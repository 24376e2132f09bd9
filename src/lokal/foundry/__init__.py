"""Foundry Local compatibility: code written for Microsoft's Foundry Local runs against lokal unchanged.

Foundry Local's SDK and scripts find the service with the `foundry` command (`foundry service status` prints
its URL), start it with `foundry service start`, then use its REST routes beside the OpenAI API. lokal answers
all three on its own port (5273, Foundry's):

- routes.py: the REST contract (/foundry/list, /openai/status, /openai/load/{id}, /openai/download, ...), a
  server feature (FoundryApi) that reaches the server only through its Services;
- cli.py: the `foundry` console script, Foundry's CLI verbs (service, model, cache) answered by lokal;
- service.py: the background `lokal serve` those verbs start, find and stop (also `lokal service`);
- download_pool.py: the few threads /openai/download runs on.

This module imports nothing: `foundry service status` is polled by the SDK and must start fast.
"""
