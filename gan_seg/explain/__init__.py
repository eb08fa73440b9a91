"""Seeing inside the networks: occlusion sensitivity (Zeiler & Fergus 2014) and intermediate feature maps.

- :mod:`gan_seg.explain.occlusion`: slide a square occluder over an image, one network call per position
  (batched), and record how much the target score drops; the score comes from :mod:`~.targets`
  (classifier class probability, discriminator's P(real), a brain structure's summed probability).
- :mod:`gan_seg.explain.features`: a layer's outputs for an input, and the table of layer names.
- :mod:`gan_seg.explain.render`: the heatmap and feature-map pictures (Pillow).
- :mod:`gan_seg.explain.subjects`: what the CLI inspects: ``--model`` and INPUT resolved into a network and
  its input array (an image fitted to the network, a conformed brain slice, a latent draw).

Everything takes and returns NumPy arrays and runs on any Keras backend.
"""
