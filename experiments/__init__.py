"""What the book's chapters share, built on the :mod:`influence` library.

The layering is one way: the book uses ``experiments``, which uses ``influence``; nothing in
``influence`` imports from here. This package holds the data loaders (:mod:`.data`), the
networks of Table A (:mod:`.models`), training and retraining (:mod:`.train`), the small
float64 problems of the theory chapters (:mod:`.toy`), the paper's configurations and numbers
(:mod:`.configs`), the section-4 pipelines (:mod:`.transfer`, :mod:`.sec41`), statistics
(:mod:`.stats`), figures (:mod:`.plots`) and provenance (:mod:`.provenance`). It needs the
``experiments`` extra: torchvision, numpy, scipy, matplotlib, seaborn.
"""
