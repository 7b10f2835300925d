"""What the book's chapters share, built on the :mod:`influence` library.

The layering is one way: the book uses ``experiments``, which uses ``influence``; nothing in
``influence`` imports from here. One module a job, data flowing once through a section:

- where: :mod:`.devices` (``device="auto"``), :mod:`.data` and :mod:`.transfer_data` (the real
  datasets and the two tasks), :mod:`.text` and :mod:`.lm` (section 4.5's corpus and models),
  :mod:`.tweets` (its tweets normalised), :mod:`.nlp_task` (its two tasks);
- what is trained: :mod:`.models` (Table A), :mod:`.toy` (the theory chapters' float64 problems),
  :mod:`.configs` (the paper's scales, once), :mod:`.paper_numbers` (what the paper reports,
  typed once);
- fit: :mod:`.objectives` (G, F, F + alpha||W - W_bar||^2 and the one proximal objective) and
  :mod:`.fit` (every optimizer: Adam, L-BFGS, Newton, accelerated descent);
  :mod:`.transfer_training` trains both stages, :mod:`.cache` keeps the weights;
- score and validate: :mod:`.scoring` (:mod:`.scale_out` on several processes),
  :mod:`.validation`, :mod:`.evaluation`, :mod:`.removals`, the ladder's rungs
  :mod:`.converged_loo` and :mod:`.proximal_response`, rung 3 against the weight decay
  :mod:`.decay_sweep`, rung 3 with one of its differences from rung 1 changed
  :mod:`.ladder_factors`, the converged, replicated studies of section 4.3
  (:mod:`.similarity_study`) and 4.4 (:mod:`.size_study`), which share
  :mod:`.paired_solves` (every CG iterate from one Lanczos run, :mod:`.krylov`), and 4.5's
  :mod:`.nlp_training`, :mod:`.nlp_scoring`, :mod:`.nlp_check` and :mod:`.nlp_table`;
- record: :mod:`.records` (JSON), :mod:`.store` (a folder of results files, passed in),
  :mod:`.provenance`; :mod:`.pipeline` holds a config, its cache and its store together;
- sections: :mod:`.sec41` ... :mod:`.sec45` orchestrate, and import no other section;
- the methods chapter: :mod:`.methods` (every method as a vector v2, on rung 3's optimum, and
  :mod:`.converged_case2` for Case 2), :mod:`.lissa`, :mod:`.ekfac` (kronfluence's EK-FAC),
  :mod:`.lds` (the linear datamodeling score) and :mod:`.methods_report`;
- read: :mod:`.stats`, :mod:`.diagnostics`, :mod:`.verdicts`, :mod:`.tables`,
  :mod:`.ladder_report`, :mod:`.damping_report`, :mod:`.decay_report`, :mod:`.factors_report`,
  :mod:`.plots`, :mod:`.result_figures`,
  :mod:`.diagrams`.

It needs the ``experiments`` extra: torchvision, numpy, scipy, matplotlib, seaborn, kronfluence.
"""
