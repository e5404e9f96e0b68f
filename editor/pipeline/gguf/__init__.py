"""GGUF for llama.cpp and Ollama: llama.cpp's own converter and quantizer run on an export, and the proof in llama.cpp.

Kept free of imports: ``driver`` runs in a process of its own where the
converter's vendored gguf-py must be the first ``gguf`` imported.
"""
