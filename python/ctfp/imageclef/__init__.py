"""The ImageCLEFmedical GANs task on top of the library: the method table (the paper's Methods
1-4, ctfp's similarity presets and the baselines: :mod:`~ctfp.imageclef.methods`), the runner
(:mod:`~ctfp.imageclef.experiments` for ``run_method``/``run_similarity``,
:mod:`~ctfp.imageclef.scorers` and :mod:`~ctfp.imageclef.runner` for its parts), image ids,
labels files and output names (:mod:`~ctfp.imageclef.layout`), run files and their validator
(:mod:`~ctfp.imageclef.runfile`), the report, plots, the demo's leaky generator and the demo,
and the ``ctfp`` command line (:mod:`~ctfp.imageclef.cli`).

Nothing is imported here: ``import ctfp.imageclef.cli`` stays light so ``ctfp --help`` is fast.
"""
