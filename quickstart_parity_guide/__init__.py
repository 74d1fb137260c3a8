"""The study guide: each chapter of the PyTorch basics tutorial next to its JAX twin, with the numbers both
produce. ``python -m quickstart_parity_guide`` writes ``docs/side_by_side.md``, the two-column page and the
notebooks; ``--check`` only compares them with the committed files.

Layout (no module imports one that imports it): ``guide`` (chapters, numbers, markdown) <- ``render``
(HTML page, notebooks) and ``cells`` (the notebooks' ``%%run_in`` magic) <- ``__main__`` (the command).
"""
