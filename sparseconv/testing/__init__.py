"""Shared test machinery: the backend conformance suite (``suite``: its case list and ``run_case``),
the convolution cases and their dense oracles (``conformance``), the kernel-level checks
(``kernel_checks``), the scale tier (``scale``), repeated and recorded kernel calls (``calls``),
thread-count control (``threads``), the tolerance table and error measures (``compare``),
hypothesis strategies (``strategies``)."""
