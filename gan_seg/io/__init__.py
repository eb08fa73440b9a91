"""Files in and out: atomic writes, shipped presets, model files with metadata, pictures."""
