"""Membership: which real images trained the generator, from how close they come to its outputs.

==============  ====================================================================================
``index``       ``GeneratedIndex``: the generated set, indexed for streamed k-NN by closeness
                (pixel / SSIM / embedding features), ``kneighbors`` as in scikit-learn's
                ``NearestNeighbors``; the SSIM pre-filter, query transforms, ``save``/``load``
``knn``         the one blocked L2 search: fast matrix-product candidates, exact values
                (``TopK``, ``nearest_neighbours``, ``FeatureSearch`` with FAISS)
``store``       saved indexes: ``content_hash``, index files, ``fit_or_load``,
                ``StaleIndexError``
``similarity``  ``SimilarityMembership``, the scikit-learn estimator on top of the index
                (statistics, calibration against non-members, decision rules); ``evaluate_split``
``baselines``   the published methods, plainly: ``GANLeaks`` (nearest-sample L2, k = 1) and
                ``VCMISSIM`` (the 2023 winner's SSIM with its real-real ``threshold_max``)
``fused``       ``FusedMembership``: several similarity scores combined by a model of the
                development labels fitted on out-of-fold scores
``leaktest``    ``run_leak_test``: does the generator leak at all? (a permutation test of
                exact level that reruns whatever uses the labels, a no-generator control);
                ``family_verdict``: one Holm verdict for several methods
``estimators``  ``make_estimator``: the estimators above from plain settings dicts (presets)
``decision``    decision rules from scores to labels; ``best_threshold``, the one calibration
``metrics``     accuracy, precision, recall, F1, kappa, ROC-AUC; result tables
==============  ====================================================================================

Images are read by :mod:`ctfp.data.images` (``load_images``, ``ssim_matrix``), re-exported by
``index`` for older imports.

Nothing is imported here: import the modules (``from ctfp.membership.similarity import
SimilarityMembership``); ``ctfp.SimilarityMembership`` and ``ctfp.ssim_matrix`` load on first use.
"""
