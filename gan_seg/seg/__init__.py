"""QuickNAT brain MRI segmentation: config, layers, blocks, builders, losses, volumes, training, inference."""
