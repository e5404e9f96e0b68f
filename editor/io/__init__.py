"""Files: safetensors tensors, checkpoints, model sources, atomic writes, manifests, JSONL and figures."""
