"""Running models: loading, generation backends, the OpenAI-compatible client, the vLLM worker."""
