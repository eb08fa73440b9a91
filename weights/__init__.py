"""Pretrained models shipped with gan-seg: one folder per preset (``gan-seg models`` lists them)."""
