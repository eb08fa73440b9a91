"""gan-seg: DCGAN / CGAN generative models and QuickNAT brain MRI segmentation on Keras 3.

Importing this package is cheap: TensorFlow and Keras load only when a model or trainer module is used.
"""

__version__ = "0.1.0"
