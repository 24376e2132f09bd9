"""Random-weight ONNX Runtime GenAI models written with numpy and the `onnx` package alone (no torch, no
transformers): the offline demo on the base install and `lokal model synth --format onnx`."""
