"""Runs llama.cpp's converter on one export in a process of its own and adds wedit's keys to the GGUF header.

``python -m editor.pipeline.gguf.driver CONVERTER_DIR KEYS.json EXPORT_DIR OUT.gguf`` writes an f32 GGUF.
Driven from Python, not through its command line, for two reasons: its
``--metadata`` file keeps only known ``general.*`` keys (``wedit.*`` keys are
dropped), and transformers 5 folds legacy config keys such as GPT-NeoX's
``rotary_pct`` into ``rope_parameters``, which the converter (written against
transformers 4.57) then cannot find. Nothing of editor beyond this module is
imported here, so the converter's vendored gguf-py (which it puts first on
``sys.path``) is the ``gguf`` everything uses; the PyPI release lacks what it needs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _keep_raw_config_keys(model_base) -> None:
    """Put config.json's own keys back into the hyper-parameters where AutoConfig dropped or moved them."""
    load = model_base.load_hparams

    def load_hparams(dir_model, is_mistral_format, *args, **kwargs):
        hparams = load(dir_model, is_mistral_format, *args, **kwargs)
        raw = Path(dir_model) / "config.json"
        if not is_mistral_format and raw.is_file() and isinstance(hparams, dict):
            for key, value in json.loads(raw.read_text(encoding="utf-8")).items():
                hparams.setdefault(key, value)
        return hparams

    model_base.load_hparams = staticmethod(load_hparams)


def _add_keys(gguf, keys: dict[str, str]) -> None:
    """general.description replaces what the model card would give; wedit.* keys are added beside the general ones."""
    keys = dict(keys)
    description = keys.pop("general.description", None)
    write_general = gguf.Metadata.set_gguf_meta_model

    def set_gguf_meta_model(self, writer) -> None:
        if description is not None:
            self.description = description
        write_general(self, writer)
        for key, value in keys.items():
            writer.add_string(key, value)  # strings only: llama.cpp's metadata API skips arrays

    gguf.Metadata.set_gguf_meta_model = set_gguf_meta_model


def main(argv: list[str]) -> None:
    converter, keys_file, export_dir, out_file = argv
    sys.path.insert(0, converter)
    import convert_hf_to_gguf  # puts the converter's gguf-py first on sys.path
    import gguf
    from conversion.base import ModelBase

    _keep_raw_config_keys(ModelBase)
    _add_keys(gguf, json.loads(Path(keys_file).read_text(encoding="utf-8")))
    sys.argv = ["convert_hf_to_gguf.py", export_dir, "--outtype", "f32", "--outfile", out_file]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main(sys.argv[1:])
