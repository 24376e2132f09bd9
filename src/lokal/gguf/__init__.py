"""GGUF files without an engine: the random-weight writer, the metadata reader and KV-cache sizing.

The catalog reads and writes GGUF files too (bring-your-own checks, synthetic models), so this lives apart
from the engines that load them."""
