"""Images in: the Python face of the Rust pipeline and the data it reads.

- :mod:`~ctfp.data.preprocess`: ``decode_png``, ``transform``, ``load_batch``, ``Augment``
  (thin, checked wrappers over ``ctfp._core``)
- :mod:`~ctfp.data.images`: ``load_images`` (any images as one uint8 grey stack) and
  ``ssim_matrix`` (SSIM between two stacks, Rust kernel; no scikit-learn)
- :mod:`~ctfp.data.stream`: ``BatchStream``, epochs of prefetched batches
- :mod:`~ctfp.data.datasets`: the ImageCLEF folder layouts (2023-2025) and image scans
- :mod:`~ctfp.data.expansion`: the paper's 50x training set as per-sample augmentation
- :mod:`~ctfp.data.synthetic`: synthetic CT-like slices

The public names are re-exported from ``ctfp`` itself (``ctfp.load_batch``, ...); import the
modules here for the rest.
"""
