"""The ImageCLEFmedical GANs task on top of the library: the paper's Methods 1-4 and ctfp's
similarity presets (:mod:`~ctfp.imageclef.experiments`), run files and their validator
(:mod:`~ctfp.imageclef.runfile`), plots, the demo's leaky generator and the demo, and the
``ctfp`` command line (:mod:`~ctfp.imageclef.cli`).

Nothing is imported here: ``import ctfp.imageclef.cli`` stays light so ``ctfp --help`` is fast.
"""
