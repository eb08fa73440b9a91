"""DCGAN and conditional GAN: configs, builders, image data, the alternating trainer, sampling, evaluation."""
